using System.Buffers.Binary;

namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// SentencePiece's normalizer (normalizer.cc, 0.1.97), over UTF-8 bytes:
/// at each position, a user-defined piece is copied verbatim; otherwise the longest rule of the
/// precompiled charsmap replaces its source; otherwise one UTF-8 character is copied (a malformed byte
/// becomes U+FFFD). Around that: leading/trailing/duplicate space removal, the dummy prefix, and
/// ' ' → U+2581.
/// </summary>
internal sealed class SentencePieceNormalizer
{
    private static readonly byte[] SpaceSymbol = [0xE2, 0x96, 0x81]; // U+2581
    private static readonly byte[] ReplacementChar = [0xEF, 0xBF, 0xBD]; // U+FFFD
    private static readonly byte[] Space = [0x20];

    private readonly SentencePieceNormalizerSpec _spec;
    private readonly bool _treatWhitespaceAsSuffix;
    private readonly ByteTrie? _userDefined;
    private readonly uint[]? _darts;      // double-array units of the charsmap trie
    private readonly byte[] _replacements = []; // NUL-terminated replacement strings, indexed by trie value

    public SentencePieceNormalizer(SentencePieceNormalizerSpec spec, bool treatWhitespaceAsSuffix, ByteTrie? userDefined, string source)
    {
        _spec = spec;
        _treatWhitespaceAsSuffix = treatWhitespaceAsSuffix;
        _userDefined = userDefined is { Count: > 0 } ? userDefined : null;
        var blob = spec.PrecompiledCharsmap.Span;
        if (blob.IsEmpty) return;
        // <trie size: uint32 LE><double array: trie size bytes><replacement strings>
        if (blob.Length <= 4) throw new InvalidDataException($"{source}: precompiled_charsmap of {blob.Length} bytes is broken");
        uint trieSize = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieSize >= (uint)blob.Length || trieSize % 4 != 0 || trieSize + 4 > (uint)blob.Length)
            throw new InvalidDataException($"{source}: precompiled_charsmap trie size {trieSize} does not fit its {blob.Length}-byte blob");
        _darts = new uint[trieSize / 4];
        for (int i = 0; i < _darts.Length; i++) _darts[i] = BinaryPrimitives.ReadUInt32LittleEndian(blob.Slice(4 + 4 * i));
        _replacements = blob[(4 + (int)trieSize)..].ToArray();
    }

    /// <summary>Normalizes UTF-8 <paramref name="input"/> into <paramref name="output"/> (cleared first).</summary>
    public void Normalize(ReadOnlySpan<byte> input, List<byte> output)
    {
        output.Clear();
        if (input.IsEmpty) return;

        if (_spec.RemoveExtraWhitespaces)
        {
            // Leading whitespace: anything that normalizes to exactly " ".
            while (!input.IsEmpty)
            {
                var rep = NormalizePrefix(input, out int consumed);
                if (!rep.SequenceEqual(Space)) break;
                input = input[consumed..];
            }
        }
        if (input.IsEmpty) return;

        if (!_treatWhitespaceAsSuffix && _spec.AddDummyPrefix) AddWhitespace(output);

        bool isPrevSpace = _spec.RemoveExtraWhitespaces;
        while (!input.IsEmpty)
        {
            var sp = NormalizePrefix(input, out int consumed);
            // Heading spaces of this chunk go when the previous chunk ended with one (collapsing runs).
            while (isPrevSpace && !sp.IsEmpty && sp[0] == (byte)' ') sp = sp[1..];
            if (!sp.IsEmpty)
            {
                foreach (byte b in sp)
                {
                    if (_spec.EscapeWhitespaces && b == (byte)' ') output.AddRange(SpaceSymbol);
                    else output.Add(b);
                }
                isPrevSpace = sp[^1] == (byte)' ';
            }
            input = input[consumed..];
            if (!_spec.RemoveExtraWhitespaces) isPrevSpace = false;
        }

        if (_spec.RemoveExtraWhitespaces)
        {
            ReadOnlySpan<byte> space = _spec.EscapeWhitespaces ? SpaceSymbol : Space;
            while (EndsWith(output, space)) output.RemoveRange(output.Count - space.Length, space.Length);
        }

        if (_treatWhitespaceAsSuffix && _spec.AddDummyPrefix) AddWhitespace(output);
    }

    private void AddWhitespace(List<byte> output)
    {
        if (_spec.EscapeWhitespaces) output.AddRange(SpaceSymbol);
        else output.Add((byte)' ');
    }

    private static bool EndsWith(List<byte> s, ReadOnlySpan<byte> suffix)
    {
        if (s.Count < suffix.Length) return false;
        for (int i = 0; i < suffix.Length; i++)
            if (s[s.Count - suffix.Length + i] != suffix[i]) return false;
        return true;
    }

    /// <summary>The normalized form of the longest matching prefix and the number of input bytes it consumes.</summary>
    private ReadOnlySpan<byte> NormalizePrefix(ReadOnlySpan<byte> input, out int consumed)
    {
        if (_userDefined is not null)
        {
            int n = _userDefined.LongestPrefix(input);
            if (n > 0) { consumed = n; return input[..n]; }
        }

        if (_darts is not null)
        {
            var (length, value) = LongestRule(input);
            if (length > 0)
            {
                consumed = length;
                if ((uint)value >= (uint)_replacements.Length) return ReadOnlySpan<byte>.Empty;
                var rest = _replacements.AsSpan(value);
                int nul = rest.IndexOf((byte)0);
                return nul < 0 ? rest : rest[..nul];
            }
        }

        bool valid = Utf8Util.IsValidDecode(input, out consumed);
        return valid ? input[..consumed] : ReplacementChar;
    }

    // Darts-clone unit accessors (darts.h): has_leaf = bit 8, value = low 31 bits,
    // label = bit 31 | low byte, offset = bits 10.. shifted left by 8 when bit 9 is set.
    private static bool HasLeaf(uint u) => ((u >> 8) & 1) == 1;
    private static int Value(uint u) => (int)(u & 0x7FFFFFFFu);
    private static uint Label(uint u) => u & 0x800000FFu;
    private static uint Offset(uint u) => (u >> 10) << (int)((u & (1u << 9)) >> 6);

    /// <summary>Darts commonPrefixSearch, keeping the longest hit (normalizer.cc keeps the first of equal lengths; lengths are unique).</summary>
    private (int Length, int Value) LongestRule(ReadOnlySpan<byte> key)
    {
        var a = _darts!;
        int bestLen = 0, bestValue = 0;
        if (a.Length == 0) return (0, 0);
        uint pos = Offset(a[0]);
        for (int i = 0; i < key.Length; i++)
        {
            pos ^= key[i];
            if (pos >= (uint)a.Length) break;
            uint unit = a[pos];
            if (Label(unit) != key[i]) break;
            pos ^= Offset(unit);
            if (HasLeaf(unit))
            {
                if (pos >= (uint)a.Length) break;
                bestLen = i + 1;
                bestValue = Value(a[pos]);
            }
        }
        return (bestLen, bestValue);
    }
}

