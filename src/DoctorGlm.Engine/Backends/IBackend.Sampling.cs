namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// The part of a generation step's score pipeline (spec §7) that runs where the logits are, so that only a few
    /// scores per row reach the host. For each row r of <paramref name="scores"/> [B, V] (F32, contiguous):
    /// <list type="number">
    /// <item>the repetition penalty θ = settings[r, 0] at the ids penaltyIds[r, ·] (I32 [B, L], distinct within a row,
    /// −1 = none): s ← s·θ when s &lt; 0, else s/θ. <paramref name="scores"/> is overwritten with these penalised scores;</item>
    /// <item>if any penalised score of the row is NaN or ±∞, counts[r] = −1 and the row's candidates are not written
    /// (the caller runs the invalid-score guard on the whole row);</item>
    /// <item>with T = settings[r, 1] and k = topK[r] (≤ 0 or &gt; V meaning V), t_k = the k-th largest of s/T;</item>
    /// <item>the candidates are every id j with s_j/T ≥ t_k (so ties with the k-th are kept, as HF's top-k keeps them),
    /// in ascending j: the first C go to <paramref name="candidateIds"/> [B, C] (I32) and
    /// <paramref name="candidateScores"/> [B, C] (F32, the value s_j/T), and counts[r] (I32 [B]) = their number,
    /// which exceeds C when they do not fit.</item>
    /// </list>
    /// Divisions are IEEE fp32 on every backend, so the candidates' scores are bit for bit those the host pipeline
    /// (<see cref="Generation.LogitsProcessing"/>) computes, and a pick from them is the pick from the whole row.
    /// <paramref name="settings"/> is F32 [B, 2].
    /// </summary>
    void SelectCandidates(Tensor scores, Tensor penaltyIds, Tensor settings, Tensor topK, Tensor candidateIds, Tensor candidateScores, Tensor counts);
}

/// <summary>Argument checks of <see cref="IBackend.SelectCandidates"/> that every backend runs (its kernels index with these shapes).</summary>
internal static class SamplingArguments
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the first tensor whose dtype, shape or layout is wrong.</summary>
    public static void Check(Tensor scores, Tensor penaltyIds, Tensor settings, Tensor topK, Tensor candidateIds, Tensor candidateScores, Tensor counts)
    {
        const string op = nameof(IBackend.SelectCandidates);
        if (scores.Shape.Rank != 2) throw new ArgumentException($"{op}: {scores.Describe("scores")} must be [B, V]");
        int b = scores.Shape[0];
        int capacity = candidateIds.Shape.Rank == 2 ? candidateIds.Shape[1] : -1;
        int l = penaltyIds.Shape.Rank == 2 ? penaltyIds.Shape[1] : -1;
        foreach (var (t, name, dtype, shape) in new[]
        {
            (scores, "scores", DType.F32, new Shape(b, scores.Shape[1])), (penaltyIds, "penaltyIds", DType.I32, new Shape(b, Math.Max(l, 0))),
            (settings, "settings", DType.F32, new Shape(b, 2)), (topK, "topK", DType.I32, new Shape(b)),
            (candidateIds, "candidateIds", DType.I32, new Shape(b, Math.Max(capacity, 0))), (candidateScores, "candidateScores", DType.F32, new Shape(b, Math.Max(capacity, 0))),
            (counts, "counts", DType.I32, new Shape(b)),
        })
        {
            if (t.DType != dtype || t.Shape != shape || !t.IsContiguous)
                throw new ArgumentException($"{op}: {t.Describe(name)} must be a contiguous {dtype} {shape} (scores {scores.Shape})");
        }
    }
}
