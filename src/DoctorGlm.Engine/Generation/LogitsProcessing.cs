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
        System.Numerics.Tensors.TensorPrimitives.Divide(scores, temperature, scores); // IEEE division per element, vectorised
    }

    /// <summary>
    /// HF <c>TopKLogitsWarper</c>: scores strictly below the k-th largest become −∞ (ties with it are kept);
    /// k is clamped to [1, V]; k = 0 disables it.
    /// </summary>
    /// <remarks>
    /// The k-th largest comes from a size-k min-heap, O(V log k): sorting ChatGLM's 130,528 scores for it took
    /// several milliseconds per token and row, more than a GPU decoding step.
    /// </remarks>
    public static void ApplyTopK(Span<float> scores, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k == 0 || k >= scores.Length) return;
        var heap = new PriorityQueue<float, float>(k); // the k largest so far; its minimum on top
        foreach (float x in scores)
        {
            if (heap.Count < k) heap.Enqueue(x, x);
            else if (x > heap.Peek()) heap.EnqueueDequeue(x, x);
        }
        float kth = heap.Peek();
        for (int i = 0; i < scores.Length; i++) if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    /// <summary>
    /// HF <c>TopPLogitsWarper</c>: sort the scores ascending, take the cumulative softmax, set −∞ on every entry
    /// whose cumulative probability is ≤ 1 − p, but always keep the best one. p = 1 disables it. Equal scores are
    /// ordered by id (a stable sort; torch's order among ties is unspecified).
    /// </summary>
    /// <remarks>
    /// Only the finite scores are sorted: the −∞ ones (everything top-k removed) sort first, add exactly 0 to the sum
    /// and to every cumulative value, and stay −∞, so leaving them out changes no bit of the result. The sort key packs
    /// the score's order-preserving bits with the id, so ties order by id without a comparison delegate.
    /// </remarks>
    public static void ApplyTopP(Span<float> scores, float topP)
    {
        if (!(topP >= 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(topP), topP, "must be in [0, 1]");
        if (topP == 1f || scores.Length == 0) return;
        int n = 0;
        foreach (float x in scores) if (!float.IsNegativeInfinity(x)) n++;
        if (n == 0) return;
        var keys = new ulong[n];
        for (int i = 0, j = 0; i < scores.Length; i++)
            if (!float.IsNegativeInfinity(scores[i])) keys[j++] = ((ulong)OrderedBits(scores[i]) << 32) | (uint)i;
        Array.Sort(keys); // ascending by score, then by id
        double max = scores[(int)(uint)keys[^1]];
        double total = 0;
        var exp = new double[n];
        for (int i = 0; i < n; i++) { exp[i] = Math.Exp(scores[(int)(uint)keys[i]] - max); total += exp[i]; }
        double cumulative = 0, threshold = 1.0 - topP;
        for (int i = 0; i < n - 1; i++) // the last (best) entry is always kept
        {
            cumulative += exp[i] / total;
            if (cumulative <= threshold) scores[(int)(uint)keys[i]] = float.NegativeInfinity;
        }
    }

    /// <summary>The float's bits mapped so that unsigned order is numeric order (negative numbers flipped whole, positive ones get the sign bit).</summary>
    private static uint OrderedBits(float x)
    {
        if (x == 0f) x = 0f; // −0 and +0 are one value: their ties order by id, as in a comparison sort
        uint b = BitConverter.SingleToUInt32Bits(x);
        return (b & 0x8000_0000u) != 0 ? ~b : b | 0x8000_0000u;
    }

    /// <summary>
    /// The whole per-step pipeline of spec §7 on <paramref name="scores"/> (the last position's logits), given the
    /// sequence so far. Returns whether the invalid-score guard fired.
    /// </summary>
    public static bool Process(Span<float> scores, ReadOnlySpan<int> sequence, GenerationOptions options, int invalidScoreTokenId)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.RepetitionPenalty != 1f) ApplyRepetitionPenalty(scores, sequence, options.RepetitionPenalty);
        return ProcessPenalized(scores, options, invalidScoreTokenId);
    }

    /// <summary><see cref="Process"/> for scores that already carry the repetition penalty (the device applied it: see
    /// <see cref="Backends.IBackend.SelectCandidates"/>).</summary>
    internal static bool ProcessPenalized(Span<float> scores, GenerationOptions options, int invalidScoreTokenId)
    {
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
        double max = scores.IsEmpty ? double.NegativeInfinity : System.Numerics.Tensors.TensorPrimitives.Max(scores);
        if (double.IsNegativeInfinity(max)) throw new ArgumentException("every score is −∞: nothing can be sampled", nameof(scores));
        var p = new double[scores.Length];
        double total = 0;
        // After top-k nearly every score is −∞: its probability is exactly 0 without a call to Math.Exp (slow on −∞).
        for (int i = 0; i < p.Length; i++)
            if (!float.IsNegativeInfinity(scores[i])) { p[i] = Math.Exp(scores[i] - max); total += p[i]; }
        for (int i = 0; i < p.Length; i++) if (p[i] != 0) p[i] /= total; // 0 / total is 0: skip the division
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
