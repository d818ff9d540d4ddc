using DoctorGlm.Engine.Backends.Cpu;
using DoctorGlm.Engine.Generation;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// The device half of the §7 pipeline (<see cref="Backends.IBackend.SelectCandidates"/>, CPU reference) against the
/// host pipeline (<see cref="LogitsProcessing"/>, itself checked against hand-computed values in
/// <see cref="SamplingTests"/>), and picks through candidates against picks from the whole row: same tokens, bit for
/// bit the same scores, on scores with many ties.
/// </summary>
public sealed class CandidatePickingTests
{
    /// <summary>Scores on a coarse grid (many exact ties, some of them −0 next to +0), negative ones included.</summary>
    private static float[] TiedScores(Random rng, int n)
    {
        var s = new float[n];
        for (int i = 0; i < n; i++) s[i] = MathF.Round((float)(rng.NextDouble() * 12 - 6) * 4) / 4;
        for (int i = 0; i < n; i += 37) s[i] = -0f;
        return s;
    }

    private sealed record RowSetting(float Penalty, float Temperature, int TopK);

    private static readonly RowSetting[] s_settings =
    [
        new(1f, 1f, 1), new(1.3f, 1f, 1), new(1f, 0.7f, 50), new(2f, 0.95f, 50), new(0.5f, 1.7f, 5), new(1.2f, 0.3f, 0), new(1f, 1f, 997),
    ];

    /// <summary>Runs the CPU op over one row per setting; returns (ids, scores, counts, penalised rows).</summary>
    private static (int[] Ids, float[] Scores, int[] Counts, float[] Rows) Select(float[][] rows, int[][] penalised, RowSetting[] settings, int capacity)
    {
        int batch = rows.Length, v = rows[0].Length, l = Math.Max(1, penalised.Max(p => p.Length));
        var ids = Enumerable.Repeat(-1, batch * l).ToArray();
        for (int b = 0; b < batch; b++) penalised[b].CopyTo(ids, b * l);
        using var scope = TensorScope.Begin();
        var scores = Tensor.FromArray(rows.SelectMany(r => r).ToArray(), new Shape(batch, v));
        var candIds = Tensor.Full(new Shape(batch, capacity), -7f, DType.I32);
        var candScores = Tensor.Full(new Shape(batch, capacity), float.NaN);
        var counts = Tensor.Full(new Shape(batch), -9f, DType.I32);
        CpuBackend.Instance.SelectCandidates(scores, Tensor.FromArray(ids, new Shape(batch, l)),
            Tensor.FromArray(settings.SelectMany(s => new[] { s.Penalty, s.Temperature }).ToArray(), new Shape(batch, 2)),
            Tensor.FromArray(settings.Select(s => s.TopK).ToArray(), new Shape(batch)), candIds, candScores, counts);
        return (candIds.ToIntArray(), candScores.ToFloatArray(), counts.ToIntArray(), scores.ToFloatArray());
    }

