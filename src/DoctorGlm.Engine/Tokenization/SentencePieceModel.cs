using System.Text;

namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// A SentencePiece model (<c>.model</c> = ModelProto) with encoding and decoding that reproduce
/// sentencepiece 0.1.97 (<c>spm_encode</c> / <c>spm_decode</c>) exactly: the precompiled-charsmap normalizer,
/// unigram (Viterbi) and BPE segmentation, user-defined pieces, merged unknowns and byte fallback.
/// Read with a hand-written protobuf reader; a malformed file throws <see cref="InvalidDataException"/>
/// naming the file and the byte offset. Immutable and thread-safe after loading.
/// </summary>
public sealed class SentencePieceModel
{
    private const string SpaceSymbol = "\u2581";

    private readonly SentencePieceEntry[] _pieces;
    private readonly Dictionary<string, int> _reserved = new(StringComparer.Ordinal); // CONTROL, UNKNOWN, BYTE
    private readonly ByteTrie _trie = new();          // NORMAL, USER_DEFINED, UNUSED
    private readonly ByteTrie _userDefined = new();
    private readonly int[] _byteIds = new int[256];
    private readonly SentencePieceNormalizer _normalizer;
    private readonly SentencePieceNormalizer? _denormalizer;
    private readonly UnigramEncoder? _unigram;
    private readonly BpeEncoder? _bpe;

    private SentencePieceModel(string source, SentencePieceEntry[] pieces, SentencePieceTrainerSpec trainer,
        SentencePieceNormalizerSpec normalizer, SentencePieceNormalizerSpec? denormalizer)
    {
        Source = source;
        _pieces = pieces;
        TrainerSpec = trainer;
        NormalizerSpec = normalizer;
        DenormalizerSpec = denormalizer;

        // ModelInterface::InitializePieces.
        int unk = -1;
        for (int i = 0; i < pieces.Length; i++)
        {
            var p = pieces[i];
            if (p.Piece.Length == 0) throw new InvalidDataException($"{source}: piece {i} is empty");
            bool normal = p.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused;
            bool added = normal ? _trie.Add(Encoding.UTF8.GetBytes(p.Piece), i) && !_reserved.ContainsKey(p.Piece)
                                : _trie.Find(Encoding.UTF8.GetBytes(p.Piece)) < 0 && _reserved.TryAdd(p.Piece, i);
            if (!added) throw new InvalidDataException($"{source}: piece {i} \"{p.Piece}\" is already defined");
            if (p.Type == SentencePieceType.UserDefined) _userDefined.Add(Encoding.UTF8.GetBytes(p.Piece), i);
            if (p.Type == SentencePieceType.Unknown)
            {
                if (unk >= 0) throw new InvalidDataException($"{source}: unknown piece defined twice (ids {unk} and {i})");
                unk = i;
            }
            if (p.Type == SentencePieceType.Byte)
            {
                if (!trainer.ByteFallback) throw new InvalidDataException($"{source}: byte piece {i} \"{p.Piece}\" but trainer_spec.byte_fallback is false");
                if (PieceToByte(p.Piece) < 0) throw new InvalidDataException($"{source}: byte piece {i} \"{p.Piece}\" is not of the form <0xHH>");
            }
        }
        if (unk < 0) throw new InvalidDataException($"{source}: the model defines no unknown piece");
        UnkId = unk;
        for (int b = 0; b < 256; b++) _byteIds[b] = PieceToId(ByteToPiece((byte)b));

        _normalizer = new SentencePieceNormalizer(normalizer, trainer.TreatWhitespaceAsSuffix, _userDefined, source);
        if (denormalizer is { PrecompiledCharsmap.IsEmpty: false })
            _denormalizer = new SentencePieceNormalizer(denormalizer, false, null, source);

        switch (trainer.ModelType)
        {
            case SentencePieceModelType.Unigram: _unigram = new UnigramEncoder(_trie, pieces, unk); break;
            case SentencePieceModelType.Bpe: _bpe = new BpeEncoder(_trie, _userDefined, pieces, PieceToId); break;
            default: throw new NotSupportedException($"{source}: model_type {trainer.ModelType} is not supported (only unigram and BPE)");
        }
    }

