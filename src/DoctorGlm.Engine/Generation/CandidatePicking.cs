namespace DoctorGlm.Engine.Generation;

/// <summary>
/// A batch's next tokens with spec §7's pipeline split between the device and the host. The backend's
/// <see cref="Backends.IBackend.SelectCandidates"/> applies the repetition penalty, checks for invalid scores and keeps
/// top-k's survivors (after temperature) where the logits are; only those (about k per row, in id order) come to
/// the host, which runs top-p, the softmax and the draw on them.
/// </summary>
/// <remarks>
/// <para>Why: a GPU step of the 6B model in bf16 takes about 10 ms, while bringing B × 130,528 logits to the host and
/// running the whole pipeline on each row costs about 1 ms per row of sampling plus the copy (16.7 MB at B = 32).</para>
/// <para>The picks are exactly those of <see cref="LogitsProcessing.Process"/> on the whole row: the candidates'
/// scores are the same floats (IEEE division on both sides), every score top-k removes would be −∞ and adds exactly
/// nothing to top-p's cumulative sums or to the softmax, and the candidates keep id order, which is the order both
/// the host's sums and its ties follow. Greedy rows are top-1 without temperature: the candidates are the ids tied
/// for the maximum, and the first is argmax's pick.</para>
/// <para>A row falls back to the whole-row host pipeline (its penalised scores copied over) when a score is not finite
/// (the invalid-score guard rewrites the row), when sampling has top-k off, or when ties overflow the buffer.</para>
/// </remarks>
internal static class CandidatePicking
{
    /// <summary>Candidate slots per row beyond the largest top-k: room for ties with the k-th score.</summary>
    internal const int TieSlack = 64;

    /// <summary>
    /// What a step's picking sends to the device, laid out on the host before the logits exist (so a decoding step can
    /// send it in the same copy as its own tokens): [penalised ids (batch·L, −1 pads) | top-k (batch) | penalty,
    /// temperature bits (2·batch)], and the candidate buffer's rows (<see cref="Capacity"/>).
    /// </summary>
    internal sealed record Plan(int Batch, int V, int L, int Capacity, int[] Packed);

    /// <summary>The <see cref="Plan"/> of <paramref name="rows"/> over a vocabulary of <paramref name="v"/> scores.</summary>
    public static Plan Prepare(IReadOnlyList<GlmGenerator.RowState> rows, int v)
    {
        int batch = rows.Count;
        var settings = new float[2 * batch];
        var topK = new int[batch];
        var penalised = new int[batch][];
        int maxK = 1;
        for (int b = 0; b < batch; b++)
        {
            var o = rows[b].Options;
            settings[2 * b] = o.RepetitionPenalty;
            settings[2 * b + 1] = o.DoSample ? o.Temperature : 1f; // greedy: argmax of the penalised scores, no temperature
            int k = !o.DoSample ? 1 : o.TopK == 0 ? v : Math.Min(o.TopK, v);
            topK[b] = k;
            if (k < v) maxK = Math.Max(maxK, k); // top-k off: such a row overflows and falls back, whatever the buffer
            penalised[b] = o.RepetitionPenalty == 1f ? [] : [.. new HashSet<int>(rows[b].Sequence)]; // distinct, as HF penalises
        }
        int l = Math.Max(1, penalised.Max(p => p.Length));
        int capacity = (int)Math.Min(v, (long)maxK + TieSlack);
        var packed = new int[batch * l + 3 * batch];
        Array.Fill(packed, -1, 0, batch * l);
        for (int b = 0; b < batch; b++) penalised[b].CopyTo(packed, b * l);
        topK.CopyTo(packed, batch * l);
        for (int i = 0; i < settings.Length; i++) packed[batch * l + batch + i] = BitConverter.SingleToInt32Bits(settings[i]);
        return new Plan(batch, v, l, capacity, packed);
    }

