namespace DoctorGlm.Engine.Generation;

/// <summary>
/// The per-step score pipeline of ChatGLM's generation (spec §7), one function per Hugging Face processor or warper,
/// each acting in place on the next-token scores of one sequence. <see cref="Process"/> chains them in HF's order:
/// repetition penalty → InvalidScoreLogitsProcessor → (sampling only) temperature → top-k → top-p.
/// </summary>
public static class LogitsProcessing
{
    /// <summary>The score InvalidScoreLogitsProcessor gives its forced token (5e4, not 1e5, so that it fits fp16).</summary>
    public const float InvalidScoreForcedValue = 5e4f;

    /// <summary>
    /// HF <c>RepetitionPenaltyLogitsProcessor</c>: for every distinct id of <paramref name="sequence"/> (prompt and
    /// special tokens included) s ← s·θ when s &lt; 0, else s/θ. A no-op for θ = 1.
    /// </summary>
    public static void ApplyRepetitionPenalty(Span<float> scores, ReadOnlySpan<int> sequence, float penalty)
    {
        if (!(penalty > 0)) throw new ArgumentOutOfRangeException(nameof(penalty), penalty, "must be positive");
        if (penalty == 1f) return;
        var seen = new HashSet<int>();
        foreach (int id in sequence)
        {
            if ((uint)id >= (uint)scores.Length) throw new ArgumentOutOfRangeException(nameof(sequence), id, $"token id outside the {scores.Length} scores");
            if (!seen.Add(id)) continue; // HF gathers then scatters: a repeated id is penalised once
            float s = scores[id];
            scores[id] = s < 0 ? s * penalty : s / penalty;
        }
    }

    /// <summary>
    /// ChatGLM's <c>InvalidScoreLogitsProcessor</c>: when any score is NaN or ±∞, every score becomes 0 and
    /// <paramref name="forcedId"/> (id 5 "▁", 20005 in the old vocabulary) gets 5e4. Returns whether it fired.
    /// </summary>
    public static bool ApplyInvalidScoreGuard(Span<float> scores, int forcedId)
    {
        if ((uint)forcedId >= (uint)scores.Length) throw new ArgumentOutOfRangeException(nameof(forcedId), forcedId, $"outside the {scores.Length} scores");
        bool invalid = false;
        foreach (float s in scores) if (!float.IsFinite(s)) { invalid = true; break; }
        if (!invalid) return false;
        scores.Clear();
        scores[forcedId] = InvalidScoreForcedValue;
        return true;
    }

    /// <summary>HF <c>TemperatureLogitsWarper</c>: s ← s / T.</summary>
    public static void ApplyTemperature(Span<float> scores, float temperature)
    {
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "must be positive");
        if (temperature == 1f) return;
        for (int i = 0; i < scores.Length; i++) scores[i] /= temperature;
    }

    /// <summary>
    /// HF <c>TopKLogitsWarper</c>: scores strictly below the k-th largest become −∞ (ties with it are kept);
    /// k is clamped to [1, V]; k = 0 disables it.
    /// </summary>
    public static void ApplyTopK(Span<float> scores, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k == 0 || k >= scores.Length) return;
        var sorted = scores.ToArray();
        Array.Sort(sorted);
        float kth = sorted[sorted.Length - k];
        for (int i = 0; i < scores.Length; i++) if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    /// <summary>
    /// HF <c>TopPLogitsWarper</c>: sort the scores ascending, take the cumulative softmax, set −∞ on every entry
    /// whose cumulative probability is ≤ 1 − p, but always keep the best one. p = 1 disables it. Equal scores are
    /// ordered by id (a stable sort; torch's order among ties is unspecified).
    /// </summary>
    public static void ApplyTopP(Span<float> scores, float topP)
    {
        if (!(topP >= 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(topP), topP, "must be in [0, 1]");
        if (topP == 1f || scores.Length == 0) return;
        var order = new int[scores.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        var keys = scores.ToArray();
        // Ascending by score, ties by id: Array.Sort is unstable, so sort (score, id) pairs explicitly.
        var cmpKeys = keys;
        Array.Sort(order, (a, b) => { int c = cmpKeys[a].CompareTo(cmpKeys[b]); return c != 0 ? c : a.CompareTo(b); });
        double max = keys[order[^1]];
        double total = 0;
        var exp = new double[order.Length];
        for (int i = 0; i < order.Length; i++) { exp[i] = Math.Exp(keys[order[i]] - max); total += exp[i]; }
        double cumulative = 0, threshold = 1.0 - topP;
        for (int i = 0; i < order.Length - 1; i++) // the last (best) entry is always kept
        {
            cumulative += exp[i] / total;
            if (cumulative <= threshold) scores[order[i]] = float.NegativeInfinity;
        }
    }

    /// <summary>
    /// The whole per-step pipeline of spec §7 on <paramref name="scores"/> (the last position's logits), given the
    /// sequence so far. Returns whether the invalid-score guard fired.
    /// </summary>
    public static bool Process(Span<float> scores, ReadOnlySpan<int> sequence, GenerationOptions options, int invalidScoreTokenId)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.RepetitionPenalty != 1f) ApplyRepetitionPenalty(scores, sequence, options.RepetitionPenalty);
        bool fired = ApplyInvalidScoreGuard(scores, invalidScoreTokenId);
        if (!options.DoSample) return fired;
        if (options.Temperature != 1f) ApplyTemperature(scores, options.Temperature);
        if (options.TopK != 0) ApplyTopK(scores, options.TopK);
        if (options.TopP < 1f) ApplyTopP(scores, options.TopP);
        return fired;
    }

    /// <summary>Softmax in double precision (−∞ scores get probability 0).</summary>
    public static double[] Softmax(ReadOnlySpan<float> scores)
    {
        double max = double.NegativeInfinity;
        foreach (float s in scores) if (s > max) max = s;
        if (double.IsNegativeInfinity(max)) throw new ArgumentException("every score is −∞: nothing can be sampled", nameof(scores));
        var p = new double[scores.Length];
        double total = 0;
        for (int i = 0; i < p.Length; i++) { p[i] = Math.Exp(scores[i] - max); total += p[i]; }
        for (int i = 0; i < p.Length; i++) p[i] /= total;
        return p;
    }

    /// <summary>The first index of the largest score (torch.argmax's tie rule).</summary>
    public static int ArgMax(ReadOnlySpan<float> scores)
    {
        if (scores.IsEmpty) throw new ArgumentException("no scores", nameof(scores));
        int best = 0;
        for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
        return best;
    }

    /// <summary>
    /// One multinomial draw from <paramref name="probabilities"/> with the uniform variate <paramref name="u"/> in
    /// [0, 1): the first index whose cumulative probability exceeds u (zero-probability entries are never chosen).
    /// </summary>
    public static int SampleIndex(ReadOnlySpan<double> probabilities, double u)
    {
        if (!(u >= 0 && u < 1)) throw new ArgumentOutOfRangeException(nameof(u), u, "must be in [0, 1)");
        double total = 0;
        foreach (double p in probabilities) total += p;
        double target = u * total, cumulative = 0;
        int last = -1;
        for (int i = 0; i < probabilities.Length; i++)
        {
            if (!(probabilities[i] > 0)) continue;
            last = i;
            cumulative += probabilities[i];
            if (cumulative > target) return i;
        }
        return last >= 0 ? last : throw new ArgumentException("every probability is 0", nameof(probabilities));
    }
}