    /// <summary>Where the model came from (file path or the name given to <see cref="Parse"/>), used in messages.</summary>
    public string Source { get; }

    /// <summary>The vocabulary, by id.</summary>
    public IReadOnlyList<SentencePieceEntry> Pieces => _pieces;

    /// <summary>Vocabulary size.</summary>
    public int Count => _pieces.Length;

    /// <summary>Trainer settings stored in the file.</summary>
    public SentencePieceTrainerSpec TrainerSpec { get; }

    /// <summary>Normalizer settings stored in the file.</summary>
    public SentencePieceNormalizerSpec NormalizerSpec { get; }

    /// <summary>Denormalizer settings (applied to decoded text when it has rules), or null when absent.</summary>
    public SentencePieceNormalizerSpec? DenormalizerSpec { get; }

    /// <summary>Id of the unknown piece.</summary>
    public int UnkId { get; }

    /// <summary>Reads a <c>.model</c> file.</summary>
    public static SentencePieceModel Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses a serialized ModelProto; <paramref name="sourceName"/> names it in error messages.</summary>
    public static SentencePieceModel Parse(ReadOnlySpan<byte> data, string sourceName)
    {
        var pieces = new List<SentencePieceEntry>();
        SentencePieceTrainerSpec? trainer = null;
        SentencePieceNormalizerSpec? normalizer = null, denormalizer = null;
        var r = new ProtoReader(data, sourceName, 0, "ModelProto");
        while (!r.End)
        {
            var (field, wire) = r.ReadKey();
            switch (field)
            {
                case 1:
                    r.Expect(field, wire, 2);
                    pieces.Add(ParsePiece(r.ReadBytes(out int po), sourceName, po, pieces.Count));
                    break;
                case 2:
                    r.Expect(field, wire, 2);
                    trainer = ParseTrainer(r.ReadBytes(out int to), sourceName, to);
                    break;
                case 3:
                case 5:
                    r.Expect(field, wire, 2);
                    var spec = ParseNormalizer(r.ReadBytes(out int no), sourceName, no, field == 3 ? "normalizer_spec" : "denormalizer_spec");
                    if (field == 3) normalizer = spec; else denormalizer = spec;
                    break;
                default:
                    r.Skip(field, wire);
                    break;
            }
        }
        return new SentencePieceModel(sourceName, pieces.ToArray(), trainer ?? new SentencePieceTrainerSpec(),
            normalizer ?? new SentencePieceNormalizerSpec(), denormalizer);
    }

    private static SentencePieceEntry ParsePiece(ReadOnlySpan<byte> data, string source, int offset, int index)
    {
        var r = new ProtoReader(data, source, offset, $"pieces[{index}]");
        string piece = "";
        float score = 0;
        var type = SentencePieceType.Normal;
        while (!r.End)
        {
            var (field, wire) = r.ReadKey();
            switch (field)
            {
                case 1: r.Expect(field, wire, 2); piece = r.ReadString(); break;
                case 2: r.Expect(field, wire, 5); score = r.ReadFloat(); break;
                case 3:
                    r.Expect(field, wire, 0);
                    int t = r.ReadInt32();
                    if (t is < 1 or > 6) throw r.Error($"piece type {t} is not one of NORMAL..BYTE (1..6)");
                    type = (SentencePieceType)t;
                    break;
                default: r.Skip(field, wire); break;
            }
        }
        return new SentencePieceEntry(piece, score, type);
    }

