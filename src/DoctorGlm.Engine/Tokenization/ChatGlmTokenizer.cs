using System.Text;
using System.Text.Json;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// The ChatGLM-6B tokenizer (spec §6) on top of <see cref="SentencePieceModel"/> (<c>ice_text.model</c>):
/// HF <c>ChatGLMTokenizer</c> (HEAD) + <c>SPTokenizer</c> behaviour — literal special tokens split out,
/// "\n" → &lt;n&gt;, "\t" → &lt;|tab|&gt;, space runs → &lt;|blank_n|&gt;, SentencePiece encoding, ids offset by
/// <see cref="NumImageTokens"/> (0 for the slim vocabulary, 20000 for the old icetk one DoctorGLM's LoRA uses),
/// and [gMASK] &lt;sop&gt; appended by <see cref="BuildInputs(ReadOnlySpan{int})"/>. Special-token ids are looked up in the model.
/// </summary>
public sealed class ChatGlmTokenizer
{
    /// <summary>Longest space run with its own piece (&lt;|blank_80|&gt;); longer runs continue with the remainder.</summary>
    public const int MaxBlankLength = 80;

    /// <summary>Newline piece.</summary>
    public const string NewlineToken = "<n>";

    /// <summary>Tab piece.</summary>
    public const string TabToken = "<|tab|>";

    // HF PreTrainedTokenizer.tokenize splits the text around these literal strings (the registered special
    // tokens, spec §6.3 step 1); each becomes its own id.
    private static readonly string[] SplitTokens = ["<sop>", "<eop>", "[MASK]", "[gMASK]", "<pad>", "<unk>", "</s>"];

    private readonly Dictionary<string, int> _splitTokenIds = new(StringComparer.Ordinal);

    /// <summary>Wraps a loaded model. <paramref name="numImageTokens"/> is added to every SentencePiece id (0 slim, 20000 old).</summary>
    public ChatGlmTokenizer(SentencePieceModel model, int numImageTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(numImageTokens);
        Model = model;
        NumImageTokens = numImageTokens;
        int Required(string piece) => model.TryGetId(piece, out int id)
            ? id + numImageTokens
            : throw new InvalidDataException($"{model.Source}: not a ChatGLM vocabulary: piece \"{piece}\" is missing");
        int Optional(string piece) => model.TryGetId(piece, out int id) ? id + numImageTokens : -1;
        MaskId = Required("[MASK]");
        GMaskId = Required("[gMASK]");
        SopId = Required("<sop>");
        EopId = Required("<eop>");
        NewlineId = Required(NewlineToken);
        SMaskId = Optional("[sMASK]");
        PadId = Optional("<pad>");
        EosId = Optional("</s>");
        UnkId = model.UnkId + numImageTokens;
        foreach (var t in SplitTokens)
            if (model.TryGetId(t, out int id)) _splitTokenIds[t] = id + numImageTokens;
    }

    /// <summary>Loads <c>ice_text.model</c> (or any SentencePiece model with ChatGLM's special pieces).</summary>
    public static ChatGlmTokenizer Load(string path, int numImageTokens = 0) => new(SentencePieceModel.Load(path), numImageTokens);

    /// <summary>The tokenizer file names a model folder may hold, in the order they are looked for: Hugging Face's, then ours.</summary>
    public static IReadOnlyList<string> ModelFileNames { get; } = ["ice_text.model", "tokenizer.model"];