    /// <summary>Each row's pick from <paramref name="logits"/> [rows, V] (F32; overwritten with penalised scores).</summary>
    public static int[] PickAll(GlmGenerator generator, IReadOnlyList<GlmGenerator.RowState> rows, Tensor logits)
    {
        var plan = Prepare(rows, logits.Shape[^1]);
        using var input = Tensor.FromArray(plan.Packed, new Shape(plan.Packed.Length), logits.Device);
        return PickAll(generator, rows, logits, plan, input);
    }

    /// <summary>
    /// <see cref="PickAll(GlmGenerator, IReadOnlyList{GlmGenerator.RowState}, Tensor)"/> with the plan's
    /// <see cref="Plan.Packed"/> already on the device (<paramref name="input"/>, I32, contiguous).
    /// </summary>
    public static int[] PickAll(GlmGenerator generator, IReadOnlyList<GlmGenerator.RowState> rows, Tensor logits, Plan plan, Tensor input)
    {
        int batch = plan.Batch, v = plan.V, l = plan.L, capacity = plan.Capacity;
        if (rows.Count != batch || logits.Shape[^1] != v || input.NumElements != plan.Packed.Length)
            throw new ArgumentException($"CandidatePicking: a plan for {batch} rows of {v} scores ({plan.Packed.Length} inputs), given {rows.Count} rows of {logits.Shape[^1]} ({input.NumElements} inputs)");
        var device = logits.Device;
        var scores = logits.Reshape(batch, v);
        // The inputs crossed the bus in one copy and the results come back in another (each small copy costs a round
        // trip, and decoding makes one pick a step): [counts (batch) | candidate ids (batch·capacity) | their scores'
        // bits (batch·capacity)] down. Views at the input's own offset: it may sit inside a larger upload.
        long at = input.Offset;
        using var ids = input.Reinterpret(DType.I32, new Shape(batch, l), at);
        using var topKs = input.Reinterpret(DType.I32, new Shape(batch), at + batch * l);
        using var rowSettings = input.Reinterpret(DType.F32, new Shape(batch, 2), at + batch * l + batch);
        using var output = Tensor.Empty(new Shape(checked(batch + 2 * batch * capacity)), DType.I32, device);
        using var counts = output.Reinterpret(DType.I32, new Shape(batch), 0);
        using var candidateIds = output.Reinterpret(DType.I32, new Shape(batch, capacity), batch);
        using var candidateScores = output.Reinterpret(DType.F32, new Shape(batch, capacity), batch + (long)batch * capacity);
        scores.Backend.SelectCandidates(scores, ids, rowSettings, topKs, candidateIds, candidateScores, counts);

        var results = output.ToIntArray();
        var n = results.AsSpan(0, batch);
        var cid = results.AsSpan(batch, batch * capacity);
        var cs = System.Runtime.InteropServices.MemoryMarshal.Cast<int, float>(results.AsSpan(batch + batch * capacity, batch * capacity));
        var picks = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            if (n[b] < 0 || n[b] > capacity)
                picks[b] = generator.PickPenalized(scores.Narrow(0, b, 1).ToFloatArray(), rows[b]);
            else
                picks[b] = Pick(cid.Slice(b * capacity, n[b]), cs.Slice(b * capacity, n[b]), rows[b]);
        }
        return picks;
    }

    /// <summary>The host's part for one row: <paramref name="ids"/> (ascending) and their scores after penalty,
    /// temperature and top-k; top-p, the softmax and the draw follow.</summary>
    internal static int Pick(ReadOnlySpan<int> ids, Span<float> scores, GlmGenerator.RowState row)
    {
        var o = row.Options;
        if (!o.DoSample) return ids[LogitsProcessing.ArgMax(scores)];
        if (o.TopP < 1f) LogitsProcessing.ApplyTopP(scores, o.TopP);
        return ids[GlmGenerator.Draw(scores, row)];
    }
}
