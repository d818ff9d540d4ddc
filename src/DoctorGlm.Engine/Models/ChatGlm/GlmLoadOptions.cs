namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// How <see cref="GlmModel.Load(GlmConfig, IO.ITensorSource, GlmLoadOptions, Device?)"/> and
/// <see cref="GlmModel.FromPretrained(string, GlmLoadOptions, Device?)"/> store what they read. Everything here is
/// applied one weight at a time as the checkpoint streams in, so the full-precision model never exists in memory:
/// ChatGLM-6B from its fp16 checkpoint with <c>QuantizeBits = 4</c> peaks at the INT4 model plus one weight matrix
/// (about 5 GB with an fp32 embedding), where loading and then calling <see cref="GlmModel.Quantize"/> peaks at the
/// fp32 model (25 GB) or the bf16 one (12 GB).
/// </summary>
public sealed record GlmLoadOptions
{
    /// <summary>Whether the base parameters require gradients (full fine-tuning; needs F32 weights and no quantization).</summary>
    public bool Trainable { get; init; }

    /// <summary>Storage type of the weight matrices that stay in floating point: F32 (default), BF16 or F16.</summary>
    public DType WeightDType { get; init; } = DType.F32;

    /// <summary>
    /// 0 (default), 8 or 4: quantize the four linears of every block with ChatGLM's weight-only scheme (spec §10) as
    /// each is read — bit for bit what <see cref="GlmModel.Quantize"/> makes of the same model loaded with
    /// <see cref="WeightDType"/>. A pre-quantized checkpoint (quantization_bit in config.json) must name the same bits.
    /// </summary>
    public int QuantizeBits { get; init; }

    /// <summary>
    /// A LoRA adapter folder (HF PEFT or DoctorGLM's deep_training form, see
    /// <see cref="IO.Adapters.LoraAdapters.Load"/>) to fold into each layer's <c>query_key_value</c> weight as it is
    /// read (W += s·B·A, before any quantization): the same weights as <see cref="GlmModel.LoadLoraAdapter"/> followed by
    /// <see cref="GlmModel.MergeLora"/>, but no adapter stays attached. Layers the adapter has no weights for (PEFT's
    /// layers_to_transform) are left as they are. Refused with a pre-quantized checkpoint.
    /// </summary>
    public string? MergeLoraAdapter { get; init; }

    /// <summary>
    /// Told after each tensor is read (and quantized): how many of how many, and the bytes read so far of the
    /// checkpoint's total — the 6B model takes tens of seconds to load, which a front end shows as a progress bar.
    /// Called on the loading thread.
    /// </summary>
    public IProgress<GlmLoadProgress>? Progress { get; init; }

    // WeightDType and Trainable are checked with the other loaders' (GlmModel.CheckWeightDType).
    internal void Validate(GlmConfig config, string op)
    {
        if (QuantizeBits is not (0 or 8 or 4))
            throw new ArgumentException($"{op}: QuantizeBits {QuantizeBits} must be 0, 8 or 4");
        if (QuantizeBits != 0 && Trainable)
            throw new ArgumentException($"{op}: quantized weights are frozen; QuantizeBits {QuantizeBits} cannot be combined with Trainable");
        if (QuantizeBits != 0 && config.QuantizationBit != 0 && QuantizeBits != config.QuantizationBit)
            throw new ArgumentException($"{op}: the checkpoint is pre-quantized to INT{config.QuantizationBit} (quantization_bit in config.json); QuantizeBits {QuantizeBits} asks for INT{QuantizeBits}");
        if (QuantizeBits == 4 && (config.HiddenSize % 2 != 0 || config.InnerHiddenSize % 2 != 0))
            throw new ArgumentException($"{op}: INT4 packs two columns per byte and needs even hidden and inner sizes");
        if (MergeLoraAdapter is not null && config.QuantizationBit != 0)
            throw new ArgumentException($"{op}: a LoRA adapter cannot be merged into a pre-quantized checkpoint (INT{config.QuantizationBit}); merge it into the fp16 model and quantize that (QuantizeBits)");
    }
}

/// <summary>Where a load stands (<see cref="GlmLoadOptions.Progress"/>).</summary>
/// <param name="Tensors">Tensors read so far.</param>
/// <param name="TotalTensors">Tensors to read.</param>
/// <param name="Bytes">Checkpoint bytes read so far (at the stored dtype).</param>
/// <param name="TotalBytes">Checkpoint bytes to read.</param>
/// <param name="Name">The tensor just read.</param>
public readonly record struct GlmLoadProgress(int Tensors, int TotalTensors, long Bytes, long TotalBytes, string Name);
