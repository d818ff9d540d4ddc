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
        SelectOnDevice = model.Device.Kind != DeviceKind.Cpu;
    }

    /// <summary>The model.</summary>
    public GlmModel Model { get; }

    /// <summary>
    /// Whether each step's scores are reduced to top-k's candidates where the logits are
    /// (<see cref="CandidatePicking"/>), so that a few scores per row reach the host instead of the vocabulary. On by
    /// default when the model is not on the CPU (where the logits already are on the host). The picks are the same
    /// either way; tests switch it to check that.
    /// </summary>
    internal bool SelectOnDevice { get; set; }

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
        CheckModel();
        CheckPrompt(prompt, o, "the prompt", nameof(prompt)); // eagerly, so that errors surface here
        return Run(prompt.ToArray(), o, cancellationToken);
    }

    /// <summary>
    /// Generates for several prompts at once, left-padded into one batch (as HF pads for generation), so that each
    /// step reads the weights once for every row. Each row keeps its own rules, as <see cref="Generate"/> would apply
    /// them to it alone: <see cref="GenerationOptions.MaxLength"/> counts its own prompt, it stops at its own stop
    /// token, the repetition penalty sees its own tokens, and with a <see cref="GenerationOptions.Seed"/> every row
    /// samples from a generator seeded with it. Row b's answer is therefore <c>Generate(prompts[b], options)</c>, up
    /// to the rounding of the batched products (greedy answers agree unless two scores are within that rounding).
    /// A row that finishes leaves the batch, its past dropped from the cache (<see cref="GlmKvCache.KeepRows"/>), so
    /// later steps compute the live rows only.
    /// </summary>
    /// <returns>Per prompt, its new tokens (the stop token excluded).</returns>
    public int[][] GenerateBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("GlmGenerator.GenerateBatch: there are no prompts", nameof(prompts));
        var o = options ?? new GenerationOptions();
        o.Validate();
        CheckModel();
        var rows = new RowState[prompts.Count];
        for (int b = 0; b < rows.Length; b++)
        {
            if (prompts[b] is null) throw new ArgumentNullException(nameof(prompts), $"GlmGenerator.GenerateBatch: prompt {b} is null");
            rows[b] = CheckPrompt(prompts[b], o, $"prompt {b}", nameof(prompts));
        }
        using var cache = o.UseCache ? Model.CreateCache(rows.Length) : null;
        var live = rows; // the rows still generating, in the cache's row order
        while (live.Length > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int[] picks;
            using (GradMode.NoGrad())
            using (TensorScope.Begin())
                picks = StepPicks(live, cache);
            for (int i = 0; i < live.Length; i++)
                if (live[i].Accept(picks[i])) live[i].Output.Add(picks[i]);
            // Finished rows leave the batch (and the cache), so later steps compute the live rows only.
            var keep = Enumerable.Range(0, live.Length).Where(i => !live[i].Done).ToArray();
            if (keep.Length < live.Length && keep.Length > 0) cache?.KeepRows(keep);
            live = [.. keep.Select(i => live[i])];
        }
        return [.. rows.Select(r => r.Output.ToArray())];
    }

    /// <summary>
    /// One prompt's generation state: its tokens so far (prompt first), its §4.1 positions, its options (and the stop
    /// token they give), its length limit and its sampling generator. Shared by <see cref="Stream"/>,
    /// <see cref="GenerateBatch"/> and <see cref="GlmBatchScheduler"/>, so all three stop by the same rules.
    /// </summary>
    internal sealed class RowState(int[] prompt, int ctx, int maskPos, GenerationOptions options, int eos, int limit, RandomGenerator rng)
    {
        public List<int> Sequence { get; } = [.. prompt];
        public int Ctx { get; } = ctx;
        public int MaskPos { get; } = maskPos;
        public GenerationOptions Options { get; } = options;
        public int Eos { get; } = eos;
        /// <summary>Sequence length at which the row stops (MaxLength, or the prompt plus MaxNewTokens when smaller).</summary>
        public int Limit { get; } = limit;
        public RandomGenerator Rng { get; } = rng;
        /// <summary>The answer so far (<see cref="GenerateBatch"/> collects it here).</summary>
        public List<int> Output { get; } = [];
        public bool Done { get; set; }

        /// <summary>Appends the picked token; true when it belongs to the answer (not the stop token). Marks the row
        /// done at the stop token or the length limit.</summary>
        public bool Accept(int token)
        {
            Sequence.Add(token);
            if (token == Eos) { Done = true; return false; }
            if (Sequence.Count >= Limit) Done = true;
            return true;
        }
    }

    internal void CheckModel()
    {
        if (Model.Training) throw new InvalidOperationException("GlmGenerator: the model is in training mode (dropout on); set GlmModel.Training = false to generate");
        if (InvalidScoreTokenId >= Model.Config.VocabSize) throw new InvalidOperationException($"GlmGenerator: the invalid-score token {InvalidScoreTokenId} is outside the vocabulary");
    }

    internal RowState CheckPrompt(IReadOnlyList<int> prompt, GenerationOptions o, string what, string paramName)
    {
        var config = Model.Config;
        if (prompt.Count == 0) throw new ArgumentException($"GlmGenerator: {what} is empty", paramName);
        var ids = prompt.ToArray();
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(paramName, $"GlmGenerator: {what}: token {i} = {ids[i]} is outside the vocabulary [0, {config.VocabSize})");
        var (ctx, maskPos) = GlmInputs.ContextAndMask(ids, config);
        if (ctx == ids.Length)
            throw new ArgumentException($"GlmGenerator: {what} has no <sop> ({config.BosTokenId}); end it with [gMASK] <sop> (ChatGlmTokenizer.Encode(text, addSpecialTokens: true))", paramName);
        if (ids.Length >= o.MaxLength)
            throw new ArgumentException($"GlmGenerator: {what} has {ids.Length} tokens, not fewer than MaxLength = {o.MaxLength} (which counts the prompt)", paramName);
        int limit = o.MaxNewTokens is int n ? (int)Math.Min(o.MaxLength, (long)ids.Length + n) : o.MaxLength;
        return new RowState(ids, ctx, maskPos, o, o.EosTokenId ?? config.EosTokenId, limit, new RandomGenerator(o.Seed ?? (ulong)Random.Shared.NextInt64()));
    }

    private IEnumerable<int> Run(int[] prompt, GenerationOptions o, CancellationToken ct)
    {
        var row = CheckPrompt(prompt, o, "the prompt", nameof(prompt)); // per enumeration: each one starts afresh
        using var cache = o.UseCache ? Model.CreateCache() : null;
        while (!row.Done)
        {
            ct.ThrowIfCancellationRequested();
            int pick;
            using (GradMode.NoGrad())
            using (TensorScope.Begin())
                pick = StepPicks([row], cache)[0];
            if (row.Accept(pick)) yield return row.Sequence[^1];
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
        return RowsLogits("GlmGenerator.NextLogits", [sequence], cache, single: true)[0];
    }

    /// <summary>
    /// The batched <see cref="NextLogits(IReadOnlyList{int}, GlmKvCache?)"/>: per row, the raw logits of the token after
    /// its sequence. With a cache made for this many rows, the first call runs the prompts left-padded (declaring the
    /// pads to the cache) and each later one only every row's newest token (each sequence must have grown by exactly
    /// one); without one, the whole left-padded batch again. For callers that choose the tokens themselves (batched
    /// decoding benchmarks, teacher-forced comparisons).
    /// </summary>
    public float[][] NextLogitsBatch(IReadOnlyList<IReadOnlyList<int>> sequences, GlmKvCache? cache)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        return RowsLogits("GlmGenerator.NextLogitsBatch", sequences, cache, single: false);
    }

    /// <summary>
    /// <see cref="NextLogits"/> and <see cref="NextLogitsBatch"/>: the rows' sequences checked (messages name
    /// <paramref name="op"/>, and the row unless <paramref name="single"/>), then the step that
    /// <see cref="GenerateBatch"/> takes, so a caller that picks its own tokens sees exactly the logits generation does.
    /// </summary>
    private float[][] RowsLogits(string op, IReadOnlyList<IReadOnlyList<int>> sequences, GlmKvCache? cache, bool single)
    {
        if (sequences.Count == 0) throw new ArgumentException($"{op}: there are no sequences", nameof(sequences));
        if (cache is not null && cache.Batch != sequences.Count)
            throw new ArgumentException($"{op}: the cache holds {cache.Batch} rows, there {(single ? "is one sequence" : $"are {sequences.Count} sequences")}", nameof(cache));
        var rows = new RowState[sequences.Count];
        for (int b = 0; b < rows.Length; b++)
        {
            string what = single ? "the sequence" : $"sequence {b}";
            var ids = sequences[b]?.ToArray() ?? throw new ArgumentNullException(nameof(sequences), $"{op}: {what} is null");
            if (ids.Length == 0) throw new ArgumentException($"{op}: {what} is empty", nameof(sequences));
            var (ctx, maskPos) = GlmInputs.ContextAndMask(ids, Model.Config, b);
            if (ctx == ids.Length) throw new ArgumentException($"{op}: {what} has no <sop> ({Model.Config.BosTokenId})", nameof(sequences));
            // After the prompt pass the cache holds pads + prompt + the tokens fed since: the newest token is the one to add.
            if (cache is { TokenCount: > 0 } && cache.PadLeft[b] + ids.Length - 1 != cache.TokenCount)
                throw new InvalidOperationException($"{op}: the cache holds {cache.TokenCount - cache.PadLeft[b]} tokens{(single ? "" : $" of row {b}")}, {what} {ids.Length - 1} before the newest");
            rows[b] = new RowState(ids, ctx, maskPos, GenerationOptions.Greedy, -1, int.MaxValue, null!); // only stepped, never picked from
        }
        var v = Model.Config.VocabSize;
        float[] flat;
        using (GradMode.NoGrad())
        using (TensorScope.Begin())
            flat = (cache is null ? BatchLogits(rows) : BatchLogits(rows, cache)).ToFloatArray();
        return [.. Enumerable.Range(0, rows.Length).Select(b => flat.AsSpan(b * v, v).ToArray())];
    }

    /// <summary>The §7 pipeline over one row's raw scores (modified in place), then its pick.</summary>
    internal int Pick(float[] scores, RowState row)
    {
        var seqSpan = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(row.Sequence);
        if (row.Options.RepetitionPenalty != 1f) LogitsProcessing.ApplyRepetitionPenalty(scores, seqSpan, row.Options.RepetitionPenalty);
        return PickPenalized(scores, row);
    }

    /// <summary><see cref="Pick"/> for scores that already carry the repetition penalty.</summary>
    internal int PickPenalized(float[] scores, RowState row)
    {
        LogitsProcessing.ProcessPenalized(scores, row.Options, InvalidScoreTokenId);
        return row.Options.DoSample ? Draw(scores, row) : LogitsProcessing.ArgMax(scores);
    }

    /// <summary>The draw from fully processed scores: a softmax, then one uniform variate of the row's generator.</summary>
    internal static int Draw(ReadOnlySpan<float> scores, RowState row) =>
        LogitsProcessing.SampleIndex(LogitsProcessing.Softmax(scores), RandomGenerator.Uniform(row.Rng.NextStream(), 0));

    /// <summary>
    /// Each row's pick from its row of <paramref name="logits"/> (F32, [rows, V] or [rows, 1, V]; it may be
    /// overwritten). With <see cref="SelectOnDevice"/> the scores are first reduced where they lie
    /// (<see cref="CandidatePicking"/>). Otherwise they come to the host whole, and since the §7 pipeline costs about
    /// a millisecond per row over ChatGLM's 130,528 scores, a batch's rows are picked in parallel (each has its own
    /// sequence and generator: the picks do not depend on the order).
    /// </summary>
    internal int[] PickAll(IReadOnlyList<RowState> rows, Tensor logits)
    {
        if (SelectOnDevice) return CandidatePicking.PickAll(this, rows, logits);
        var flat = logits.ToFloatArray();
        int v = Model.Config.VocabSize;
        var picks = new int[rows.Count];
        if (rows.Count == 1) picks[0] = Pick(flat.AsSpan(0, v).ToArray(), rows[0]);
        else Parallel.For(0, rows.Count, i => picks[i] = Pick(flat.AsSpan(i * v, v).ToArray(), rows[i]));
        return picks;
    }

    /// <summary>Without a cache: the rows' sequences again, left-padded into one batch (§4.1, §4.3); [rows, 1, V].</summary>
    private Tensor BatchLogits(RowState[] rows)
    {
        using var inputs = GlmInputs.Build([.. rows.Select(r => r.Sequence.ToArray())], Model.Config, device: Model.Device);
        return Model.Forward(inputs).Narrow(1, inputs.SeqLen - 1, 1).Contiguous();
    }

    /// <summary>
    /// With the cache: the left-padded prompts first (their pads declared to the cache), then one token per row and
    /// step with §4.2's positions. Returns [rows, 1, V].
    /// </summary>
    internal Tensor BatchLogits(RowState[] rows, GlmKvCache cache)
    {
        if (cache.TokenCount == 0)
        {
            using var inputs = GlmInputs.Build([.. rows.Select(r => r.Sequence.ToArray())], Model.Config, device: Model.Device);
            cache.SetLeftPadding(inputs.PadLeft);
            return Model.Forward(inputs, cache, lastOnly: true);
        }
        var (ids, pos) = StepTokens(rows);
        return Model.ForwardStep(ids, pos, cache);
    }

    /// <summary>Per row the newest token and its §4.2 positions (mask position, block position t − ctx + 1).</summary>
    private static (int[] Ids, int[] Positions) StepTokens(RowState[] rows)
    {
        var ids = new int[rows.Length];
        var pos = new int[rows.Length * 2];
        for (int b = 0; b < rows.Length; b++)
        {
            var r = rows[b];
            int t = r.Sequence.Count - 1; // the newest token
            ids[b] = r.Sequence[t];
            pos[2 * b] = r.MaskPos;
            pos[2 * b + 1] = t - r.Ctx + 1;
        }
        return (ids, pos);
    }

    /// <summary>
    /// One step of a batch: each row's next token. A cached step that picks on the device sends its tokens, their
    /// positions and the picking's inputs in one copy, so the host waits twice a step (that copy, the candidates);
    /// otherwise <see cref="PickAll"/> of <see cref="BatchLogits(RowState[], GlmKvCache)"/>.
    /// </summary>
    internal int[] StepPicks(RowState[] rows, GlmKvCache? cache)
    {
        if (cache is null) return PickAll(rows, BatchLogits(rows));
        if (!SelectOnDevice || cache.TokenCount == 0) return PickAll(rows, BatchLogits(rows, cache));
        var plan = CandidatePicking.Prepare(rows, Model.Config.VocabSize);
        var (ids, pos) = StepTokens(rows);
        var logits = Model.ForwardStep(ids, pos, cache, plan.Packed, out var input);
        return CandidatePicking.PickAll(this, rows, logits, plan, input!);
    }
}