    [Fact]
    public void Candidates_are_exactly_the_scores_the_host_top_k_keeps_in_id_order()
    {
        var rng = new Random(5);
        const int v = 1003, capacity = 300;
        var rows = s_settings.Select(_ => TiedScores(rng, v)).ToArray();
        var sequences = s_settings.Select(_ => Enumerable.Range(0, 40).Select(_ => rng.Next(v)).ToArray()).ToArray();
        var penalised = sequences.Select(s => s.Distinct().ToArray()).ToArray();
        var (ids, scores, counts, written) = Select(rows, penalised, s_settings, capacity);
        for (int b = 0; b < rows.Length; b++)
        {
            var st = s_settings[b];
            var host = (float[])rows[b].Clone();
            LogitsProcessing.ApplyRepetitionPenalty(host, sequences[b], st.Penalty);
            Assert.Equal(host, written.AsSpan(b * v, v).ToArray()); // the op leaves the penalised scores behind
            LogitsProcessing.ApplyTemperature(host, st.Temperature);
            LogitsProcessing.ApplyTopK(host, st.TopK);
            var kept = Enumerable.Range(0, v).Where(j => !float.IsNegativeInfinity(host[j])).ToArray();
            Assert.Equal(kept.Length, counts[b]);
            int n = Math.Min(kept.Length, capacity);
            Assert.Equal(kept[..n], ids.AsSpan(b * capacity, n).ToArray());
            for (int i = 0; i < n; i++)
                Assert.Equal(BitConverter.SingleToInt32Bits(host[kept[i]]), BitConverter.SingleToInt32Bits(scores[b * capacity + i]));
            if (st.TopK is > 0 and < v) Assert.True(kept.Length >= st.TopK && kept.Length < st.TopK + 40, $"row {b}: {kept.Length} candidates for k = {st.TopK}");
        }
        Assert.True(counts[5] == v && counts[6] > capacity, "top-k off, and k beyond the buffer, overflow it");
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void A_row_with_a_non_finite_penalised_score_is_reported_and_the_others_are_not_disturbed(float bad)
    {
        var rng = new Random(8);
        var rows = new[] { TiedScores(rng, 300), TiedScores(rng, 300) };
        rows[0][123] = bad;
        rows[1][7] = 3e38f; // finite, but ∞ once the penalty θ < 1 divides it
        var (_, _, counts, written) = Select(rows, [[], [7]], [new(1f, 1f, 1), new(0.5f, 1f, 1)], 8);
        Assert.Equal(-1, counts[0]);
        Assert.Equal(-1, counts[1]);
        Assert.Equal(float.PositiveInfinity, written[300 + 7]);
        var (_, _, ok, _) = Select([rows[1]], [[]], [new(1f, 1f, 1)], 8);
        Assert.Equal(1, ok[0]);
    }

    [Fact]
    public void Bad_arguments_are_refused_naming_the_tensor()
    {
        using var scope = TensorScope.Begin();
        var scores = Tensor.Zeros(new Shape(2, 10));
        var ids = Tensor.Zeros(new Shape(2, 3), DType.I32);
        var settings = Tensor.Zeros(new Shape(2, 2));
        var topK = Tensor.Zeros(new Shape(2), DType.I32);
        var candIds = Tensor.Zeros(new Shape(2, 4), DType.I32);
        var candScores = Tensor.Zeros(new Shape(2, 4));
        var counts = Tensor.Zeros(new Shape(2), DType.I32);
        var be = CpuBackend.Instance;
        string Refused(Action call) => Assert.Throws<ArgumentException>(call).Message;
        Assert.StartsWith("SelectCandidates: settings [2, 3]", Refused(() => be.SelectCandidates(scores, ids, Tensor.Zeros(new Shape(2, 3)), topK, candIds, candScores, counts)));
        Assert.StartsWith("SelectCandidates: topK [2] F32", Refused(() => be.SelectCandidates(scores, ids, settings, Tensor.Zeros(new Shape(2)), candIds, candScores, counts)));
        Assert.StartsWith("SelectCandidates: candidateScores [2, 5]", Refused(() => be.SelectCandidates(scores, ids, settings, topK, candIds, Tensor.Zeros(new Shape(2, 5)), counts)));
        Assert.StartsWith("SelectCandidates: scores [20]", Refused(() => be.SelectCandidates(Tensor.Zeros(new Shape(20)), ids, settings, topK, candIds, candScores, counts)));
    }

    /// <summary>Rows for <see cref="GlmGenerator.PickAll"/>: each setting once, with a sequence of random ids and its own generator.</summary>
    private static GlmGenerator.RowState[] Rows(GlmGenerator gen, Random rng, ulong seed)
    {
        int v = gen.Model.Config.VocabSize;
        var options = new GenerationOptions[]
        {
            GenerationOptions.Greedy, new() { DoSample = false, RepetitionPenalty = 1.5f }, new() { Seed = 1 },
            new() { DoSample = false, Temperature = 1e-38f }, // greedy ignores temperature (this one would tie every positive score at +∞)
            new() { RepetitionPenalty = 1.3f, TopP = 0.9f }, new() { Temperature = 2f, TopK = 0, TopP = 0.5f },
            new() { Temperature = 0.5f, TopK = 3, TopP = 1f, RepetitionPenalty = 0.7f }, new() { TopK = 100, TopP = 0.99f },
        };
        return [.. options.Select((o, i) => new GlmGenerator.RowState([.. Enumerable.Range(0, 30).Select(_ => rng.Next(v))], 0, 0, o, -1, int.MaxValue,
            new RandomGenerator(seed + (ulong)i)))];
    }

    /// <summary>Rows of every kind: greedy with and without penalty (and with a temperature it must ignore), sampling with top-k and top-p, top-k off (its
    /// candidates overflow the 164-slot buffer: the whole-row fallback), and every tenth trial a NaN (the guard).</summary>
    [Fact]
    public void Picks_through_candidates_equal_picks_from_the_whole_row()
    {
        using var model = ModelFixture.LoadModel();
        model.Training = false;
        var gen = new GlmGenerator(model);
        int v = model.Config.VocabSize;
        for (int trial = 0; trial < 40; trial++)
        {
            var data = new Random(trial);
            var rowsA = Rows(gen, new Random(100 + trial), (ulong)trial * 31);
            var rowsB = Rows(gen, new Random(100 + trial), (ulong)trial * 31);
            var logits = Enumerable.Range(0, rowsA.Length).SelectMany(_ => TiedScores(data, v)).ToArray();
            if (trial % 10 == 3) logits[3 * v + 11] = float.NaN; // one row through the invalid-score guard
            using var scope = TensorScope.Begin();
            gen.SelectOnDevice = false;
            var whole = gen.PickAll(rowsA, Tensor.FromArray(logits, new Shape(rowsA.Length, 1, v)));
            gen.SelectOnDevice = true;
            var reduced = gen.PickAll(rowsB, Tensor.FromArray(logits, new Shape(rowsB.Length, 1, v)));
            Assert.Equal(whole, reduced);
            if (trial % 10 == 3) Assert.Equal(gen.InvalidScoreTokenId, reduced[3]);
        }
    }

    [Fact]
    public void Generation_through_candidates_gives_the_same_answers()
    {
        using var model = ModelFixture.LoadModel();
        model.Training = false;
        var on = new GlmGenerator(model) { SelectOnDevice = true };
        var off = new GlmGenerator(model) { SelectOnDevice = false };
        var ct = TestContext.Current.CancellationToken;
        var c = model.Config;
        int[][] prompts = [[5, 17, 42, 9, c.GMaskTokenId, c.BosTokenId], [88, 3, 120, 61, 77, 30, 12, c.GMaskTokenId, c.BosTokenId]];
        var options = new[]
        {
            new GenerationOptions { DoSample = false, RepetitionPenalty = 1.4f, MaxLength = 40 },
            new GenerationOptions { Seed = 11, MaxLength = 40 },
            new GenerationOptions { Seed = 12, TopK = 0, Temperature = 1.5f, MaxLength = 40 },
        };
        foreach (var o in options)
        {
            foreach (var p in prompts) Assert.Equal(off.Generate(p, o, ct), on.Generate(p, o, ct));
            Assert.Equal(off.GenerateBatch(prompts, o, ct), on.GenerateBatch(prompts, o, ct));
        }
    }
}