    private static SentencePieceTrainerSpec ParseTrainer(ReadOnlySpan<byte> data, string source, int offset)
    {
        var r = new ProtoReader(data, source, offset, "trainer_spec");
        var d = new SentencePieceTrainerSpec();
        var modelType = d.ModelType;
        int vocab = d.VocabSize, unk = d.UnkId, bos = d.BosId, eos = d.EosId, pad = d.PadId;
        bool byteFallback = d.ByteFallback, suffix = d.TreatWhitespaceAsSuffix;
        string unkPiece = d.UnkPiece, bosPiece = d.BosPiece, eosPiece = d.EosPiece, padPiece = d.PadPiece, unkSurface = d.UnkSurface;
        while (!r.End)
        {
            var (field, wire) = r.ReadKey();
            switch (field)
            {
                case 3:
                    r.Expect(field, wire, 0);
                    int mt = r.ReadInt32();
                    if (mt is < 1 or > 4) throw r.Error($"model_type {mt} is not one of UNIGRAM..CHAR (1..4)");
                    modelType = (SentencePieceModelType)mt;
                    break;
                case 4: r.Expect(field, wire, 0); vocab = r.ReadInt32(); break;
                case 24: r.Expect(field, wire, 0); suffix = r.ReadBool(); break;
                case 35: r.Expect(field, wire, 0); byteFallback = r.ReadBool(); break;
                case 40: r.Expect(field, wire, 0); unk = r.ReadInt32(); break;
                case 41: r.Expect(field, wire, 0); bos = r.ReadInt32(); break;
                case 42: r.Expect(field, wire, 0); eos = r.ReadInt32(); break;
                case 43: r.Expect(field, wire, 0); pad = r.ReadInt32(); break;
                case 44: r.Expect(field, wire, 2); unkSurface = r.ReadString(); break;
                case 45: r.Expect(field, wire, 2); unkPiece = r.ReadString(); break;
                case 46: r.Expect(field, wire, 2); bosPiece = r.ReadString(); break;
                case 47: r.Expect(field, wire, 2); eosPiece = r.ReadString(); break;
                case 48: r.Expect(field, wire, 2); padPiece = r.ReadString(); break;
                default: r.Skip(field, wire); break;
            }
        }
        return new SentencePieceTrainerSpec
        {
            ModelType = modelType, VocabSize = vocab, ByteFallback = byteFallback, TreatWhitespaceAsSuffix = suffix,
            UnkId = unk, BosId = bos, EosId = eos, PadId = pad,
            UnkPiece = unkPiece, BosPiece = bosPiece, EosPiece = eosPiece, PadPiece = padPiece, UnkSurface = unkSurface,
        };
    }

    private static SentencePieceNormalizerSpec ParseNormalizer(ReadOnlySpan<byte> data, string source, int offset, string context)
    {
        var r = new ProtoReader(data, source, offset, context);
        var d = new SentencePieceNormalizerSpec();
        string name = d.Name;
        byte[] charsmap = [];
        bool dummy = d.AddDummyPrefix, removeWs = d.RemoveExtraWhitespaces, escape = d.EscapeWhitespaces;
        while (!r.End)
        {
            var (field, wire) = r.ReadKey();
            switch (field)
            {
                case 1: r.Expect(field, wire, 2); name = r.ReadString(); break;
                case 2: r.Expect(field, wire, 2); charsmap = r.ReadBytes(out _).ToArray(); break;
                case 3: r.Expect(field, wire, 0); dummy = r.ReadBool(); break;
                case 4: r.Expect(field, wire, 0); removeWs = r.ReadBool(); break;
                case 5: r.Expect(field, wire, 0); escape = r.ReadBool(); break;
                default: r.Skip(field, wire); break;
            }
        }
        return new SentencePieceNormalizerSpec
        {
            Name = name, PrecompiledCharsmap = charsmap, AddDummyPrefix = dummy, RemoveExtraWhitespaces = removeWs, EscapeWhitespaces = escape,
        };
    }

    // ---- vocabulary ----

