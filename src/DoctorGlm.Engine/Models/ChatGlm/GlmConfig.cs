using System.Text.Json;
using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// ChatGLM-6B hyper-parameters (spec §1), with the Hugging Face <c>config.json</c> field names in the docs.
/// </summary>
/// <param name="VocabSize"><c>vocab_size</c>: rows of the embedding and the (tied) lm_head.</param>
/// <param name="HiddenSize"><c>hidden_size</c> H.</param>
/// <param name="NumLayers"><c>num_layers</c> L.</param>
/// <param name="NumAttentionHeads"><c>num_attention_heads</c> nh; head dim d = H / nh.</param>
/// <param name="InnerHiddenSize"><c>inner_hidden_size</c> F (MLP width).</param>
/// <param name="LayerNormEpsilon"><c>layernorm_epsilon</c>.</param>
/// <param name="MaxSequenceLength"><c>max_sequence_length</c> (nominal: there are no learned positions).</param>
/// <param name="PositionEncoding2D"><c>position_encoding_2d</c>; only the 2D form (true) is implemented.</param>
/// <param name="BosTokenId"><c>bos_token_id</c> = &lt;sop&gt;.</param>
/// <param name="EosTokenId"><c>eos_token_id</c> = &lt;eop&gt; (DoctorGLM's LoRA config: 20002 = &lt;/s&gt;).</param>
/// <param name="MaskTokenId"><c>mask_token_id</c> = [MASK].</param>
/// <param name="GMaskTokenId"><c>gmask_token_id</c> = [gMASK].</param>
/// <param name="PadTokenId"><c>pad_token_id</c>.</param>
/// <param name="UseCache"><c>use_cache</c>.</param>
/// <param name="TorchDType"><c>torch_dtype</c> of the stored weights ("float16").</param>
/// <param name="QuantizationBit"><c>quantization_bit</c>: 0, or 4/8 for weight-only quantized layers (§10).</param>
/// <param name="PreSeqLen"><c>pre_seq_len</c>: P-Tuning v2 prefix length N, or null.</param>
/// <param name="PrefixProjection"><c>prefix_projection</c>: the prefix encoder's MLP form (§8).</param>
/// <param name="TieWordEmbeddings"><c>tie_word_embeddings</c>: lm_head shares the embedding (HF default true).</param>
/// <param name="NumImageTokens"><c>num_image_tokens</c>: leading icetk image ids (20000 in the old 150528 vocab, 0 in the slim one).</param>
public sealed record GlmConfig(
    int VocabSize,
    int HiddenSize,
    int NumLayers,
    int NumAttentionHeads,
    int InnerHiddenSize,
    float LayerNormEpsilon = 1e-5f,
    int MaxSequenceLength = 2048,
    bool PositionEncoding2D = true,
    int BosTokenId = 130004,
    int EosTokenId = 130005,
    int MaskTokenId = 130000,
    int GMaskTokenId = 130001,
    int PadTokenId = 3,
    bool UseCache = true,
    string TorchDType = "float16",
    int QuantizationBit = 0,
    int? PreSeqLen = null,
    bool PrefixProjection = false,
    bool TieWordEmbeddings = true,
    int NumImageTokens = 0)
{
    /// <summary>Head dimension d = H / nh.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Residual scale α = √(2L) (spec §3.3).</summary>
    public float Alpha => MathF.Sqrt(2f * NumLayers);

    /// <summary>The released ChatGLM-6B ("slim" 130528 vocabulary, spec §1).</summary>
    public static GlmConfig ChatGlm6B { get; } = new(130528, 4096, 28, 32, 16384);

    /// <summary>The original 150528-vocabulary checkpoint DoctorGLM's LoRA was trained on (spec §0, §1).</summary>
    public static GlmConfig ChatGlm6BOld { get; } = new(150528, 4096, 28, 32, 16384,
        BosTokenId: 150004, EosTokenId: 150005, MaskTokenId: 150000, GMaskTokenId: 150001, PadTokenId: 20003, NumImageTokens: 20000);

    /// <summary>
    /// A small model for tests and from-scratch experiments, with the special ids placed at the top of its
    /// vocabulary: [MASK] = V−10, [gMASK] = V−9, &lt;sop&gt; = V−8, &lt;eop&gt; = V−7, pad = 3.
    /// </summary>
    public static GlmConfig Tiny(int vocabSize = 200, int hiddenSize = 64, int numLayers = 2, int numHeads = 4, int? innerHiddenSize = null)
    {
        if (vocabSize < 16) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "GlmConfig.Tiny: the vocabulary needs room for pad (3) and the four special ids at the top");
        return new GlmConfig(vocabSize, hiddenSize, numLayers, numHeads, innerHiddenSize ?? 4 * hiddenSize,
            MaxSequenceLength: 512, BosTokenId: vocabSize - 8, EosTokenId: vocabSize - 7, MaskTokenId: vocabSize - 10,
            GMaskTokenId: vocabSize - 9, PadTokenId: 3).Validated("GlmConfig.Tiny");
    }

    /// <summary>Number of parameters of the base model with lm_head tied (6,173,286,400 for <see cref="ChatGlm6B"/>).</summary>
    public long ParameterCount => GlmModel.ParameterShapes(this).Sum(p => p.Shape.NumElements);

    /// <summary>Throws (naming <paramref name="where"/> and the field) unless the sizes are usable by the model.</summary>
    public GlmConfig Validated(string where)
    {
        void Positive(int v, string field) { if (v <= 0) throw new InvalidDataException($"{where}: {field} = {v} must be positive"); }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(NumLayers, "num_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(InnerHiddenSize, "inner_hidden_size");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException($"{where}: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
        if (HeadDim % 4 != 0)
            throw new InvalidDataException($"{where}: head dim {HeadDim} (hidden_size / num_attention_heads) must be divisible by 4 for the 2D rotary embedding");
        if (!PositionEncoding2D)
            throw new InvalidDataException($"{where}: position_encoding_2d = false (the 1D variant) is not supported; ChatGLM-6B uses 2D");
        if (!(LayerNormEpsilon > 0)) throw new InvalidDataException($"{where}: layernorm_epsilon = {LayerNormEpsilon} must be positive");
        foreach (var (v, field) in new[] { (BosTokenId, "bos_token_id"), (EosTokenId, "eos_token_id"), (MaskTokenId, "mask_token_id"), (GMaskTokenId, "gmask_token_id"), (PadTokenId, "pad_token_id") })
            if (v < 0 || v >= VocabSize) throw new InvalidDataException($"{where}: {field} = {v} is outside the vocabulary [0, {VocabSize})");
        if (PreSeqLen is { } n && n <= 0) throw new InvalidDataException($"{where}: pre_seq_len = {n} must be positive (or null)");
        if (QuantizationBit is not (0 or 4 or 8)) throw new InvalidDataException($"{where}: quantization_bit = {QuantizationBit} must be 0, 4 or 8");
        return this;
    }

    /// <summary>
    /// Reads a Hugging Face <c>config.json</c> (slim 130528 or old 150528 vocabulary; unknown fields are ignored).
    /// Required: <c>vocab_size</c>, <c>hidden_size</c>, <c>num_layers</c>, <c>num_attention_heads</c>,
    /// <c>bos_token_id</c>, <c>eos_token_id</c>. Defaults: <c>inner_hidden_size</c> 4H; <c>mask_token_id</c> /
    /// <c>gmask_token_id</c> from the vocabulary (the old configs omit them: 150000/150001 for 150528, 130000/130001
    /// for 130528; other vocabularies must state them); <c>pad_token_id</c> 0 (the Python class default);
    /// <c>num_image_tokens</c> 20000 for 150528 and 0 otherwise; the rest as the Python class.
    /// A missing required field or a wrongly typed value throws <see cref="InvalidDataException"/> naming the file and field.
    /// </summary>
    public static GlmConfig FromJson(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InvalidDataException($"{path}: cannot read the model config: {e.Message}", e); }
        return Parse(text, path);
    }

    /// <summary>Parses the text of a <c>config.json</c>; <paramref name="source"/> names it in errors. See <see cref="FromJson"/>.</summary>
    public static GlmConfig Parse(string json, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: the config must be a JSON object");

            JsonElement? Get(string field) =>
                root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
            int Int(JsonElement v, string field) =>
                v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
                : throw new InvalidDataException($"{source}: field '{field}' must be an integer (got {v.GetRawText()})");
            int Required(string field) => Get(field) is { } v ? Int(v, field)
                : throw new InvalidDataException($"{source}: required field '{field}' is missing");
            int OptInt(string field, int fallback) => Get(field) is { } v ? Int(v, field) : fallback;
            bool OptBool(string field, bool fallback) => Get(field) is not { } v ? fallback
                : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
                : throw new InvalidDataException($"{source}: field '{field}' must be true or false (got {v.GetRawText()})");

            int vocab = Required("vocab_size");
            int hidden = Required("hidden_size");
            int layers = Required("num_layers");
            int heads = Required("num_attention_heads");
            int bos = Required("bos_token_id");
            int eos = Required("eos_token_id");
            int DefaultMaskId(string field, int offset) => vocab switch
            {
                150528 => 150000 + offset,
                130528 => 130000 + offset,
                _ => throw new InvalidDataException($"{source}: required field '{field}' is missing (it can only be inferred for the 130528 and 150528 vocabularies; vocab_size is {vocab})"),
            };
            int mask = Get("mask_token_id") is { } m ? Int(m, "mask_token_id") : DefaultMaskId("mask_token_id", 0);
            int gmask = Get("gmask_token_id") is { } g ? Int(g, "gmask_token_id") : DefaultMaskId("gmask_token_id", 1);

            float eps = 1e-5f;
            if (Get("layernorm_epsilon") is { } e)
                eps = e.ValueKind == JsonValueKind.Number ? (float)e.GetDouble()
                    : throw new InvalidDataException($"{source}: field 'layernorm_epsilon' must be a number (got {e.GetRawText()})");
            string dtype = Get("torch_dtype") is { } t
                ? t.ValueKind == JsonValueKind.String ? t.GetString()! : throw new InvalidDataException($"{source}: field 'torch_dtype' must be a string (got {t.GetRawText()})")
                : "float16";
            int? preSeqLen = Get("pre_seq_len") is { } p ? Int(p, "pre_seq_len") : null;

            return new GlmConfig(vocab, hidden, layers, heads,
                InnerHiddenSize: OptInt("inner_hidden_size", 4 * hidden),
                LayerNormEpsilon: eps,
                MaxSequenceLength: OptInt("max_sequence_length", 2048),
                PositionEncoding2D: OptBool("position_encoding_2d", true),
                BosTokenId: bos, EosTokenId: eos, MaskTokenId: mask, GMaskTokenId: gmask,
                PadTokenId: OptInt("pad_token_id", 0),
                UseCache: OptBool("use_cache", false),
                TorchDType: dtype,
                QuantizationBit: OptInt("quantization_bit", 0),
                PreSeqLen: preSeqLen,
                PrefixProjection: OptBool("prefix_projection", false),
                TieWordEmbeddings: OptBool("tie_word_embeddings", true),
                NumImageTokens: OptInt("num_image_tokens", vocab == 150528 ? 20000 : 0)).Validated(source);
        }
    }

    /// <summary>Writes this config as a Hugging Face ChatGLM <c>config.json</c> (atomically) that <see cref="FromJson"/> reads back equal.</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var config = this;
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("architectures"); w.WriteStringValue("ChatGLMModel"); w.WriteEndArray();
            w.WriteString("model_type", "chatglm");
            w.WriteNumber("vocab_size", config.VocabSize);
            w.WriteNumber("hidden_size", config.HiddenSize);
            w.WriteNumber("num_layers", config.NumLayers);
            w.WriteNumber("num_attention_heads", config.NumAttentionHeads);
            w.WriteNumber("inner_hidden_size", config.InnerHiddenSize);
            w.WriteNumber("layernorm_epsilon", config.LayerNormEpsilon);
            w.WriteNumber("max_sequence_length", config.MaxSequenceLength);
            w.WriteBoolean("position_encoding_2d", config.PositionEncoding2D);
            w.WriteNumber("bos_token_id", config.BosTokenId);
            w.WriteNumber("eos_token_id", config.EosTokenId);
            w.WriteNumber("mask_token_id", config.MaskTokenId);
            w.WriteNumber("gmask_token_id", config.GMaskTokenId);
            w.WriteNumber("pad_token_id", config.PadTokenId);
            w.WriteBoolean("use_cache", config.UseCache);
            w.WriteString("torch_dtype", config.TorchDType);
            w.WriteNumber("quantization_bit", config.QuantizationBit);
            if (config.PreSeqLen is { } n) w.WriteNumber("pre_seq_len", n); else w.WriteNull("pre_seq_len");
            w.WriteBoolean("prefix_projection", config.PrefixProjection);
            w.WriteBoolean("tie_word_embeddings", config.TieWordEmbeddings);
            w.WriteNumber("num_image_tokens", config.NumImageTokens);
            w.WriteEndObject();
        }
        AtomicFile.WriteAllText(path, System.Text.Encoding.UTF8.GetString(ms.ToArray()) + "\n");
    }
}
