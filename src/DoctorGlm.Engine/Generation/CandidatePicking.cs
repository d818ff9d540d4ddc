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

    /// <summary>Each row's pick from <paramref name="logits"/> [rows, V] (F32; overwritten with penalised scores).</summary>
    public static int[] PickAll(GlmGenerator generator, IReadOnlyList<GlmGenerator.RowState> rows, Tensor logits)
    {
        int batch = rows.Count, v = logits.Shape[^1];
        var device = logits.Device;
        var scores = logits.Reshape(batch, v);
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
        var ids = new int[batch * l];
        Array.Fill(ids, -1);
        for (int b = 0; b < batch; b++) penalised[b].CopyTo(ids, b * l);
        int capacity = (int)Math.Min(v, (long)maxK + TieSlack);

        var candidateIds = Tensor.Empty(new Shape(batch, capacity), DType.I32, device);
        var candidateScores = Tensor.Empty(new Shape(batch, capacity), DType.F32, device);
        var counts = Tensor.Empty(new Shape(batch), DType.I32, device);
        scores.Backend.SelectCandidates(scores, Tensor.FromArray(ids, new Shape(batch, l), device), Tensor.FromArray(settings, new Shape(batch, 2), DType.F32, device),
            Tensor.FromArray(topK, new Shape(batch), device), candidateIds, candidateScores, counts);

        var n = counts.ToIntArray();
        var cid = candidateIds.ToIntArray();
        var cs = candidateScores.ToFloatArray();
        var picks = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            if (n[b] < 0 || n[b] > capacity)
                picks[b] = generator.PickPenalized(scores.Narrow(0, b, 1).ToFloatArray(), rows[b]);
            else
                picks[b] = Pick(cid.AsSpan(b * capacity, n[b]), cs.AsSpan(b * capacity, n[b]), rows[b]);
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