    /// <summary>The id of a piece; the unknown id when it is not in the vocabulary (as SentencePiece's PieceToId).</summary>
    public int PieceToId(string piece)
    {
        ArgumentNullException.ThrowIfNull(piece);
        return TryGetId(piece, out int id) ? id : UnkId;
    }

    /// <summary>Looks a piece up without falling back to the unknown id.</summary>
    public bool TryGetId(string piece, out int id)
    {
        ArgumentNullException.ThrowIfNull(piece);
        if (_reserved.TryGetValue(piece, out id)) return true;
        id = _trie.Find(Encoding.UTF8.GetBytes(piece));
        return id >= 0;
    }

    private int PieceToId(ReadOnlySpan<byte> utf8)
    {
        int id = _trie.Find(utf8);
        if (id >= 0) return id;
        // Reserved pieces are few (control/unknown/byte); a string key is fine here.
        return _reserved.TryGetValue(Encoding.UTF8.GetString(utf8), out id) ? id : UnkId;
    }

    /// <summary>The piece text of an id.</summary>
    public string IdToPiece(int id) => _pieces[CheckId(id)].Piece;

    /// <summary>The type of an id.</summary>
    public SentencePieceType TypeOf(int id) => _pieces[CheckId(id)].Type;

    private int CheckId(int id)
    {
        if ((uint)id >= (uint)_pieces.Length) throw new ArgumentOutOfRangeException(nameof(id), id, $"{Source}: id outside the vocabulary [0, {_pieces.Length})");
        return id;
    }

    // ---- encoding ----