    /// <summary>The tokenizer file of a model folder (<see cref="ModelFileNames"/>, the first present), or null.</summary>
    public static string? FindModelFile(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return ModelFileNames.Select(f => Path.Combine(folder, f)).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// The tokenizer of a model folder: a Hugging Face ChatGLM-6B folder (<c>ice_text.model</c>) or one this library
    /// wrote (<c>tokenizer.model</c>). The image-token offset, unless given, is the folder's: <c>num_image_tokens</c>
    /// of <c>tokenizer_config.json</c>, else the model config's (<see cref="GlmConfig.FromJson"/>: stated, or 20000 for
    /// the old 150528 vocabulary), else 0 without a <c>config.json</c>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The folder holds no tokenizer file (the message names both).</exception>
    /// <exception cref="InvalidDataException">A JSON file of the folder is malformed or has a field of the wrong type (named).</exception>
    public static ChatGlmTokenizer FromPretrained(string folder, int? numImageTokens = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        string path = FindModelFile(folder)
            ?? throw new FileNotFoundException($"{folder}: no tokenizer ({string.Join(" or ", ModelFileNames)})", Path.Combine(folder, ModelFileNames[0]));
        return new(SentencePieceModel.Load(path), numImageTokens ?? ImageTokensOf(folder));
    }

    private static int ImageTokensOf(string folder)
    {
        string path = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(path),
                    new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("num_image_tokens", out var v)
                    && v.ValueKind != JsonValueKind.Null)
                    return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n >= 0 ? n
                        : throw new InvalidDataException($"{path}: field 'num_image_tokens' must be a non-negative integer (got {v.GetRawText()})");
            }
            catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
        }
        // The model config's rule, read by the model config (one place decides it for model and tokenizer).
        string config = Path.Combine(folder, "config.json");
        return File.Exists(config) ? GlmConfig.FromJson(config).NumImageTokens : 0;
    }

    /// <summary>The SentencePiece model.</summary>
    public SentencePieceModel Model { get; }

    /// <summary>Offset added to every SentencePiece id (ids below it are image tokens).</summary>
    public int NumImageTokens { get; }

    /// <summary>Number of token ids (image tokens + SentencePiece vocabulary).</summary>
    public int VocabSize => NumImageTokens + Model.Count;

    /// <summary>[MASK] id.</summary>
    public int MaskId { get; }
    /// <summary>[gMASK] id (generation mask, appended to every prompt).</summary>
    public int GMaskId { get; }
    /// <summary>[sMASK] id, or -1 if the model lacks it.</summary>
    public int SMaskId { get; }
    /// <summary>&lt;sop&gt; id (start of piece; HF bos_token).</summary>
    public int SopId { get; }
    /// <summary>&lt;eop&gt; id (end of piece; HF eos_token, where generation stops).</summary>
    public int EopId { get; }
    /// <summary>&lt;pad&gt; id, or -1 if the model lacks it.</summary>
    public int PadId { get; }
    /// <summary>&lt;/s&gt; id (the old tokenizer's end_token), or -1 if the model lacks it.</summary>
    public int EosId { get; }
    /// <summary>&lt;unk&gt; id.</summary>
    public int UnkId { get; }
    /// <summary>&lt;n&gt; id.</summary>
    public int NewlineId { get; }

    /// <summary>The &lt;|blank_n|&gt; piece for a run of n spaces (2 ≤ n ≤ 80).</summary>
    public static string BlankToken(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(n, MaxBlankLength);
        return $"<|blank_{n}|>";
    }

    /// <summary>
    /// SPTokenizer._preprocess: "\n" → &lt;n&gt;, then "\t" → &lt;|tab|&gt;, then for n = 80 down to 2 every run of
    /// n spaces (left to right, non-overlapping) → &lt;|blank_n|&gt;. A run of 81 is blank_80 plus one plain space.
    /// </summary>
    public static string Preprocess(string text, bool linebreak = true, bool whitespaces = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (linebreak) text = text.Replace("\n", NewlineToken, StringComparison.Ordinal);
        if (whitespaces)
        {
            text = text.Replace("\t", TabToken, StringComparison.Ordinal);
            // Same order and semantics as Python's str.replace in a loop from 80 down to 2.
            if (text.Contains("  ", StringComparison.Ordinal))
                for (int n = MaxBlankLength; n >= 2; n--)
                    text = text.Replace(new string(' ', n), BlankToken(n), StringComparison.Ordinal);
        }
        return text;
    }

    /// <summary>
    /// SPTokenizer.postprocess: &lt;n&gt; → "\n", &lt;|tab|&gt; → "\t", &lt;|blank_n|&gt; → n spaces.
    /// </summary>
    public static string Postprocess(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = text.Replace(NewlineToken, "\n", StringComparison.Ordinal).Replace(TabToken, "\t", StringComparison.Ordinal);
        if (text.Contains("<|blank_", StringComparison.Ordinal))
            for (int n = 2; n <= MaxBlankLength; n++)
                text = text.Replace(BlankToken(n), new string(' ', n), StringComparison.Ordinal);
        return text;
    }

    /// <summary>
    /// Text → ids (HF <c>encode</c>). Literal special tokens (&lt;sop&gt;, &lt;eop&gt;, [MASK], [gMASK], &lt;pad&gt;,
    /// &lt;unk&gt;, &lt;/s&gt;) become their ids and, as transformers 4.27 does for plain-string special tokens,
    /// strip whitespace from the text next to them; every other chunk is preprocessed and SentencePiece-encoded
    /// on its own (with its own dummy prefix). <paramref name="addSpecialTokens"/> appends [gMASK] &lt;sop&gt;.
    /// <paramref name="addDummyPrefix"/> = false is SPTokenizer's trick: encode "&lt;n&gt;" + text and drop the first two ids.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = false, bool addDummyPrefix = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (var (chunk, special) in SplitOnSpecialTokens(text))
        {
            if (special) ids.Add(_splitTokenIds[chunk]);
            else ids.AddRange(EncodeChunk(chunk, addDummyPrefix));
        }
        return addSpecialTokens ? BuildInputs(ids.ToArray()) : ids.ToArray();
    }

    /// <summary>Pair encoding (HEAD build_inputs_with_special_tokens): a + [gMASK, &lt;sop&gt;] + b + [&lt;eop&gt;].</summary>
    public int[] EncodePair(string a, string b) => BuildInputs(Encode(a), Encode(b));

    /// <summary>
    /// SPTokenizer.encode for one chunk (no special-token splitting): preprocessing, SentencePiece, offset.
    /// </summary>
    public int[] EncodeChunk(string text, bool addDummyPrefix = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = Preprocess(text);
        if (!addDummyPrefix) text = NewlineToken + text;
        var sp = Model.Encode(text);
        // The trick assumes "<n>…" encodes as "▁", "<n>", … — true for ice_text.model, where "▁" is id 5.
        int skip = addDummyPrefix ? 0 : Math.Min(2, sp.Length);
        var ids = new int[sp.Length - skip];
        for (int i = 0; i < ids.Length; i++) ids[i] = sp[i + skip] + NumImageTokens;
        return ids;
    }

    /// <summary>HEAD build_inputs_with_special_tokens for one sequence: ids + [gMASK, &lt;sop&gt;].</summary>
    public int[] BuildInputs(ReadOnlySpan<int> ids) => [.. ids, GMaskId, SopId];

    /// <summary>HEAD build_inputs_with_special_tokens for a pair: ids0 + [gMASK, &lt;sop&gt;] + ids1 + [&lt;eop&gt;].</summary>
    public int[] BuildInputs(ReadOnlySpan<int> ids0, ReadOnlySpan<int> ids1) => [.. ids0, GMaskId, SopId, .. ids1, EopId];

    /// <summary>
    /// The old (icetk-era, DoctorGLM) build_inputs_with_special_tokens: ids0 (+ ids1), then [gMASK] unless a
    /// [MASK] or [gMASK] is already present, then &lt;/s&gt; unless the last id is a mask, then &lt;sop&gt;.
    /// </summary>
    public int[] BuildInputsLegacy(ReadOnlySpan<int> ids0, ReadOnlySpan<int> ids1 = default)
    {
        var r = new List<int>(ids0.Length + ids1.Length + 3);
        r.AddRange(ids0);
        r.AddRange(ids1);
        if (!r.Contains(MaskId) && !r.Contains(GMaskId)) r.Add(GMaskId);
        if (r[^1] != MaskId && r[^1] != GMaskId)
        {
            if (EosId < 0) throw new InvalidOperationException($"{Model.Source}: the legacy layout needs </s>, which the model lacks");
            r.Add(EosId);
        }
        r.Add(SopId);
        return r.ToArray();
    }

    /// <summary>
    /// Ids → text (spec §6.3 decoding): pad ids removed, the offset subtracted and ids below it (image tokens)
    /// dropped, SentencePiece decode (control pieces invisible, byte pieces re-assembled, the leading dummy space
    /// dropped), then &lt;n&gt;/&lt;|tab|&gt;/&lt;|blank_n|&gt; restored. <paramref name="cleanUpTokenizationSpaces"/>
    /// applies HF's clean_up_tokenization (" ." → "." …), which HEAD's HF decode enables by default.
    /// Throws <see cref="ArgumentOutOfRangeException"/> for an id at or above <see cref="VocabSize"/>.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool cleanUpTokenizationSpaces = false)
    {
        var sp = new List<int>(ids.Length);
        foreach (int id in ids)
        {
            if (id == PadId) continue;
            int s = id - NumImageTokens;
            if (s < 0) continue;
            if (s >= Model.Count) throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the vocabulary [0, {VocabSize})");
            sp.Add(s);
        }
        string text = Postprocess(Model.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sp)));
        return cleanUpTokenizationSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    /// <summary>The token string of an id (&lt;image_N&gt; below the offset).</summary>
    public string IdToToken(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        return id < NumImageTokens ? $"<image_{id}>" : Model.IdToPiece(id - NumImageTokens);
    }

    /// <summary>The id of a token string (&lt;image_N&gt; → N; an unknown piece → the &lt;unk&gt; id).</summary>
    public int TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (token.StartsWith("<image_", StringComparison.Ordinal) && token.EndsWith('>')
            && int.TryParse(token.AsSpan(7, token.Length - 8), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n))
            return n;
        return Model.PieceToId(token) + NumImageTokens;
    }

    /// <summary>transformers' clean_up_tokenization.</summary>
    public static string CleanUpTokenizationSpaces(string text) =>
        text.Replace(" .", ".", StringComparison.Ordinal).Replace(" ?", "?", StringComparison.Ordinal)
            .Replace(" !", "!", StringComparison.Ordinal).Replace(" ,", ",", StringComparison.Ordinal)
            .Replace(" ' ", "'", StringComparison.Ordinal).Replace(" n't", "n't", StringComparison.Ordinal)
            .Replace(" 'm", "'m", StringComparison.Ordinal).Replace(" 's", "'s", StringComparison.Ordinal)
            .Replace(" 've", "'ve", StringComparison.Ordinal).Replace(" 're", "'re", StringComparison.Ordinal);

    /// <summary>
    /// HF tokenize's split around special tokens (leftmost match; the longest token at a position), with the
    /// neighbouring text stripped of whitespace on the side facing the token and emptied chunks dropped.
    /// </summary>
    private List<(string Text, bool Special)> SplitOnSpecialTokens(string text)
    {
        var parts = new List<(string Text, bool Special)>();
        int pos = 0, chunkStart = 0;
        while (pos < text.Length)
        {
            string? hit = null;
            if (text[pos] is '<' or '[')
                foreach (var t in _splitTokenIds.Keys)
                    if (string.CompareOrdinal(text, pos, t, 0, t.Length) == 0 && (hit is null || t.Length > hit.Length)) hit = t;
            if (hit is null) { pos++; continue; }
            if (pos > chunkStart) parts.Add((text[chunkStart..pos], false));
            parts.Add((hit, true));
            pos += hit.Length;
            chunkStart = pos;
        }
        if (chunkStart < text.Length) parts.Add((text[chunkStart..], false));

        for (int i = 0; i < parts.Count; i++)
        {
            if (!parts[i].Special) continue;
            if (i + 1 < parts.Count && !parts[i + 1].Special) parts[i + 1] = (parts[i + 1].Text.TrimStart(PythonWhitespace), false);
            if (i > 0 && !parts[i - 1].Special) parts[i - 1] = (parts[i - 1].Text.TrimEnd(PythonWhitespace), false);
        }
        parts.RemoveAll(p => p.Text.Length == 0);
        return parts;
    }

    // Python's str.strip() set (str.isspace): Unicode White_Space plus the separators U+001C..U+001F.
    private static readonly char[] PythonWhitespace = BuildPythonWhitespace();

    private static char[] BuildPythonWhitespace()
    {
        var sb = new StringBuilder();
        for (int c = 0; c <= 0xFFFF; c++)
            if (char.IsWhiteSpace((char)c) || c is >= 0x1C and <= 0x1F) sb.Append((char)c);
        return sb.ToString().ToCharArray();
    }
}