/// <summary>UTF-8 helpers with SentencePiece's exact semantics (util.h / util.cc).</summary>
internal static class Utf8Util
{
    /// <summary>string_util::OneCharLen: length from the lead byte's high nibble, without validation.</summary>
    public static int OneCharLen(byte lead) => (lead >> 4) switch { < 12 => 1, 12 or 13 => 2, 14 => 3, _ => 4 };

    /// <summary>
    /// string_util::IsValidDecodeUTF8: true when the prefix is a well-formed UTF-8 character (no overlongs,
    /// no surrogates, ≤ U+10FFFF); <paramref name="mblen"/> is its length, or 1 when malformed.
    /// </summary>
    public static bool IsValidDecode(ReadOnlySpan<byte> s, out int mblen)
    {
        mblen = 1;
        if (s.IsEmpty) return false;
        byte b0 = s[0];
        if (b0 < 0x80) return true;
        static bool Trail(byte b) => (b & 0xC0) == 0x80;
        static bool ValidCp(int c) => c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
        if (s.Length >= 2 && (b0 & 0xE0) == 0xC0)
        {
            int cp = ((b0 & 0x1F) << 6) | (s[1] & 0x3F);
            if (Trail(s[1]) && cp >= 0x80 && ValidCp(cp)) { mblen = 2; return true; }
        }
        else if (s.Length >= 3 && (b0 & 0xF0) == 0xE0)
        {
            int cp = ((b0 & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
            if (Trail(s[1]) && Trail(s[2]) && cp >= 0x800 && ValidCp(cp)) { mblen = 3; return true; }
        }
        else if (s.Length >= 4 && (b0 & 0xF8) == 0xF0)
        {
            int cp = ((b0 & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
            if (Trail(s[1]) && Trail(s[2]) && Trail(s[3]) && cp >= 0x10000 && ValidCp(cp)) { mblen = 4; return true; }
        }
        return false;
    }
}
