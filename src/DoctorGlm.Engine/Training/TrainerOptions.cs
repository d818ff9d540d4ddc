using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Training;

/// <summary>What is trained (spec §8, §9, §11).</summary>
public enum TrainingMethod
{
    /// <summary>LoRA on <c>query_key_value</c>; the base is frozen and only A and B train (§9).</summary>
    Lora,

    /// <summary>P-Tuning v2: only the prefix encoder trains (§8).</summary>
    PTuning,

    /// <summary>Every base parameter trains (full fine-tuning, or from-scratch training of a random init).</summary>
    Full,
}

/// <summary>The optimizer.</summary>
public enum OptimizerKind
{
    /// <summary>AdamW (HF Trainer's default).</summary>
    AdamW,

    /// <summary>Lion (DoctorGLM's LoRA run).</summary>
    Lion,
}

/// <summary>The learning-rate schedule after warm-up.</summary>
public enum ScheduleKind
{
    /// <summary>Linear decay to 0 at the last step (HF Trainer's default).</summary>
    Linear,

    /// <summary>Half-cosine decay to 0 at the last step.</summary>
    Cosine,

    /// <summary>Constant after warm-up.</summary>
    Constant,
}

/// <summary>
/// Settings of a <see cref="Trainer"/> run. Every field has the official script's or DoctorGLM's default where one
/// exists; <see cref="Validate"/> reports the first inconsistent one by its command-line name.
/// </summary>
public sealed record TrainerOptions
{
    /// <summary>What trains (<c>--method</c>).</summary>
    public TrainingMethod Method { get; init; } = TrainingMethod.Lora;

    /// <summary>LoRA rank r (<c>--lora-rank</c>).</summary>
    public int LoraRank { get; init; } = 8;

    /// <summary>LoRA alpha; the update is scaled by alpha / r (<c>--lora-alpha</c>).</summary>
    public float LoraAlpha { get; init; } = 32f;

    /// <summary>Dropout on the LoRA branch's input (<c>--lora-dropout</c>).</summary>
    public float LoraDropout { get; init; } = 0.1f;

    /// <summary>LoRA target module (<c>--lora-target</c>); only <c>query_key_value</c> exists in the engine.</summary>
    public string LoraTarget { get; init; } = "query_key_value";

    /// <summary>DoctorGLM's grouped loralib form, enable_lora [T, F, T] (§9.1), instead of PEFT ≥ 0.3's full rows (<c>--lora-grouped</c>).</summary>
    public bool LoraGrouped { get; init; }

    /// <summary>P-Tuning prefix length N (<c>--pre-seq-len</c>).</summary>
    public int PreSeqLen { get; init; } = 128;

    /// <summary>P-Tuning prefix encoder with the MLP projection (<c>--prefix-projection</c>).</summary>
    public bool PrefixProjection { get; init; }

    /// <summary>max_source_length: prompt ids are cut to this − 1 (<c>--max-source-length</c>).</summary>
    public int MaxSourceLength { get; init; } = 64;

    /// <summary>max_target_length: answer ids are cut to this − 2 (<c>--max-target-length</c>).</summary>
    public int MaxTargetLength { get; init; } = 128;

    /// <summary>The optimizer (<c>--optimizer</c>).</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;

    /// <summary>Peak learning rate (<c>--lr</c>).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Decoupled weight decay (<c>--weight-decay</c>).</summary>
    public double WeightDecay { get; init; }

    /// <summary>Schedule after warm-up (<c>--schedule</c>).</summary>
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Linear;

    /// <summary>Linear warm-up steps from 0 (<c>--warmup-steps</c>).</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Sequences per micro-batch (<c>--batch-size</c>).</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Micro-batches per optimizer step (<c>--grad-accum</c>).</summary>
    public int GradientAccumulation { get; init; } = 1;

    /// <summary>Global-norm gradient clipping; 0 turns it off (<c>--max-grad-norm</c>).</summary>
    public float MaxGradNorm { get; init; } = 1f;

    /// <summary>Passes over the training data, used when <see cref="MaxSteps"/> is 0 (<c>--epochs</c>).</summary>
    public double Epochs { get; init; } = 1;

    /// <summary>Optimizer steps; 0 derives them from <see cref="Epochs"/> (<c>--max-steps</c>).</summary>
    public int MaxSteps { get; init; }

