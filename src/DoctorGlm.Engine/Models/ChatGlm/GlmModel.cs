using DoctorGlm.Engine.Quantization;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.IO.Adapters;

namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// ChatGLM-6B (spec §3), batch-major: token ids [B, S] → logits [B, S, V]. Parameters are tensors named like the
/// Hugging Face checkpoint keys; lm_head is tied to <c>transformer.word_embeddings.weight</c> (one buffer). The
/// weight matrices of a frozen base may be kept in bf16 or fp16 (<see cref="WeightDType"/>: half the memory, tensor
/// cores on the GPU); vectors (LayerNorm, biases), trainable parameters, activations and logits are fp32.
/// Optional LoRA on <c>query_key_value</c> (§9), P-Tuning v2 prefix (§8) and per-block gradient checkpointing (§11).
/// </summary>
/// <remarks>
/// Block l (§3.3): a = LN₁(x); qkv = a·W_qkvᵀ + b viewed [B, S, nh, 3d] and split per head into q | k | v; 2D
/// rotary on q and k; attention with layer coefficient l + 1 (prefix keys/values first when present); o = dense;
/// h = α·a + o; m = LN₂(h); y = α·m + MLP(m) with tanh-GELU; α = √(2L). There is no identity skip.
/// </remarks>
public sealed partial class GlmModel : IDisposable
{
    /// <summary>Key of the tied output head in HF checkpoints (not a separate parameter here).</summary>
    public const string LmHeadKey = "lm_head.weight";

    /// <summary>Key of the token embedding (also the output head).</summary>
    public const string EmbeddingKey = "transformer.word_embeddings.weight";

    private static readonly string[] LayerSuffixes =
    [
        "input_layernorm.weight", "input_layernorm.bias",
        "attention.query_key_value.weight", "attention.query_key_value.bias",
        "attention.dense.weight", "attention.dense.bias",
        "post_attention_layernorm.weight", "post_attention_layernorm.bias",
        "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias",
        "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias",
    ];

    // Indices into a layer's parameter array (same order as LayerSuffixes).
    private const int Ln1W = 0, Ln1B = 1, QkvW = 2, QkvB = 3, DenseW = 4, DenseB = 5, Ln2W = 6, Ln2B = 7, H4W = 8, H4B = 9, FourHW = 10, FourHB = 11;

    private readonly Dictionary<string, Tensor> _params;
    private readonly string[][] _layerKeys;
    private bool _disposed;

    private GlmModel(GlmConfig config, Dictionary<string, Tensor> parameters, Device device, DType weightDType = DType.F32)
    {
        Config = config;
        Device = device;
        WeightDType = weightDType;
        _params = parameters;
        _layerKeys = Enumerable.Range(0, config.NumLayers).Select(i => LayerSuffixes.Select(s => $"transformer.layers.{i}.{s}").ToArray()).ToArray();
        foreach (var (k, t) in _params) t.Name = k;
    }