    /// <summary>The normalized text the segmenter sees (spm_normalize): rules applied, spaces escaped to U+2581.</summary>
    public string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var buf = new List<byte>();
        _normalizer.Normalize(Encoding.UTF8.GetBytes(text), buf);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(buf));
    }

    /// <summary>Encodes text to ids (spm_encode --output_format=id).</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return EncodeUtf8(Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Encodes UTF-8 bytes to ids; malformed bytes are treated as U+FFFD, as SentencePiece does.</summary>
    public int[] EncodeUtf8(ReadOnlySpan<byte> utf8)
    {
        var ids = new List<int>();
        Populate(utf8, ids, null);
        return ids.ToArray();
    }

    /// <summary>Encodes text to pieces (spm_encode --output_format=piece): byte-fallback pieces are &lt;0xHH&gt;, a run of unknown characters is one piece.</summary>
    public string[] EncodeAsPieces(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        var pieces = new List<string>();
        Populate(Encoding.UTF8.GetBytes(text), ids, pieces);
        return pieces.ToArray();
    }

    /// <summary>Normalize, segment, then SentencePieceProcessor::PopulateSentencePieceText (byte fallback, unknown merging).</summary>
    private void Populate(ReadOnlySpan<byte> utf8, List<int> ids, List<string>? pieces)
    {
        var norm = new List<byte>();
        _normalizer.Normalize(utf8, norm);
        byte[] text = norm.ToArray();
        var segments = _unigram is not null ? _unigram.Encode(text) : _bpe!.Encode(text, text.Length);

        bool prevUnk = false;
        foreach (var s in segments)
        {
            var type = _pieces[s.Id].Type;
            bool isUnk = type == SentencePieceType.Unknown;
            if (isUnk && TrainerSpec.ByteFallback)
            {
                // An unknown character becomes its UTF-8 bytes.
                for (int i = 0; i < s.Length; i++)
                {
                    byte b = text[s.Start + i];
                    ids.Add(_byteIds[b]);
                    pieces?.Add(ByteToPiece(b));
                }
            }
            else if (isUnk && prevUnk)
            {
                // A run of unknowns is one unknown piece (so decoding can copy the run).
                if (pieces is not null) pieces[^1] += Encoding.UTF8.GetString(text, s.Start, s.Length);
            }
            else
            {
                ids.Add(s.Id);
                pieces?.Add(Encoding.UTF8.GetString(text, s.Start, s.Length));
            }
            prevUnk = isUnk;
        }
    }

    // ---- decoding ----

    /// <summary>Decodes ids to text (spm_decode --input_format=id). Throws for an id outside the vocabulary.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var pieces = new string[ids.Length];
        var idArray = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            idArray[i] = CheckId(ids[i]);
            pieces[i] = _pieces[ids[i]].Piece;
        }
        return DecodeCore(pieces, idArray);
    }

    /// <summary>Decodes pieces to text (spm_decode --input_format=piece); a piece not in the vocabulary is copied as is.</summary>
    public string DecodePieces(IEnumerable<string> pieces)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        var p = pieces.ToArray();
        var ids = new int[p.Length];
        for (int i = 0; i < p.Length; i++) ids[i] = PieceToId(p[i] ?? throw new ArgumentException("null piece", nameof(pieces)));
        return DecodeCore(p, ids);
    }

    /// <summary>SentencePieceProcessor::Decode (0.1.97): byte runs re-assembled, control pieces invisible, one bos whitespace consumed.</summary>
    private string DecodeCore(string[] pieces, int[] ids)
    {
        var text = new StringBuilder();
        int byteStart = 0;
        bool isBosWs = true;   // whether a leading U+2581 may still be consumed
        bool bosWsSeen = false;
        for (int i = 0; i < pieces.Length; i++)
        {
            if (_pieces[ids[i]].Type == SentencePieceType.Byte) continue;
            AppendBytes(text, pieces, byteStart, i);
            if (bosWsSeen || text.Length > 0) isBosWs = false;
            byteStart = i + 1;
            text.Append(DecodePiece(pieces[i], ids[i], isBosWs, out bosWsSeen));
        }
        AppendBytes(text, pieces, byteStart, pieces.Length);
        string result = text.ToString();
        if (_denormalizer is not null)
        {
            var buf = new List<byte>();
            _denormalizer.Normalize(Encoding.UTF8.GetBytes(result), buf);
            result = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(buf));
        }
        return result;
    }

    private string DecodePiece(string piece, int id, bool isBosWs, out bool hasBosWs)
    {
        hasBosWs = false;
        var type = _pieces[id].Type;
        if (type == SentencePieceType.Control) return "";
        if (type == SentencePieceType.Unknown) return _pieces[id].Piece == piece ? TrainerSpec.UnkSurface : piece;
        if (isBosWs && (NormalizerSpec.AddDummyPrefix || NormalizerSpec.RemoveExtraWhitespaces))
        {
            if (piece.StartsWith(SpaceSymbol, StringComparison.Ordinal))
            {
                piece = piece[SpaceSymbol.Length..];
                // With remove_extra_whitespaces every leading whitespace piece is consumed, not just one.
                hasBosWs = !NormalizerSpec.RemoveExtraWhitespaces;
            }
        }
        return piece.Replace(SpaceSymbol, " ", StringComparison.Ordinal);
    }

    /// <summary>Byte pieces [begin, end) → UTF-8 characters; each structurally invalid byte → U+FFFD.</summary>
    private static void AppendBytes(StringBuilder text, string[] pieces, int begin, int end)
    {
        if (begin >= end) return;
        var bytes = new byte[end - begin];
        for (int i = begin; i < end; i++) bytes[i - begin] = (byte)PieceToByte(pieces[i]);
        for (int off = 0; off < bytes.Length;)
        {
            if (Utf8Util.IsValidDecode(bytes.AsSpan(off), out int n))
                text.Append(Encoding.UTF8.GetString(bytes, off, n));
            else
                text.Append('\uFFFD');
            off += n;
        }
    }

    private static string ByteToPiece(byte b) => $"<0x{b:X2}>";

    /// <summary>&lt;0xHH&gt; → HH, or -1.</summary>
    private static int PieceToByte(string piece)
    {
        if (piece.Length != 6 || !piece.StartsWith("<0x", StringComparison.Ordinal) || piece[5] != '>') return -1;
        return int.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out int v) ? v : -1;
    }
}