    /// <summary>Seed of the data order, the adapter's initialisation and every dropout mask (<c>--seed</c>).</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Recompute each GLM block in backward (§11) (<c>--gradient-checkpointing</c>).</summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>
    /// Storage type of the activations while training and evaluating the loss: F32, or BF16 / F16 for half the
    /// activation memory (<see cref="Models.ChatGlm.GlmModel.ActivationDType"/>; <c>--activations</c>).
    /// </summary>
    public DType ActivationDType { get; init; } = DType.F32;

    /// <summary>Write a checkpoint every N optimizer steps; 0 only at the end and on cancellation (<c>--save-steps</c>).</summary>
    public int SaveSteps { get; init; }

    /// <summary>
    /// Evaluate the held-out loss every N optimizer steps as well as before and after training (HF's
    /// <c>evaluation_strategy="steps"</c>); 0 only before and after (<c>--eval-steps</c>). The losses go to
    /// <c>eval.csv</c> and <c>loss.png</c>; training itself is unchanged (evaluation leaves the RNG as it was).
    /// </summary>
    public int EvalSteps { get; init; }

    /// <summary>
    /// Export the trained part (adapter, prefix or model) into <c>OUTPUT/best</c>, with <c>best.json</c>, whenever an
    /// evaluation (before, every <see cref="EvalSteps"/>, after) reaches a new low of the held-out loss: the checkpoint
    /// HF's <c>load_best_model_at_end</c> would pick (<c>--save-best</c>).
    /// </summary>
    public bool SaveBest { get; init; }

    /// <summary>Evaluation micro-batch size (<c>--eval-batch-size</c>).</summary>
    public int EvalBatchSize { get; init; } = 8;

    /// <summary>Optimizer steps a run of <paramref name="trainSamples"/> sequences takes.</summary>
    public int TotalSteps(int trainSamples)
    {
        if (MaxSteps > 0) return MaxSteps;
        long perStep = (long)BatchSize * GradientAccumulation;
        return (int)Math.Max(1, Math.Ceiling(Epochs * trainSamples / perStep));
    }

    /// <summary>The LoRA settings these options describe.</summary>
    public LoraSettings LoraSettings => new(LoraRank, LoraAlpha, LoraDropout, LoraGrouped ? [true, false, true] : null);

    /// <summary>Throws <see cref="ArgumentException"/> naming the option (as on the command line) when a value is unusable.</summary>
    public TrainerOptions Validate()
    {
        static void Fail(string option, object? value, string why) => throw new ArgumentException($"{option} {value}: {why}");
        if (!Enum.IsDefined(Method)) Fail("--method", Method, "must be lora, ptuning or full");
        if (!Enum.IsDefined(Optimizer)) Fail("--optimizer", Optimizer, "must be adamw or lion");
        if (!Enum.IsDefined(Schedule)) Fail("--schedule", Schedule, "must be linear, cosine or constant");
        if (Method == TrainingMethod.Lora)
        {
            if (LoraRank <= 0) Fail("--lora-rank", LoraRank, "must be positive");
            if (!(LoraAlpha > 0) || !float.IsFinite(LoraAlpha)) Fail("--lora-alpha", LoraAlpha, "must be finite and positive");
            if (!(LoraDropout >= 0 && LoraDropout < 1)) Fail("--lora-dropout", LoraDropout, "must be in [0, 1)");
            if (LoraTarget != "query_key_value") Fail("--lora-target", LoraTarget, "only query_key_value is supported (ChatGLM's fused attention projection, spec §9)");
        }
        if (Method == TrainingMethod.PTuning && PreSeqLen <= 0) Fail("--pre-seq-len", PreSeqLen, "must be positive");
        if (MaxSourceLength < 2) Fail("--max-source-length", MaxSourceLength, "must be at least 2");
        if (MaxTargetLength < 3) Fail("--max-target-length", MaxTargetLength, "must be at least 3 (<sop>, one answer token, <eop>)");
        if (!double.IsFinite(LearningRate) || LearningRate <= 0) Fail("--lr", LearningRate, "must be finite and positive");
        if (!double.IsFinite(WeightDecay) || WeightDecay < 0) Fail("--weight-decay", WeightDecay, "must be finite and non-negative");
        if (WarmupSteps < 0) Fail("--warmup-steps", WarmupSteps, "must be non-negative");
        if (BatchSize <= 0) Fail("--batch-size", BatchSize, "must be positive");
        if (EvalBatchSize <= 0) Fail("--eval-batch-size", EvalBatchSize, "must be positive");
        if (GradientAccumulation <= 0) Fail("--grad-accum", GradientAccumulation, "must be positive");
        if (MaxGradNorm < 0 || !float.IsFinite(MaxGradNorm)) Fail("--max-grad-norm", MaxGradNorm, "must be finite and non-negative (0 = no clipping)");
        if (MaxSteps < 0) Fail("--max-steps", MaxSteps, "must be non-negative (0 = from --epochs)");
        if (MaxSteps == 0 && !(Epochs > 0 && double.IsFinite(Epochs))) Fail("--epochs", Epochs, "must be finite and positive when --max-steps is 0");
        if (SaveSteps < 0) Fail("--save-steps", SaveSteps, "must be non-negative (0 = only at the end)");
        if (EvalSteps < 0) Fail("--eval-steps", EvalSteps, "must be non-negative (0 = only before and after training)");
        if (ActivationDType is not (DType.F32 or DType.BF16 or DType.F16)) Fail("--activations", ActivationDType, "must be bf16, fp16 or fp32");
        return this;
    }

