using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Generation;

/// <summary>
/// Token generation with a <see cref="GlmModel"/> (spec §4.2, §7): one unpadded prompt ending in [gMASK] &lt;sop&gt;,
/// greedy or sampled, stopping at the eos id or at <see cref="GenerationOptions.MaxLength"/> tokens in total.
/// </summary>
/// <remarks>
/// Each step runs inside its own <see cref="TensorScope"/> and <see cref="GradMode.NoGrad"/> region that close
/// before the token is handed out, so a consumer may do anything (even continue on another thread) between tokens;
/// only the KV cache outlives a step, and it is released when the enumeration ends or is disposed.
/// The model must be in evaluation mode (<see cref="GlmModel.Training"/> false): LoRA and prefix dropout would
/// otherwise perturb every step.
/// </remarks>
public sealed class GlmGenerator
{
    /// <summary>Wraps <paramref name="model"/> (not owned).</summary>
    public GlmGenerator(GlmModel model)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
    }

    /// <summary>The model.</summary>
    public GlmModel Model { get; }

    /// <summary>The token InvalidScoreLogitsProcessor forces: "▁" = 5 plus the image-token offset (20005 in the old vocabulary).</summary>
    public int InvalidScoreTokenId => 5 + Model.Config.NumImageTokens;

    /// <summary>All new tokens at once (the stop token excluded); see <see cref="Stream"/>.</summary>
    public int[] Generate(IReadOnlyList<int> prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Stream(prompt, options, cancellationToken).ToArray();

    /// <summary>
    /// Yields the new token ids one by one. The stop token (<see cref="GenerationOptions.EosTokenId"/>, else the
    /// config's eos) ends the enumeration and is not yielded. The prompt must hold [gMASK] (or [MASK]) and &lt;sop&gt;
    /// (spec §4.1: the generated tokens take mask_pos as position and t − ctx + 1 as block position) and be shorter
    /// than MaxLength.
    /// </summary>
    public IEnumerable<int> Stream(IReadOnlyList<int> prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        // Validated eagerly so that errors surface at the call, not at the first MoveNext.
        ArgumentNullException.ThrowIfNull(prompt);
        var o = options ?? new GenerationOptions();
        o.Validate();
        var config = Model.Config;
        if (prompt.Count == 0) throw new ArgumentException("GlmGenerator: the prompt is empty", nameof(prompt));
        var ids = prompt.ToArray();
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(prompt), $"GlmGenerator: prompt token {i} = {ids[i]} is outside the vocabulary [0, {config.VocabSize})");
        var (ctx, maskPos) = GlmInputs.ContextAndMask(ids, config);
        if (ctx == ids.Length)
            throw new ArgumentException($"GlmGenerator: the prompt has no <sop> ({config.BosTokenId}); end it with [gMASK] <sop> (ChatGlmTokenizer.Encode(text, addSpecialTokens: true))", nameof(prompt));
        if (ids.Length >= o.MaxLength)
            throw new ArgumentException($"GlmGenerator: the prompt has {ids.Length} tokens, not fewer than MaxLength = {o.MaxLength} (which counts the prompt)", nameof(prompt));
        if (Model.Training) throw new InvalidOperationException("GlmGenerator: the model is in training mode (dropout on); set GlmModel.Training = false to generate");
        if (InvalidScoreTokenId >= config.VocabSize) throw new InvalidOperationException($"GlmGenerator: the invalid-score token {InvalidScoreTokenId} is outside the vocabulary");
        return Run(ids, ctx, maskPos, o, cancellationToken);
    }

    private IEnumerable<int> Run(int[] prompt, int ctx, int maskPos, GenerationOptions o, CancellationToken ct)
    {
        int eos = o.EosTokenId ?? Model.Config.EosTokenId;
        var rng = new RandomGenerator(o.Seed ?? (ulong)Random.Shared.NextInt64());
        var sequence = new List<int>(o.MaxLength);
        sequence.AddRange(prompt);
        using var cache = o.UseCache ? Model.CreateCache() : null;
        while (sequence.Count < o.MaxLength)
        {
            ct.ThrowIfCancellationRequested();
            int token = Step(sequence, ctx, maskPos, cache, o, rng);
            sequence.Add(token);
            if (token == eos) yield break;
            yield return token;
        }
    }

    /// <summary>
    /// The raw logits of the token after <paramref name="sequence"/> (the prompt, ending in [gMASK] &lt;sop&gt;, plus
    /// the tokens so far): what each generation step starts from, before §7's processing. With a cache the first
    /// call runs the prompt and each later one only the newest token (the sequence must have grown by exactly one),
    /// with §4.2's incremental positions; without one, the whole sequence again. For callers that choose the tokens
    /// themselves — teacher-forced comparisons, decoding benchmarks.
    /// </summary>
    public float[] NextLogits(IReadOnlyList<int> sequence, GlmKvCache? cache)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        var ids = sequence as List<int> ?? [.. sequence];
        var (ctx, maskPos) = GlmInputs.ContextAndMask(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids), Model.Config);
        if (ctx == ids.Count) throw new ArgumentException($"GlmGenerator.NextLogits: the sequence has no <sop> ({Model.Config.BosTokenId})", nameof(sequence));
        using (GradMode.NoGrad())
        using (TensorScope.Begin())
            return NextLogits(ids, ctx, maskPos, cache);
    }

    /// <summary>One step: logits of the last position, the §7 pipeline, then the pick. Nothing it allocates survives.</summary>
    private int Step(List<int> sequence, int ctx, int maskPos, GlmKvCache? cache, GenerationOptions o, RandomGenerator rng)
    {
        float[] scores;
        using (GradMode.NoGrad())
        using (TensorScope.Begin())
            scores = NextLogits(sequence, ctx, maskPos, cache);
        var seqSpan = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sequence);
        LogitsProcessing.Process(scores, seqSpan, o, InvalidScoreTokenId);
        if (!o.DoSample) return LogitsProcessing.ArgMax(scores);
        var probs = LogitsProcessing.Softmax(scores);
        return LogitsProcessing.SampleIndex(probs, RandomGenerator.Uniform(rng.NextStream(), 0));
    }

    private float[] NextLogits(List<int> sequence, int ctx, int maskPos, GlmKvCache? cache)
    {
        var device = Model.Device;
        int n = sequence.Count;
        Tensor logits;
        if (cache is null)
        {
            // Reference path: the whole sequence again, built exactly like a prompt (§4.1).
            using var inputs = GlmInputs.Build([sequence.ToArray()], Model.Config, device: device);
            logits = Model.Forward(inputs).Narrow(1, n - 1, 1);
        }
        else if (cache.TokenCount == 0)
        {
            // Prompt pass: prefix-LM mask among the prompt tokens; the P-Tuning prefix (if any) is the initial past.
            var ids = Tensor.FromArray(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sequence), new Shape(1, n), device);
            var pos = PositionIds.Glm([ctx], [maskPos], n, device: device);
            var mask = AttentionMask.PrefixLm([ctx], n, device: device);
            logits = Model.Forward(ids, pos, mask, cache, lastOnly: true);
        }
        else
        {
            // §4.2: the newest token t = n − 1 has pos = mask_pos, blk = t − ctx + 1, and sees every past key.
            if (cache.TokenCount != n - 1) throw new InvalidOperationException($"GlmGenerator: the cache holds {cache.TokenCount} tokens, the sequence {n - 1} before the newest");
            var ids = Tensor.FromArray([sequence[n - 1]], new Shape(1, 1), device);
            var pos = Tensor.FromArray([maskPos, n - 1 - ctx + 1], new Shape(1, 2, 1), device);
            logits = Model.Forward(ids, pos, null, cache, lastOnly: true);
        }
        return logits.ToFloatArray();
    }
}
