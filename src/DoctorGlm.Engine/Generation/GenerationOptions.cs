namespace DoctorGlm.Engine.Generation;

/// <summary>
/// Decoding settings of <see cref="GlmGenerator"/>, with the defaults of ChatGLM's <c>chat()</c> (spec §7): sampling
/// with temperature 0.95, top-p 0.7 and the hidden Hugging Face default top-k 50; max_length 2048 counting the prompt.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>HF <c>max_length</c>: generation stops when prompt + output reach this many tokens.</summary>
    public int MaxLength { get; init; } = 2048;

    /// <summary>HF <c>max_new_tokens</c>: when set, generation also stops after this many new tokens (the stop token
    /// counts as one, as in HF). Useful for a batch, whose prompts differ in length (<see cref="GlmGenerator.GenerateBatch"/>).</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>Sample from the warped distribution (true) or take the arg-max (greedy; warpers are then skipped, as in HF).</summary>
    public bool DoSample { get; init; } = true;

    /// <summary>Scores are divided by this before top-k/top-p (skipped when 1). Must be positive.</summary>
    public float Temperature { get; init; } = 0.95f;

    /// <summary>Keep the scores ≥ the k-th largest (0 disables). HF's default 50 applies to <c>chat()</c> too.</summary>
    public int TopK { get; init; } = 50;

    /// <summary>Nucleus sampling: keep the smallest set of best tokens whose probability exceeds this (1 disables).</summary>
    public float TopP { get; init; } = 0.7f;

    /// <summary>CTRL repetition penalty θ over every id already in the sequence (1 disables; DoctorGLM's notebooks use 10).</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>Seed of the sampling RNG; null draws a fresh one (HF uses torch's global generator).</summary>
    public ulong? Seed { get; init; }

    /// <summary>Stop token; null uses the model config's <c>eos_token_id</c> (DoctorGLM's P-Tuning notebook passes 130005).</summary>
    public int? EosTokenId { get; init; }

    /// <summary>Reuse past keys and values between steps (spec §4.2). False re-runs the whole sequence every step (slow; a reference path).</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Greedy decoding with every other default.</summary>
    public static GenerationOptions Greedy { get; } = new() { DoSample = false };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (MaxLength < 1) throw new ArgumentOutOfRangeException(nameof(MaxLength), MaxLength, "must be at least 1");
        if (MaxNewTokens is < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "must be at least 1 (null: only MaxLength limits)");
        if (!(Temperature > 0) || !float.IsFinite(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "must be a positive number");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "must be ≥ 0 (0 disables top-k)");
        if (!(TopP >= 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "must be in [0, 1] (1 disables top-p)");
        if (!(RepetitionPenalty > 0) || !float.IsFinite(RepetitionPenalty)) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "must be a positive number (1 disables it)");
    }
}