    /// <summary>Parses <c>lora</c>, <c>ptuning</c> (or <c>p-tuning</c>) and <c>full</c>, naming the option on failure.</summary>
    public static TrainingMethod ParseMethod(string text) => text.Trim().ToLowerInvariant() switch
    {
        "lora" => TrainingMethod.Lora,
        "ptuning" or "p-tuning" => TrainingMethod.PTuning,
        "full" => TrainingMethod.Full,
        _ => throw new ArgumentException($"--method {text}: must be lora, ptuning or full"),
    };

    /// <summary>Parses <c>adamw</c> and <c>lion</c>.</summary>
    public static OptimizerKind ParseOptimizer(string text) => text.Trim().ToLowerInvariant() switch
    {
        "adamw" => OptimizerKind.AdamW,
        "lion" => OptimizerKind.Lion,
        _ => throw new ArgumentException($"--optimizer {text}: must be adamw or lion"),
    };

    /// <summary>Parses <c>linear</c>, <c>cosine</c> and <c>constant</c>.</summary>
    public static ScheduleKind ParseSchedule(string text) => text.Trim().ToLowerInvariant() switch
    {
        "linear" => ScheduleKind.Linear,
        "cosine" => ScheduleKind.Cosine,
        "constant" => ScheduleKind.Constant,
        _ => throw new ArgumentException($"--schedule {text}: must be linear, cosine or constant"),
    };

    /// <summary>Parses the storage dtype names <c>fp32</c>, <c>fp16</c>, <c>bf16</c> (also <c>float32</c>, <c>float16</c>, <c>bfloat16</c>), naming <paramref name="option"/> on failure.</summary>
    public static DType ParseDType(string text, string option = "--dtype") => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => DType.F32,
        "fp16" or "float16" or "f16" or "half" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new ArgumentException($"{option} {text}: must be bf16, fp16 or fp32"),
    };

    /// <summary>
    /// A weight storage type for the samples' <c>--dtype</c>: bf16, fp16, fp32, or <c>auto</c> — fp32, but bf16 when
    /// the block linears are INT8/INT4: quantized while loading (<paramref name="quantizeBits"/>) or already in the
    /// checkpoint (<c>quantization_bit</c> in <paramref name="modelFolder"/>'s config.json; a missing or bad file counts
    /// as not quantized and is left to the loader to report). The float weights left beside them, above all
    /// ChatGLM-6B's 130,528 × 4096 embedding that is also the head, then take 16 bits as THUDM's quantized checkpoints
    /// keep them: 1 GB instead of 2 for the 6B model, and a quarter fewer bytes for every decoded token to read.
    /// </summary>
    public static DType ParseWeightDType(string text, int quantizeBits, string? modelFolder, string option = "--dtype")
    {
        if (!text.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            try { return ParseDType(text, option); }
            catch (ArgumentException) { throw new ArgumentException($"{option} {text}: must be auto, bf16, fp16 or fp32"); }
        }
        return quantizeBits != 0 || IsPreQuantized(modelFolder) ? DType.BF16 : DType.F32;
    }

    private static bool IsPreQuantized(string? modelFolder)
    {
        string? path = modelFolder is null ? null : Path.Combine(modelFolder, "config.json");
        try { return path is not null && File.Exists(path) && GlmConfig.FromJson(path).QuantizationBit != 0; }
        catch (InvalidDataException) { return false; }
    }
}