    /// <summary>The hyper-parameters.</summary>
    public GlmConfig Config { get; }

    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }

    /// <summary>
    /// Storage type of the base weight matrices (the embedding and the four linears of each block): F32, or
    /// BF16 / F16 for a frozen base (<see cref="ConvertWeights"/>, or the dtype argument of
    /// <see cref="GlmLoadOptions.WeightDType"/>). One-dimensional parameters stay F32.
    /// </summary>
    public DType WeightDType { get; private set; }

    /// <summary>Bytes held by the base parameters (not counting quantized weights, LoRA or prefix).</summary>
    public long BaseParameterBytes => BaseParameters().Sum(kv => kv.Value.NumElements * kv.Value.DType.SizeOf());

    /// <summary>Training mode: enables LoRA dropout and the prefix dropout (Ops.Dropout). The base model has no dropout.</summary>
    public bool Training { get; set; }

    /// <summary>Recompute each block in backward instead of storing its activations (spec §11).</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>
    /// Storage type of the activations of a forward pass without a KV cache (training, evaluation): F32 (default), or
    /// BF16 / F16 — every op between the embedding and the LM head then keeps its output, and what it saves for
    /// backward, in 16 bits (half the activation memory and traffic), computing in fp32 and rounding once per op.
    /// Gradients, the loss and the logits stay F32, as do LayerNorm statistics, LoRA and prefix parameters. The
    /// KV-cached forward (generation) always runs fp32 activations: it keeps few, and decoding reads weights (its
    /// attention runs in the cache's dtype: see <see cref="KvCacheDType"/>).
    /// </summary>
    public DType ActivationDType
    {
        get => _activationDType;
        set
        {
            if (value is not (DType.F32 or DType.BF16 or DType.F16))
                throw new ArgumentException($"GlmModel.ActivationDType: {value} is not F32, BF16 or F16", nameof(value));
            _activationDType = value;
        }
    }

    private DType _activationDType = DType.F32;

    /// <summary>
    /// Storage type of the KV caches <see cref="CreateCache"/> makes. Decoding reads the whole past at every step, so
    /// at long contexts and large batches the cache, not the weights, is what a step mostly reads (the 6B model's
    /// past is 0.9 MB per position and row in fp32, 3.7 GB for a batch of 8 at 512 positions), and it bounds how
    /// many rows fit. Default: on a GPU, the type of 16-bit weights (BF16/F16: half of that); F32 otherwise — on the
    /// CPU, whose attention computes in fp32 and would widen a 16-bit past at every step, and for fp32 weights. A 16-bit
    /// cache rounds each past key and value once (the logits move by about 0.03 % of the largest on the test model,
    /// against the bf16 weights' own rounding). The cached forward attends in the cache's dtype: each step's new keys
    /// and values are written into the cache first and read from there, its queries rounded alike
    /// (<see cref="Ops.GlmCachedSelfAttention"/>); on a GPU a 16-bit prompt pass then runs the tensor-core attention
    /// kernels (<see cref="Backends.Cuda.CudaAttentionKernel.Auto"/>). Set it before creating a cache; null restores
    /// the default.
    /// </summary>
    public DType? KvCacheDType
    {
        get => _kvCacheDType ?? (Device.Kind != DeviceKind.Cpu && WeightDType is DType.BF16 or DType.F16 ? WeightDType : DType.F32);
        set
        {
            if (value is not (null or DType.F32 or DType.BF16 or DType.F16))
                throw new ArgumentException($"GlmModel.KvCacheDType: {value} is not F32, BF16 or F16", nameof(value));
            _kvCacheDType = value;
        }
    }

    private DType? _kvCacheDType;

    /// <summary>Source of every dropout mask (LoRA and prefix); replayed exactly by gradient checkpointing.</summary>
    public RandomGenerator Rng { get; set; } = new(0);

    /// <summary>Dropout probability on the P-Tuning prefix while training (HF: 0.1).</summary>
    public float PrefixDropout { get; set; } = 0.1f;

    /// <summary>The attached LoRA adapter, if any.</summary>
    public GlmLora? Lora { get; private set; }

    /// <summary>The attached P-Tuning v2 prefix encoder, if any.</summary>
    public GlmPrefixEncoder? Prefix { get; private set; }

    // ------------------------------------------------------------------ shapes and construction

    /// <summary>
    /// Every base parameter's HF key and shape, in checkpoint order (embedding, layers, final LayerNorm), without
    /// the tied lm_head and the ignored rotary <c>inv_freq</c>. Allocates nothing: usable for the 6B shape.
    /// </summary>
    public static IEnumerable<(string Name, Shape Shape)> ParameterShapes(GlmConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int h = config.HiddenSize, f = config.InnerHiddenSize;
        yield return (EmbeddingKey, new Shape(config.VocabSize, h));
        var shapes = new[]
        {
            new Shape(h), new Shape(h),
            new Shape(3 * h, h), new Shape(3 * h),
            new Shape(h, h), new Shape(h),
            new Shape(h), new Shape(h),
            new Shape(f, h), new Shape(f),
            new Shape(h, f), new Shape(h),
        };
        for (int i = 0; i < config.NumLayers; i++)
            for (int j = 0; j < LayerSuffixes.Length; j++)
                yield return ($"transformer.layers.{i}.{LayerSuffixes[j]}", shapes[j]);
        yield return ("transformer.final_layernorm.weight", new Shape(h));
        yield return ("transformer.final_layernorm.bias", new Shape(h));
    }

    private static void CheckSupported(GlmConfig config, bool loading = false)
    {
        config.Validated("GlmModel");
        if (!config.TieWordEmbeddings) throw new NotSupportedException("GlmModel: tie_word_embeddings = false is not supported (ChatGLM-6B ties lm_head to the embedding)");
        if (config.QuantizationBit != 0 && !loading)
            throw new NotSupportedException($"GlmModel: quantization_bit = {config.QuantizationBit}: a quantized model can only be loaded from a pre-quantized checkpoint (or quantized after loading with Quantize)");
    }

    /// <summary>
    /// A randomly initialised model for from-scratch training: embedding and linear weights N(0, <paramref name="std"/>)
    /// (config initializer_range 0.02), biases 0, LayerNorm weight 1 and bias 0. Parameters are trainable, unless
    /// <paramref name="weightDType"/> keeps the weight matrices in 16 bits: then the base is frozen (a stand-in base
    /// for LoRA or P-Tuning, e.g. the 6B shape for speed and memory measurements), and each matrix is drawn in fp32
    /// and converted on its own, so the peak is one matrix above the 16-bit model.
    /// </summary>
    public static GlmModel CreateRandom(GlmConfig config, RandomGenerator rng, Device? device = null, float std = 0.02f, DType weightDType = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(rng);
        CheckSupported(config);
        CheckWeightDType(weightDType, trainable: false, "GlmModel.CreateRandom");
        var dev = device ?? Device.Cpu;
        var p = new Dictionary<string, Tensor>();
        using (TensorScope.Unscoped())
            foreach (var (name, shape) in ParameterShapes(config))
            {
                Tensor t = name.EndsWith("layernorm.weight", StringComparison.Ordinal) ? Tensor.Full(shape, 1f, DType.F32, dev)
                    : shape.Rank == 1 ? Tensor.Zeros(shape, DType.F32, dev)
                    : rng.Normal(shape, std, dev);
                if (shape.Rank == 2 && weightDType != DType.F32) t = ReplaceWithConverted(t, weightDType);
                t.RequiresGrad = weightDType == DType.F32;
                p[name] = t;
            }
        return new GlmModel(config, p, dev, weightDType);
    }

    /// <summary>
    /// Loads a model from <paramref name="source"/> (see <see cref="LoadWeights(ITensorSource)"/> for the checks). Parameters are
    /// frozen unless <paramref name="trainable"/> (full fine-tuning).
    /// </summary>
    /// <param name="config">The hyper-parameters (config.json).</param>
    /// <param name="source">Where the weights are read from.</param>
    /// <param name="device">Where they go (default: CPU).</param>
    /// <param name="trainable">Whether the base parameters require gradients (then <paramref name="weightDType"/> must be F32).</param>
    /// <param name="weightDType">Storage type of the weight matrices: F32, BF16 or F16 (converted while reading, so
    /// an fp16 checkpoint never needs an fp32 copy in memory).</param>
    public static GlmModel Load(GlmConfig config, ITensorSource source, Device? device = null, bool trainable = false, DType weightDType = DType.F32) =>
        Load(config, source, new GlmLoadOptions { Trainable = trainable, WeightDType = weightDType }, device);

    /// <summary>
    /// Loads a model from <paramref name="source"/> as <paramref name="options"/> say: weight storage type, and a LoRA
    /// adapter to merge and INT8/INT4 quantization applied to each weight as it is read, so the peak is the finished
    /// model plus one weight matrix (see <see cref="GlmLoadOptions"/>). Same checks as
    /// <see cref="LoadWeights(ITensorSource)"/>; on any failure nothing stays allocated.
    /// </summary>
    /// <param name="config">The hyper-parameters (config.json).</param>
    /// <param name="source">Where the weights are read from.</param>
    /// <param name="options">How to store them.</param>
    /// <param name="device">Where they go (default: CPU).</param>
    public static GlmModel Load(GlmConfig config, ITensorSource source, GlmLoadOptions options, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        CheckSupported(config, loading: true);
        CheckWeightDType(options.WeightDType, options.Trainable, "GlmModel.Load");
        options.Validate(config, "GlmModel.Load");
        var dev = device ?? Device.Cpu;
        Dictionary<string, Tensor> p;
        Dictionary<string, QuantizedWeight> quantized;
        // Read (and checked against the config, and a config.json beside it) before a byte of the base is read.
        using (var merge = options.MergeLoraAdapter is null ? null
                   : LoraAdapters.Load(options.MergeLoraAdapter, new AdapterExpectations(config.NumLayers, config.HiddenSize, config.VocabSize), DType.F32, dev))
            p = ReadBase(config, source, dev, prefix: null, options.WeightDType, new OnRead(options.QuantizeBits, merge, options.Progress), out quantized);
        foreach (var t in p.Values) t.RequiresGrad = options.Trainable;
        var model = new GlmModel(config, p, dev, options.WeightDType);
        model.AdoptQuantized(quantized, config.QuantizationBit != 0 ? config.QuantizationBit : options.QuantizeBits);
        return model;
    }

    /// <summary>What <see cref="ReadBase"/> does to each block linear's weight once read: fold a LoRA adapter into
    /// query_key_value, then quantize (bits 8 or 4) the four block linears.</summary>
    private sealed record OnRead(int QuantizeBits, LoraAdapterData? Merge, IProgress<GlmLoadProgress>? Progress = null)
    {
        public static readonly OnRead Nothing = new(0, null);
    }

    /// <summary>
    /// Replaces the base weights with those of <paramref name="source"/>. Every key of
    /// <see cref="ParameterShapes"/> must be stored with exactly its shape and a float dtype; no other key may be
    /// stored except <c>lm_head.weight</c> (which must equal the embedding, torch allclose; only the embedding is kept),
    /// the recomputed <c>*.attention.rotary_emb.inv_freq</c>, and the prefix encoder's keys when one is attached
    /// (then loaded too). Errors name the source and the key. Everything is read into fresh tensors first, so on any
    /// failure the model is left untouched. Trainability flags are kept.
    /// </summary>
    public void LoadWeights(ITensorSource source)
    {
        ThrowIfDisposed();
        if (IsQuantized) throw new InvalidOperationException("GlmModel.LoadWeights: the model is quantized; load the weights into a new model and quantize that");
        if (Lora is { Merged: true }) throw new InvalidOperationException("GlmModel.LoadWeights: a LoRA adapter is merged into the current weights; unmerge or detach it first");
        var fresh = ReadBase(Config, source, Device, Prefix, WeightDType, OnRead.Nothing, out _);
        foreach (var (name, t) in fresh)
        {
            if (_params.TryGetValue(name, out var old))
            {
                t.RequiresGrad = old.RequiresGrad;
                t.Name = name;
                old.Grad?.Dispose();
                old.Dispose();
                _params[name] = t;
            }
            else
            {
                // A prefix-encoder tensor: copy into the encoder's own tensor (it owns them).
                var dst = Prefix!.NamedParameters().First(kv => kv.Key == name).Value;
                dst.Backend.Copy(t, dst);
                t.Dispose();
            }
        }
    }

    private static Dictionary<string, Tensor> ReadBase(GlmConfig config, ITensorSource source, Device device, GlmPrefixEncoder? prefix,
        DType weightDType, OnRead onRead, out Dictionary<string, QuantizedWeight> quantized)
    {
        ArgumentNullException.ThrowIfNull(source);
        int bits = config.QuantizationBit;
        // A pre-quantized checkpoint (spec §2, §10) stores the four block linears as int8 'weight' + fp16 'weight_scale'.
        var expected = ParameterShapes(config).Where(e => bits == 0 || !IsQuantizedKey(e.Name)).ToList();
        var quantizedShapes = bits == 0 ? [] : ParameterShapes(config).Where(e => IsQuantizedKey(e.Name)).ToList();
        if (prefix is not null)
            expected.AddRange(prefix.NamedParameters().Select(kv => (kv.Key, kv.Value.Shape)));
        var known = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var (name, shape) in quantizedShapes)
        {
            var dataShape = new Shape(shape[0], bits == 4 ? shape[1] / 2 : shape[1]);
            CheckStored(source, name, DType.I8, dataShape);
            CheckStored(source, name + "_scale", DType.F16, new Shape(shape[0]));
            known.Add(name);
            known.Add(name + "_scale");
        }
        // Validate everything from the headers before reading a byte.
        foreach (var (name, shape) in expected)
        {
            if (!source.Contains(name)) throw new InvalidDataException($"{source.Description}: missing tensor '{name}' (expected shape {shape})");
            CheckInfo(source, source.Info(name), shape);
        }
        bool hasHead = false;
        foreach (var info in source.Tensors)
        {
            if (known.Contains(info.Name)) continue;
            if (info.Name == LmHeadKey) { CheckInfo(source, info, new Shape(config.VocabSize, config.HiddenSize)); hasHead = true; continue; }
            if (info.Name.StartsWith("transformer.layers.", StringComparison.Ordinal) && info.Name.EndsWith(".attention.rotary_emb.inv_freq", StringComparison.Ordinal)) continue; // recomputed (spec §2)
            throw new InvalidDataException(info.Name.StartsWith(GlmPrefixEncoder.KeyPrefix, StringComparison.Ordinal)
                ? $"{source.Description}: tensor '{info.Name}' belongs to a P-Tuning prefix encoder, but none is attached to the model"
                : $"{source.Description}: unexpected tensor '{info.Name}' {info.Shape} (not a ChatGLM parameter for this config)");
        }

        var fresh = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        quantized = new Dictionary<string, QuantizedWeight>(StringComparer.Ordinal);
        // Progress over everything read: the pre-quantized pairs, the float tensors and the tied head's check.
        var toRead = quantizedShapes.SelectMany(e => new[] { e.Name, e.Name + "_scale" }).Concat(expected.Select(e => e.Name))
            .Concat(hasHead ? [LmHeadKey] : []).ToList();
        long totalBytes = toRead.Sum(n => source.Info(n).Shape.NumElements * source.Info(n).DType.SizeOf()), bytesRead = 0;
        int tensorsRead = 0;
        void Read(string name)
        {
            bytesRead += source.Info(name).Shape.NumElements * source.Info(name).DType.SizeOf();
            onRead.Progress?.Report(new GlmLoadProgress(++tensorsRead, toRead.Count, bytesRead, totalBytes, name));
        }
        try
        {
            using (TensorScope.Unscoped())
            {
                foreach (var (name, shape) in quantizedShapes)
                {
                    var data = Tensor.Empty(new Shape(shape[0], bits == 4 ? shape[1] / 2 : shape[1]), DType.I8, device);
                    var scale = Tensor.Empty(new Shape(shape[0]), DType.F16, device);
                    try
                    {
                        source.ReadInto(name, data);
                        Read(name);
                        source.ReadInto(name + "_scale", scale);
                        Read(name + "_scale");
                        quantized[name] = QuantizedWeight.FromTensors(data, scale, bits, shape[1], $"{source.Description}: '{name}'");
                    }
                    catch { data.Dispose(); scale.Dispose(); throw; }
                }
                foreach (var (name, shape) in expected)
                {
                    bool prefixKey = name.StartsWith(GlmPrefixEncoder.KeyPrefix, StringComparison.Ordinal);
                    var t = Tensor.Empty(shape, shape.Rank == 2 && !prefixKey ? weightDType : DType.F32, device);
                    bool quantize = onRead.QuantizeBits != 0 && IsQuantizedKey(name);
                    if (!quantize) fresh[name] = t; // from here on freed with the rest on failure
                    try
                    {
                        source.ReadInto(name, t);
                        if (onRead.Merge is { } merge && QkvLayer(name) is int layer && merge.Layers.TryGetValue(layer, out var lora))
                            LoraMerge.Merge(t, lora.A, lora.B, merge.Scaling, merge.Groups);
                        if (quantize) quantized[name] = QuantizedWeight.Quantize(t, onRead.QuantizeBits);
                        Read(name);
                    }
                    finally
                    {
                        if (quantize) t.Dispose(); // only the packed weight stays: one matrix above the finished model
                    }
                }
                if (hasHead)
                {
                    using var head = Tensor.Empty(new Shape(config.VocabSize, config.HiddenSize), weightDType, device);
                    source.ReadInto(LmHeadKey, head);
                    CheckTied(source, fresh[EmbeddingKey], head);
                    Read(LmHeadKey);
                }
            }
        }
        catch
        {
            foreach (var t in fresh.Values) t.Dispose();
            foreach (var q in quantized.Values) q.Dispose();
            throw;
        }
        return fresh;
    }

    /// <summary>The layer whose query_key_value weight <paramref name="name"/> is, or null.</summary>
    private static int? QkvLayer(string name)
    {
        const string Head = "transformer.layers.", Tail = ".attention.query_key_value.weight";
        if (!name.StartsWith(Head, StringComparison.Ordinal) || !name.EndsWith(Tail, StringComparison.Ordinal)) return null;
        return int.TryParse(name.AsSpan(Head.Length, name.Length - Head.Length - Tail.Length), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out int layer) ? layer : null;
    }

    private static void CheckStored(ITensorSource source, string name, DType dtype, Shape shape)
    {
        if (!source.Contains(name)) throw new InvalidDataException($"{source.Description}: missing tensor '{name}' (expected {dtype} {shape} of a quantized checkpoint)");
        var info = source.Info(name);
        string where = info.File == source.Description ? source.Description : $"{source.Description} ({info.File})";
        if (info.Shape != shape || info.DType != dtype)
            throw new InvalidDataException($"{where}: tensor '{name}' is {info.DType} {info.Shape}, the quantized model needs {dtype} {shape}");
    }

    private static void CheckInfo(ITensorSource source, TensorInfo info, Shape shape)
    {
        // Name the shard that holds the tensor too: for a sharded folder the description is only the index.
        string where = info.File == source.Description ? source.Description : $"{source.Description} ({info.File})";
        if (info.Shape != shape)
            throw new InvalidDataException($"{where}: tensor '{info.Name}' has shape {info.Shape}, the model needs {shape}");
        if (!info.DType.IsFloat())
            throw new InvalidDataException($"{where}: tensor '{info.Name}' is {info.DType}, not a float type (a quantized checkpoint needs quantization_bit in config.json)");
    }

    /// <summary>torch.allclose(lm_head, embedding) with its defaults (rtol 1e-5, atol 1e-8), as chatglm.cpp requires before keeping one copy.</summary>
    private static void CheckTied(ITensorSource source, Tensor embedding, Tensor head)
    {
        // Compare a row block at a time so the 6B head (2 GB in fp32) is not copied to a managed array at once.
        int rows = embedding.Shape[0], h = embedding.Shape[1];
        int block = Math.Max(1, (1 << 22) / Math.Max(1, h));
        for (int r0 = 0; r0 < rows; r0 += block)
        {
            int n = Math.Min(block, rows - r0);
            using var e = embedding.Narrow(0, r0, n);
            using var l = head.Narrow(0, r0, n);
            var ev = e.ToFloatArray();
            var lv = l.ToFloatArray();
            for (int i = 0; i < ev.Length; i++)
                if (!(Math.Abs(lv[i] - ev[i]) <= 1e-8 + 1e-5 * Math.Abs(ev[i])))
                    throw new InvalidDataException($"{source.Description}: '{LmHeadKey}' differs from '{EmbeddingKey}' at [{r0 + i / h}, {i % h}] ({lv[i]} vs {ev[i]}); ChatGLM ties them and keeps one buffer");
        }
    }

    // ------------------------------------------------------------------ parameters

    /// <summary>The base parameters under their HF keys, in <see cref="ParameterShapes"/> order.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> BaseParameters()
    {
        ThrowIfDisposed();
        // Quantized weights (see Quantize) are no longer fp32 parameters and are not listed.
        foreach (var (name, _) in ParameterShapes(Config))
            if (_params.TryGetValue(name, out var t)) yield return new(name, t);
    }

    /// <summary>Every parameter: base, then LoRA (PEFT keys), then the prefix encoder (HF keys).</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> NamedParameters()
    {
        foreach (var kv in BaseParameters()) yield return kv;
        if (Lora is not null) foreach (var kv in Lora.NamedParameters()) yield return kv;
        if (Prefix is not null) foreach (var kv in Prefix.NamedParameters()) yield return kv;
    }

    /// <summary>The parameters that require a gradient (what an optimizer should update and a trainer save), named as
    /// PEFT / HF save them.</summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> TrainableParameters() => NamedParameters().Where(kv => kv.Value.RequiresGrad).ToList();

    /// <summary>The base parameter stored under <paramref name="key"/>.</summary>
    public Tensor Parameter(string key)
    {
        ThrowIfDisposed();
        return _params.TryGetValue(key, out var t) ? t : throw new KeyNotFoundException($"GlmModel: no parameter '{key}'");
    }

    /// <summary>Freezes (false) or unfreezes (true) every base parameter; unfreezing needs F32 weights (fp32 master weights).</summary>
    public void SetBaseTrainable(bool trainable)
    {
        ThrowIfDisposed();
        CheckWeightDType(WeightDType, trainable, "GlmModel.SetBaseTrainable");
        if (trainable && IsQuantized)
            throw new InvalidOperationException($"GlmModel.SetBaseTrainable: the block linears are INT{QuantizationBits} and cannot train; full training needs the float model (LoRA and P-Tuning train over a quantized base)");
        foreach (var t in _params.Values) t.RequiresGrad = trainable;
    }

    /// <summary>
    /// Converts the base weight matrices to <paramref name="dtype"/> (F32, BF16 or F16), one tensor at a time (the
    /// peak is one matrix in both types). Going to 16 bits rounds to nearest even and needs a frozen base: an
    /// optimizer updates fp32 master weights only. Not allowed while a LoRA adapter is merged (unmerging would no
    /// longer restore the weights) or once quantized.
    /// </summary>
    public void ConvertWeights(DType dtype)
    {
        ThrowIfDisposed();
        const string op = "GlmModel.ConvertWeights";
        CheckWeightDType(dtype, _params.Values.Any(t => t.RequiresGrad), op);
        if (IsQuantized) throw new InvalidOperationException($"{op}: the model is quantized; convert before quantizing");
        if (Lora is { Merged: true }) throw new InvalidOperationException($"{op}: a LoRA adapter is merged into the weights; unmerge it first");
        if (dtype == WeightDType) return;
        foreach (var name in _params.Keys.ToList())
        {
            var old = _params[name];
            if (old.Rank != 2) continue;
            old.Grad?.Dispose();
            var t = ReplaceWithConverted(old, dtype);
            t.Name = name;
            _params[name] = t;
        }
        WeightDType = dtype;
    }

    /// <summary>
    /// An unscoped copy of <paramref name="t"/> in <paramref name="dtype"/> (rounded to nearest even), and
    /// <paramref name="t"/> disposed: one matrix at a time, so converting a model never holds it twice.
    /// </summary>
    private static Tensor ReplaceWithConverted(Tensor t, DType dtype)
    {
        Tensor converted;
        using (TensorScope.Unscoped()) converted = Tensor.Empty(t.Shape, dtype, t.Device);
        t.Backend.Copy(t, converted);
        t.Dispose();
        return converted;
    }

    private static void CheckWeightDType(DType dtype, bool trainable, string op)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"{op}: weight dtype {dtype} must be F32, BF16 or F16", nameof(dtype));
        if (trainable && dtype != DType.F32)
            throw new ArgumentException($"{op}: trainable base weights must be F32 (optimizers update fp32 master weights); keep the base frozen to store it in {dtype}", nameof(dtype));
    }

    /// <summary>Total elements of <see cref="TrainableParameters"/>.</summary>
    public long TrainableParameterCount => TrainableParameters().Sum(kv => kv.Value.NumElements);

    // ------------------------------------------------------------------ LoRA

    /// <summary>Creates and attaches a fresh LoRA adapter (<see cref="GlmLora.Create"/>); freezes the base.</summary>
    public GlmLora AttachLora(LoraSettings settings, RandomGenerator rng) => AttachLora(GlmLora.Create(Config, settings, rng, Device));

    /// <summary>
    /// Attaches <paramref name="adapter"/> (the model takes ownership) after checking its shapes against every
    /// layer's query_key_value; freezes the base weights (spec §9: only A and B train). On a quantized model the adapter
    /// runs on top of the INT8/INT4 base (QLoRA's arrangement: train or run it over the packed weights); it cannot be
    /// merged there.
    /// </summary>
    public GlmLora AttachLora(GlmLora adapter)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(adapter);
        if (Lora is not null) throw new InvalidOperationException("GlmModel.AttachLora: an adapter is already attached; detach it first");
        if (adapter.Layers.Count != Config.NumLayers)
            throw new ArgumentException($"GlmModel.AttachLora: the adapter has {adapter.Layers.Count} layers, the model {Config.NumLayers}");
        for (int i = 0; i < Config.NumLayers; i++)
        {
            string key = _layerKeys[i][QkvW];
            var (a, b) = adapter.Layers[i];
            string where = $"GlmModel.AttachLora (layer {i})";
            if (_quantized.TryGetValue(key, out var q)) adapter.Groups.Resolve(where, q.Rows, q.Columns, $"the INT{q.Bits} weight [{q.Rows}, {q.Columns}]", a, b);
            else adapter.Groups.Resolve(where, _params[key].Shape[0], _params[key].Shape[1], _params[key], a, b);
            if (a.Device != Device || b.Device != Device) throw new ArgumentException($"GlmModel.AttachLora: layer {i}'s adapter is on {a.Device}/{b.Device}, the model on {Device}");
        }
        SetBaseTrainable(false);
        Lora = adapter;
        return adapter;
    }

    /// <summary>Removes the adapter (unmerging it first if merged) and hands it to the caller; the base stays frozen.</summary>
    public GlmLora? DetachLora()
    {
        ThrowIfDisposed();
        if (Lora is null) return null;
        if (Lora.Merged) UnmergeLora();
        var a = Lora;
        Lora = null;
        return a;
    }

    /// <summary>Folds the adapter into every layer's W_qkv (W += s·B·A per enabled block, <see cref="LoraMerge.Merge"/>); the block then runs a plain linear layer.</summary>
    public void MergeLora()
    {
        ThrowIfDisposed();
        var lora = Lora ?? throw new InvalidOperationException("GlmModel.MergeLora: no LoRA adapter is attached");
        if (IsQuantized) throw new InvalidOperationException("GlmModel.MergeLora: the model is quantized, and an adapter cannot be folded into INT8/INT4 weights; merge it into the float model before quantizing (GlmLoadOptions.MergeLoraAdapter does both while loading)");
        if (lora.Merged) throw new InvalidOperationException("GlmModel.MergeLora: the adapter is already merged");
        for (int i = 0; i < Config.NumLayers; i++)
            LoraMerge.Merge(_params[_layerKeys[i][QkvW]], lora.Layers[i].A, lora.Layers[i].B, lora.Scaling, lora.Groups);
        lora.Merged = true;
    }

    /// <summary>Undoes <see cref="MergeLora"/> (W −= s·B·A; equal to the original up to fp32 rounding).</summary>
    public void UnmergeLora()
    {
        ThrowIfDisposed();
        var lora = Lora ?? throw new InvalidOperationException("GlmModel.UnmergeLora: no LoRA adapter is attached");
        if (!lora.Merged) throw new InvalidOperationException("GlmModel.UnmergeLora: the adapter is not merged");
        if (IsQuantized) throw new InvalidOperationException("GlmModel.UnmergeLora: the merged weights were quantized; reload the model to get them back");
        for (int i = 0; i < Config.NumLayers; i++)
            LoraMerge.Unmerge(_params[_layerKeys[i][QkvW]], lora.Layers[i].A, lora.Layers[i].B, lora.Scaling, lora.Groups);
        lora.Merged = false;
    }

    // ------------------------------------------------------------------ P-Tuning v2

    /// <summary>Creates and attaches a fresh prefix encoder of length <paramref name="length"/>; freezes the base.</summary>
    public GlmPrefixEncoder AttachPrefixEncoder(int length, bool projection, RandomGenerator rng) =>
        AttachPrefixEncoder(GlmPrefixEncoder.Create(Config, length, projection, rng, Device));

    /// <summary>
    /// Creates and attaches a fresh prefix encoder sized by the config's <c>pre_seq_len</c> and
    /// <c>prefix_projection</c> (as HF builds one when pre_seq_len is set); freezes the base.
    /// </summary>
    public GlmPrefixEncoder AttachPrefixEncoder(RandomGenerator rng) =>
        AttachPrefixEncoder(Config.PreSeqLen ?? throw new InvalidOperationException("GlmModel.AttachPrefixEncoder: the config has no pre_seq_len; pass the prefix length"),
            Config.PrefixProjection, rng);

    /// <summary>Attaches <paramref name="encoder"/> (the model takes ownership); freezes the base (spec §8).</summary>
    public GlmPrefixEncoder AttachPrefixEncoder(GlmPrefixEncoder encoder)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(encoder);
        if (Prefix is not null) throw new InvalidOperationException("GlmModel.AttachPrefixEncoder: a prefix encoder is already attached; detach it first");
        int w = 2 * Config.NumLayers * Config.HiddenSize;
        if (encoder.Width != w) throw new ArgumentException($"GlmModel.AttachPrefixEncoder: the encoder produces width {encoder.Width}, the model needs 2·L·H = {w}");
        SetBaseTrainable(false);
        Prefix = encoder;
        return encoder;
    }

    /// <summary>Removes the prefix encoder and hands it to the caller.</summary>
    public GlmPrefixEncoder? DetachPrefixEncoder()
    {
        ThrowIfDisposed();
        var p = Prefix;
        Prefix = null;
        return p;
    }

    // ------------------------------------------------------------------ forward

    /// <summary>Logits [B, S, V] F32 for a batch built by <see cref="GlmInputs.Build"/>.</summary>
    public Tensor Forward(GlmInputs inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        return Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, IdsChecked(inputs));
    }

    /// <summary>
    /// Logits [B, S, V] F32 from token ids [B, S] I32, position ids [B, 2, S] I32 and the attention mask
    /// [B, S, S] U8 (1 = blocked; the P-Tuning prefix columns are always visible and need no mask entries).
    /// </summary>
    public Tensor Forward(Tensor ids, Tensor positionIds, Tensor mask) => Forward(ids, positionIds, mask, idsChecked: false);

    /// <summary>Whether <see cref="GlmInputs.Build"/> checked the inputs' ids against a vocabulary this model's table covers.</summary>
    private bool IdsChecked(GlmInputs inputs) => inputs.CheckedVocabSize > 0 && inputs.CheckedVocabSize <= _params[EmbeddingKey].Shape[0];

    private Tensor Forward(Tensor ids, Tensor positionIds, Tensor mask, bool idsChecked)
    {
        ArgumentNullException.ThrowIfNull(mask);
        var (batch, _) = CheckInputs("GlmModel.Forward", ids, positionIds, mask, "[B, S, S], 1 = blocked");

        var embedding = _params[EmbeddingKey];
        var h = Ops.Cast(Ops.Embedding(ids, embedding, idsChecked), ActivationDType); // a no-op for F32
        var prefix = PrefixKeyValues(batch);
        var generators = Lora is { Merged: false } && Training && Lora.Settings.Dropout > 0 ? new[] { Rng } : [];
        for (int i = 0; i < Config.NumLayers; i++)
        {
            int layer = i;
            var (pk, pv) = prefix is null ? (null, null) : prefix[i];
            Tensor Run(Tensor x) => Block(layer, x, positionIds, mask, pk, pv);
            h = GradientCheckpointing && GradMode.IsEnabled ? Checkpoint.Run(Run, h, generators) : Run(h);
        }
        return Head(h);
    }

    /// <summary>Validates ids [B, S] I32, positions [B, 2, S] I32 and an optional mask [B, S, S] U8; returns (B, S).</summary>
    private (int Batch, int Seq) CheckInputs(string op, Tensor ids, Tensor positionIds, Tensor? mask, string maskLayout)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(positionIds);
        Ops.ExpectDType(op, "ids", ids, DType.I32);
        Ops.ExpectRank(op, "ids", ids, 2, "[B, S]");
        int batch = ids.Shape[0], seq = ids.Shape[1];
        Ops.ExpectDType(op, "positionIds", positionIds, DType.I32);
        Ops.ExpectShape(op, "positionIds", positionIds, new Shape(batch, 2, seq), "[B, 2, S]");
        if (mask is not null)
        {
            Ops.ExpectDType(op, "mask", mask, DType.U8);
            Ops.ExpectShape(op, "mask", mask, new Shape(batch, seq, seq), maskLayout);
        }
        return (batch, seq);
    }

    /// <summary>
    /// Final LayerNorm and the lm_head tied to the embedding (no bias); the logits are F32 whatever the activations. A
    /// cached step over a 16-bit cache hands a head of that dtype LayerNorm's 16-bit copy (as the blocks' linears get
    /// theirs), which the GEMM would otherwise round in a pass of its own.
    /// </summary>
    private Tensor Head(Tensor h, GlmKvCache? cache = null)
    {
        Tensor w = _params["transformer.final_layernorm.weight"], b = _params["transformer.final_layernorm.bias"], table = _params[EmbeddingKey];
        if (cache is { DType: not DType.F32 } c && table.DType == c.DType && !GradMode.IsEnabled)
        {
            Ops.LayerNorm(h, w, b, Config.LayerNormEpsilon, c.DType, out var h16);
            return Ops.Linear(h16, table, outputDType: DType.F32);
        }
        h = Ops.LayerNorm(h, w, b, Config.LayerNormEpsilon);
        return Ops.Linear(h, table, outputDType: DType.F32);
    }

    /// <summary>
    /// A fresh KV cache for <paramref name="batch"/> sequences (spec §4.2). When a P-Tuning prefix encoder is attached
    /// its per-layer keys and values are the initial content (§8: "past = prefix"), computed now in evaluation mode.
    /// </summary>
    public GlmKvCache CreateCache(int batch = 1)
    {
        ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        var cache = new GlmKvCache(Config, batch, Device, KvCacheDType!.Value);
        if (Prefix is null) return cache;
        using (GradMode.NoGrad())
        using (TensorScope.Begin())
        {
            bool training = Training;
            Training = false; // no prefix dropout when serving
            try
            {
                var prefix = PrefixKeyValues(batch)!;
                for (int i = 0; i < Config.NumLayers; i++) cache.Write(i, prefix[i].K, prefix[i].V);
            }
            finally { Training = training; }
        }
        cache.Advance(Prefix.Length);
        cache.PrefixLength = Prefix.Length;
        return cache;
    }

    /// <summary>
    /// Incremental forward (spec §4.2): runs the new tokens <paramref name="ids"/> [B, S] I32 with positions
    /// [B, 2, S] I32 against every past key of <paramref name="cache"/> (visible, prefix included, except the left pads
    /// declared with <see cref="GlmKvCache.SetLeftPadding"/>), then appends their keys (after rotary) and values to
    /// the cache. <paramref name="mask"/> [B, S, S] U8 (1 = blocked) covers the new tokens among themselves: the
    /// prompt pass uses the prompt's prefix-LM mask (§4.1, pads blocked as <see cref="GlmInputs"/> builds it); a
    /// single-token step needs none (null). Runs without gradients. Returns logits [B, S, V] F32, or [B, 1, V] for
    /// the last position only when <paramref name="lastOnly"/> (what generation needs: it skips the LM head on the
    /// rest of the prompt).
    /// </summary>
    public Tensor Forward(Tensor ids, Tensor positionIds, Tensor? mask, GlmKvCache cache, bool lastOnly = false) =>
        Forward(ids, positionIds, mask, cache, lastOnly, idsChecked: false);

    /// <summary>The cached forward of a prompt batch built by <see cref="GlmInputs.Build"/> (whose ids it checked).</summary>
    internal Tensor Forward(GlmInputs inputs, GlmKvCache cache, bool lastOnly) =>
        Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, cache, lastOnly, IdsChecked(inputs));

    /// <summary>
    /// One decoding step of <paramref name="ids"/>.Length rows, one new token each (host arrays: the token of row b
    /// and its two position ids at 2b, 2b + 1): the tokens are checked against the vocabulary here, and tokens,
    /// positions and the past's pad mask (a left-padded batch's) cross to the device in one copy, so the step costs a
    /// single upload and the embedding no device check (each a round trip on a GPU). Returns logits [B, 1, V] F32.
    /// </summary>
    internal Tensor ForwardStep(ReadOnlySpan<int> ids, ReadOnlySpan<int> positions, GlmKvCache cache) =>
        ForwardStep(ids, positions, cache, default, out _);

    /// <summary>
    /// <see cref="ForwardStep(ReadOnlySpan{int}, ReadOnlySpan{int}, GlmKvCache)"/> that also takes
    /// <paramref name="alongside"/> to the device in the same copy (the step's sampling inputs), returned as
    /// <paramref name="alongsideOnDevice"/> (I32, null when empty).
    /// </summary>
    internal Tensor ForwardStep(ReadOnlySpan<int> ids, ReadOnlySpan<int> positions, GlmKvCache cache, ReadOnlySpan<int> alongside,
        out Tensor? alongsideOnDevice)
    {
        int batch = ids.Length, rows = _params[EmbeddingKey].Shape[0];
        if (positions.Length != 2 * batch) throw new ArgumentException($"GlmModel.ForwardStep: {positions.Length} position ids for {batch} rows (two each)");
        // ids, positions, the picking's inputs, then the past's pad mask as bytes (a left-padded batch's).
        var pastMask = cache.PastMaskBytes();
        int ints = 3 * batch + alongside.Length;
        var packed = new int[ints + ((pastMask?.Length ?? 0) + 3) / 4];
        for (int b = 0; b < batch; b++)
        {
            if ((uint)ids[b] >= (uint)rows)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[b], $"Embedding: ids[{b}] = {ids[b]} is outside the table's {rows} rows");
            packed[b] = ids[b];
        }
        positions.CopyTo(packed.AsSpan(batch));
        alongside.CopyTo(packed.AsSpan(3 * batch));
        pastMask?.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(packed.AsSpan(ints)));
        using var input = Tensor.FromArray(packed, new Shape(packed.Length), Device);
        using var idTensor = input.Reinterpret(DType.I32, new Shape(batch, 1), 0);
        using var posTensor = input.Reinterpret(DType.I32, new Shape(batch, 2, 1), batch);
        using var pastMaskTensor = pastMask is null ? null : input.Reinterpret(DType.U8, new Shape(batch, cache.Length), 4L * ints);
        alongsideOnDevice = alongside.IsEmpty ? null : input.Reinterpret(DType.I32, new Shape(alongside.Length), 3 * batch);
        return Forward(idTensor, posTensor, null, cache, lastOnly: true, idsChecked: true, pastMaskTensor, pastMaskGiven: true);
    }

    // pastMaskGiven: the caller passes the cache's past mask (pastMask, null for none) instead of this making it.
    private Tensor Forward(Tensor ids, Tensor positionIds, Tensor? mask, GlmKvCache cache, bool lastOnly, bool idsChecked,
        Tensor? pastMask = null, bool pastMaskGiven = false)
    {
        const string op = "GlmModel.Forward(cache)";
        ArgumentNullException.ThrowIfNull(cache);
        var (batch, seq) = CheckInputs(op, ids, positionIds, mask, "[B, S, S] over the new tokens, 1 = blocked");
        if (cache.Batch != batch) throw new ArgumentException($"{op}: the cache holds {cache.Batch} sequences, ids have {batch}");
        if (!ReferenceEquals(cache.Config, Config) && cache.Config != Config) throw new ArgumentException($"{op}: the cache was made for another model config");
        if (cache.Device != Device) throw new ArgumentException($"{op}: the cache is on {cache.Device}, the model on {Device}");
        if (Prefix is not null && cache.PrefixLength != Prefix.Length)
            throw new ArgumentException($"{op}: the model has a {Prefix.Length}-token prefix but the cache starts with {cache.PrefixLength} prefix positions; create it with CreateCache after attaching the prefix");

        using var _ = GradMode.NoGrad(); // the cache copies are outside autograd anyway
        var embedding = _params[EmbeddingKey];
        var h = Ops.Embedding(ids, embedding, idsChecked);
        if (!pastMaskGiven) pastMask = cache.PastMask(); // one [B, P] upload, shared by every layer
        cache.Reserve(seq); // before the past views are taken: the blocks write their keys and values after them
        for (int i = 0; i < Config.NumLayers; i++)
        {
            var (pk, pv) = cache.Past(i);
            h = Block(i, h, positionIds, mask, pk, pv, cache, pastMask);
        }
        cache.Advance(seq);
        if (lastOnly && seq > 1) h = h.Narrow(1, seq - 1, 1);
        return Head(h, cache);
    }

    /// <summary>
    /// Per layer the prefix key and value [B, N, nh, d] (spec §8): the encoder's [N, 2LH] table repeated over the
    /// batch, dropout while training, viewed [B, N, 2L, nh, d]; layer i takes slices 2i (key) and 2i + 1 (value).
    /// </summary>
    private (Tensor K, Tensor V)[]? PrefixKeyValues(int batch)
    {
        if (Prefix is null) return null;
        int n = Prefix.Length, nh = Config.NumAttentionHeads, d = Config.HeadDim, layers = Config.NumLayers;
        var table = GlmPrefixEncoder.BroadcastBatch(Prefix.Forward(), batch);
        table = Ops.Dropout(table, PrefixDropout, Rng, Training);
        var view = table.Reshape(batch, n, 2 * layers, nh, d);
        var result = new (Tensor, Tensor)[layers];
        for (int i = 0; i < layers; i++)
            result[i] = (view.Narrow(2, 2 * i, 1).Reshape(batch, n, nh, d), view.Narrow(2, 2 * i + 1, 1).Reshape(batch, n, nh, d));
        return result;
    }

    private Tensor Block(int layer, Tensor x, Tensor positionIds, Tensor? mask, Tensor? prefixK, Tensor? prefixV, GlmKvCache? cache = null,
        Tensor? pastMask = null)
    {
        var p = _layerKeys[layer];
        Tensor P(int j) => _params[p[j]];
        // The cache's 16-bit dtype when a cached step may hand the linear at weight slot j a 16-bit input: a plain
        // (not quantized, not under an unmerged adapter) weight of that dtype; else null.
        DType? Sixteen(int j, bool lora) => cache is { DType: not DType.F32 } c && !(lora && Lora is { Merged: false })
            && !_quantized.ContainsKey(p[j]) && P(j).DType == c.DType ? c.DType : null;
        int batch = x.Shape[0], seq = x.Shape[1], nh = Config.NumAttentionHeads, d = Config.HeadDim, hidden = Config.HiddenSize;
        float eps = Config.LayerNormEpsilon, alpha = Config.Alpha;

        // A cached step over a 16-bit cache hands a plain GEMM whose weight has the cache's dtype a 16-bit input
        // written by the op before it (LayerNorm's copy, the attention's output, the GELU's): on a GPU the GEMM would
        // round an fp32 input to the same values in a pass of its own. The residual stream stays fp32.
        Tensor? a16 = null, m16 = null;
        var a = Sixteen(QkvW, lora: true) is { } t1 ? Ops.LayerNorm(x, P(Ln1W), P(Ln1B), eps, t1, out a16) : Ops.LayerNorm(x, P(Ln1W), P(Ln1B), eps);
        Tensor qkv;
        if (Lora is { Merged: false } lora)
        {
            var (la, lb) = lora.Layers[layer];
            float drop = Training ? lora.Settings.Dropout : 0f;
            qkv = _quantized.TryGetValue(p[QkvW], out var q)
                ? Ops.LoraLinear(a, q, P(QkvB), la, lb, lora.Scaling, lora.Groups, drop, drop > 0 ? Rng : null, WeightDType)
                : Ops.LoraLinear(a, P(QkvW), P(QkvB), la, lb, lora.Scaling, lora.Groups, drop, drop > 0 ? Rng : null);
        }
        else qkv = LayerLinear(layer, QkvW, a16 ?? a, withBias: cache is null, outputDType: x.DType); // a cached step adds the bias in its QKV split
        // Per-head interleaved rows (spec §3.3): head h's q, k, v are rows [3dh, 3dh + d), [.. + d, .. + 2d), [.. + 2d, .. + 3d).
        var heads = qkv.Reshape(batch, seq, nh, 3 * d);
        Tensor context;
        if (cache is null)
        {
            // Split, rotary and attention in one op: no copies of the slices, one QKV gradient in backward.
            context = Ops.GlmSelfAttention(heads, positionIds, mask, layer + 1, prefixK, prefixV).Reshape(batch, seq, hidden);
            // The attention keeps its own q, k and v; no backward reads the projection itself.
            Release(heads, qkv);
        }
        else
        {
            // The new keys and values go straight into the cache's slots; attention reads them there, in its dtype.
            var (newKeys, newValues) = cache.Slots(layer, seq);
            context = Ops.GlmCachedSelfAttention(heads, positionIds, mask, layer + 1, prefixK, prefixV, pastMask, newKeys, newValues,
                qkvBias: Lora is { Merged: false } ? null : P(QkvB)).Reshape(batch, seq, hidden);
            newKeys.Dispose();
            newValues.Dispose();
            // The context is in the cache's dtype, which a plain weight of that dtype takes, and so does a quantized one
            // (the fused matrix-vector kernel widens it; the GEMM path de-quantizes into WeightDType); fp32 takes fp32.
            bool takes16 = _quantized.ContainsKey(p[DenseW]) ? WeightDType == context.DType : P(DenseW).DType == context.DType;
            if (context.DType != DType.F32 && !takes16) context = Ops.Cast(context, DType.F32);
        }
        // Each residual add takes its linear's bias (the linear writes its fp32 product): one pass for bias, the
        // rounding to the activation dtype and the add, the same values as the three.
        var o = LayerLinear(layer, DenseW, context, withBias: false, outputDType: DType.F32);
        var h = Ops.AddScaledWithBias(a, alpha, o, P(DenseB));
        Release(o); // neither the dense linear nor the residual add reads it in backward
        var m = Sixteen(H4W, lora: false) is { } t2 ? Ops.LayerNorm(h, P(Ln2W), P(Ln2B), eps, t2, out m16) : Ops.LayerNorm(h, P(Ln2W), P(Ln2B), eps);
        // dense_h_to_4h's bias is added inside the GELU pass (one pass over [tokens, 4h] fewer, same result bit for bit).
        var gelu = Ops.BiasGelu(LayerLinear(layer, H4W, m16 ?? m, withBias: false, outputDType: h.DType), P(H4W + 1), Sixteen(FourHW, lora: false));
        var mlp = LayerLinear(layer, FourHW, gelu, withBias: false, outputDType: DType.F32);
        // A frozen linear's backward reads its weight, not its input (dx = dy·W): with dense_4h_to_h frozen the
        // [tokens, 4h] GELU output goes now, and with dense_h_to_4h frozen so does m after the residual add below.
        if (!InputKeptForBackward(layer, FourHW)) Release(gelu);
        var y = Ops.AddScaledWithBias(m, alpha, mlp, P(FourHB));
        Release(mlp);
        if (!InputKeptForBackward(layer, H4W)) Release(m);
        return y;
    }

    /// <summary>
    /// Test switch: false keeps every intermediate of a block until the step's scope ends (to measure what
    /// <see cref="Release"/> saves).
    /// </summary>
    internal bool ReleaseIntermediates { get; set; } = true;

    /// <summary>
    /// Frees block intermediates that no backward reads once the forward is done with them (the scope would keep them
    /// to the end of the step): with LoRA or P-Tuning on a frozen base that is 10 of the block's 23 hidden-sized
    /// activations per token (the QKV projection, the dense output, the GELU output, the MLP output and the second
    /// LayerNorm's output). The graph still holds the tensor objects (their shapes), not their memory.
    /// </summary>
    private void Release(params Tensor[] tensors)
    {
        if (!ReleaseIntermediates) return;
        foreach (var t in tensors) t.Dispose();
    }

    /// <summary>Whether the linear in weight slot <paramref name="slot"/> of <paramref name="layer"/> keeps its input for a weight gradient.</summary>
    private bool InputKeptForBackward(int layer, int slot) =>
        GradMode.IsEnabled && _params.TryGetValue(_layerKeys[layer][slot], out var w) && w.RequiresGrad;

    // ------------------------------------------------------------------ loss

    /// <summary>Training loss of a batch whose <see cref="GlmInputs.Labels"/> are set (see <see cref="LanguageModelLoss"/>).</summary>
    public Tensor Loss(GlmInputs inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var labels = inputs.Labels ?? throw new ArgumentException("GlmModel.Loss: the inputs have no labels (pass them to GlmInputs.Build)");
        var logits = Forward(inputs);
        if (inputs.Targets is not { } targets) return LanguageModelLoss(logits, labels);
        // The shifted targets came up with the ids and are known on the host: no labels go down and back up.
        int batch = logits.Shape[0], seq = logits.Shape[1];
        return Ops.CrossEntropy(logits.Reshape(batch * seq, logits.Shape[2]), targets, inputs.HostTargets!);
    }

    /// <summary>
    /// Causal-LM loss (spec §5.1): logits [B, S, V] at position t predict labels[:, t + 1]; mean cross-entropy over
    /// the labels that are not −100. The last position predicts nothing.
    /// </summary>
    public static Tensor LanguageModelLoss(Tensor logits, Tensor labels)
    {
        const string op = "GlmModel.LanguageModelLoss";
        Ops.ExpectRank(op, "logits", logits, 3, "[B, S, V]");
        int batch = logits.Shape[0], seq = logits.Shape[1], vocab = logits.Shape[2];
        Ops.ExpectDType(op, "labels", labels, DType.I32);
        Ops.ExpectShape(op, "labels", labels, new Shape(batch, seq), "[B, S]");
        var l = labels.ToIntArray();
        var shifted = new int[batch * seq];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seq; t++)
                shifted[b * seq + t] = t + 1 < seq ? l[b * seq + t + 1] : -100;
        var target = Tensor.FromArray(shifted, new Shape(batch * seq), logits.Device);
        return Ops.CrossEntropy(logits.Reshape(batch * seq, vocab), target);
    }

    // ------------------------------------------------------------------ lifetime

    private void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(GlmModel));
    }

    /// <summary>Releases every parameter (and gradient), the adapter and the prefix encoder.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _params.Values) { t.Grad?.Dispose(); t.Dispose(); }
        foreach (var q in _quantized.Values) q.Dispose();
        Lora?.Dispose();
        Prefix?.Dispose();
    }
}
