using DoctorGlm.Engine.Generation;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>The §7 score pipeline, each processor and warper against hand-computed values.</summary>
public sealed class SamplingTests
{
    private const float NegInf = float.NegativeInfinity;

    [Fact]
    public void Repetition_penalty_divides_positive_multiplies_negative_once_per_distinct_id()
    {
        float[] s = [2f, -2f, 0f, 4f, -1f];
        LogitsProcessing.ApplyRepetitionPenalty(s, [0, 1, 2, 0, 0, 1], 2f);
        Assert.Equal([1f, -4f, 0f, 4f, -1f], s);
        float[] t = [2f, -2f];
        LogitsProcessing.ApplyRepetitionPenalty(t, [0, 1], 0.5f); // θ < 1 favours repeats
        Assert.Equal([4f, -1f], t);
        Assert.Throws<ArgumentOutOfRangeException>(() => LogitsProcessing.ApplyRepetitionPenalty(t, [7], 2f));
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void Invalid_score_guard_zeroes_everything_and_forces_the_space_token(float bad)
    {
        var s = new float[8];
        for (int i = 0; i < s.Length; i++) s[i] = i - 3;
        s[2] = bad;
        Assert.True(LogitsProcessing.ApplyInvalidScoreGuard(s, 5));
        Assert.Equal([0f, 0f, 0f, 0f, 0f, 5e4f, 0f, 0f], s);
        float[] ok = [1f, -1e30f, 3f, 0f, 0f, 0f];
        Assert.False(LogitsProcessing.ApplyInvalidScoreGuard(ok, 5));
        Assert.Equal([1f, -1e30f, 3f, 0f, 0f, 0f], ok);
    }

    [Fact]
    public void Temperature_divides()
    {
        float[] s = [1f, -2f, 0.5f];
        LogitsProcessing.ApplyTemperature(s, 0.5f);
        Assert.Equal([2f, -4f, 1f], s);
    }

    [Fact]
    public void Top_k_keeps_scores_at_or_above_the_kth_largest_including_ties()
    {
        float[] s = [1f, 3f, 3f, 2f, 0f];
        LogitsProcessing.ApplyTopK(s, 2);
        Assert.Equal([NegInf, 3f, 3f, NegInf, NegInf], s);
        float[] t = [1f, 3f, 3f, 2f, 0f];
        LogitsProcessing.ApplyTopK(t, 3);
        Assert.Equal([NegInf, 3f, 3f, 2f, NegInf], t);
        float[] u = [1f, 2f];
        LogitsProcessing.ApplyTopK(u, 0);
        LogitsProcessing.ApplyTopK(u, 10);
        Assert.Equal([1f, 2f], u);
    }

    [Fact]
    public void Top_p_drops_the_low_tail_whose_cumulative_probability_is_at_most_one_minus_p()
    {
        // probabilities 0.5, 0.3, 0.2 → ascending cumulative 0.2, 0.5, 1.0
        float[] s = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.2f)];
        var p7 = (float[])s.Clone();
        LogitsProcessing.ApplyTopP(p7, 0.7f); // drop cum ≤ 0.3: only the 0.2 entry
        Assert.Equal([s[0], s[1], NegInf], p7);
        var p4 = (float[])s.Clone();
        LogitsProcessing.ApplyTopP(p4, 0.4f); // drop cum ≤ 0.6: 0.2 and 0.3
        Assert.Equal([s[0], NegInf, NegInf], p4);
    }

    [Fact]
    public void Top_p_edge_cases_equality_drops_ties_by_id_best_always_kept()
    {
        // Four equal scores: exact probabilities 0.25, cumulative 0.25, 0.5, 0.75, 1 in id order.
        float[] half = [0f, 0f, 0f, 0f];
        LogitsProcessing.ApplyTopP(half, 0.5f); // cum ≤ 0.5 dropped, equality included (HF uses <=)
        Assert.Equal([NegInf, NegInf, 0f, 0f], half);
        float[] zero = [0f, 0f, 0f, 0f];
        LogitsProcessing.ApplyTopP(zero, 0f); // everything ≤ 1 would go; the best one stays
        Assert.Equal([NegInf, NegInf, NegInf, 0f], zero);
        float[] one = [0f, 1f];
        LogitsProcessing.ApplyTopP(one, 1f);
        Assert.Equal([0f, 1f], one);
        float[] withInf = [NegInf, 5f, NegInf]; // after top-k: −∞ entries have probability 0
        LogitsProcessing.ApplyTopP(withInf, 0.7f);
        Assert.Equal([NegInf, 5f, NegInf], withInf);
    }

    [Fact]
    public void Pipeline_order_guard_before_temperature_and_greedy_skips_warpers()
    {
        var opts = new GenerationOptions { Temperature = 0.5f, TopK = 1, TopP = 0.7f };
        float[] s = [1f, float.NaN, 0f, 0f, 0f, 0f, 2f];
        LogitsProcessing.Process(s, [0], opts, 5);
        // guard (5e4 on id 5) then temperature (×2) then top-k 1
        Assert.Equal([NegInf, NegInf, NegInf, NegInf, NegInf, 1e5f, NegInf], s);

        float[] g = [1f, 3f, 2f];
        LogitsProcessing.Process(g, [1], opts with { DoSample = false, RepetitionPenalty = 2f }, 0);
        Assert.Equal([1f, 1.5f, 2f], g); // penalty applied, top-k/temperature not
        Assert.Equal(2, LogitsProcessing.ArgMax(g));
    }

    [Fact]
    public void Sampling_draws_by_cumulative_probability_and_argmax_takes_the_first_tie()
    {
        double[] p = [0, 0.5, 0, 0.5];
        Assert.Equal(1, LogitsProcessing.SampleIndex(p, 0));
        Assert.Equal(1, LogitsProcessing.SampleIndex(p, 0.49));
        Assert.Equal(3, LogitsProcessing.SampleIndex(p, 0.5));
        Assert.Equal(3, LogitsProcessing.SampleIndex(p, 0.999999));
        Assert.Equal(1, LogitsProcessing.ArgMax([0f, 2f, 2f]));
        var sm = LogitsProcessing.Softmax([0f, NegInf, 0f]);
        Assert.Equal([0.5, 0, 0.5], sm);
    }

    /// <summary>
    /// The selection-based top-k and the finite-only top-p against the plain full-sort definitions (kept here as the
    /// reference), bit for bit, on random scores with many ties, ±0, −∞ entries, and ChatGLM's full vocabulary size,
    /// for k in {1, 50, V−1} and p in {0, 0.7, 0.95}, alone and chained as §7 chains them.
    /// </summary>
    [Fact]
    public void Top_k_and_top_p_equal_their_full_sort_definitions_bit_for_bit()
    {
        var rng = new Random(7);
        foreach (int v in new[] { 9, 1000, 130528 })
            for (int trial = 0; trial < 4; trial++)
            {
                var scores = new float[v];
                for (int i = 0; i < v; i++)
                    scores[i] = trial switch
                    {
                        0 => (float)(rng.NextDouble() * 20 - 10),
                        1 => rng.Next(-3, 4) * 0.5f,                            // many ties, +0
                        2 => rng.Next(4) == 0 ? NegInf : (float)rng.NextDouble(), // −∞ entries
                        _ => rng.Next(3) switch { 0 => -0f, 1 => 0f, _ => 1f },  // ±0 ties
                    };
                foreach (int k in new[] { 1, 50, v - 1 })
                {
                    float[] a = [.. scores], b = [.. scores];
                    LogitsProcessing.ApplyTopK(a, k);
                    ReferenceTopK(b, k);
                    Assert.Equal(b, a);
                    foreach (float p in new[] { 0f, 0.7f, 0.95f })
                    {
                        float[] c = [.. a], d = [.. a], e = [.. scores], f = [.. scores];
                        LogitsProcessing.ApplyTopP(c, p);
                        ReferenceTopP(d, p);
                        Assert.Equal(d, c);
                        LogitsProcessing.ApplyTopP(e, p);
                        ReferenceTopP(f, p);
                        Assert.Equal(f, e);
                    }
                }
            }
    }

    private static void ReferenceTopK(float[] scores, int k)
    {
        if (k == 0 || k >= scores.Length) return;
        var sorted = scores.ToArray();
        Array.Sort(sorted);
        float kth = sorted[sorted.Length - k];
        for (int i = 0; i < scores.Length; i++) if (scores[i] < kth) scores[i] = NegInf;
    }

    private static void ReferenceTopP(float[] scores, float topP)
    {
        if (topP == 1f) return;
        var order = Enumerable.Range(0, scores.Length).ToArray();
        var keys = scores.ToArray();
        Array.Sort(order, (a, b) => { int c = keys[a].CompareTo(keys[b]); return c != 0 ? c : a.CompareTo(b); });
        double max = keys[order[^1]], total = 0;
        var exp = new double[order.Length];
        for (int i = 0; i < order.Length; i++) { exp[i] = Math.Exp(keys[order[i]] - max); total += exp[i]; }
        double cumulative = 0, threshold = 1.0 - topP;
        for (int i = 0; i < order.Length - 1; i++)
        {
            cumulative += exp[i] / total;
            if (cumulative <= threshold) scores[order[i]] = NegInf;
        }
    }
}
