using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// Batched generation (<see cref="GlmGenerator.GenerateBatch"/>): prompts of different lengths left-padded into one
/// batch, with the KV cache hiding each row's pads from later steps (<see cref="GlmKvCache.SetLeftPadding"/>). Checked
/// against the PyTorch oracle's per-prompt greedy answers and step logits (tools/reference/make_generation_fixtures.py),
/// against single-prompt generation with the same seed, and with rows that finish early.
/// </summary>
public sealed class BatchGenerationTests(ITestOutputHelper output)
{
    private const float Penalty = 10f;
    private const int NewTokens = 12; // the fixture's continuation length

    public static TheoryData<string, bool> Groups => new()
    {
        { "base", true }, { "base", false }, { "lora", true }, { "lora", false }, { "ptuning", true }, { "ptuning", false },
    };

    private static string[] Names(string group) => group switch
    {
        "base" => ["p0", "p1", "p2", "turn2"],
        "lora" => ["lora0", "lora1"],
        _ => ["ptuning0", "ptuning1"],
    };

    private static GenerationOptions Greedy(bool useCache) =>
        new() { DoSample = false, RepetitionPenalty = Penalty, MaxNewTokens = NewTokens, UseCache = useCache };

    [Theory]
    [MemberData(nameof(Groups))]
    public void Every_row_gets_its_reference_answer_and_early_finishers_do_not_disturb_the_rest(string group, bool useCache)
    {
        var names = Names(group);
        using var f = ModelFixture.Open("generation");
        var prompts = names.Select(n => f.Load($"{n}.prompt").ToIntArray()).ToArray();
        var expected = names.Select(n => f.Load($"{n}.greedy").ToIntArray()).ToArray();
        Assert.True(prompts.Select(p => p.Length).Distinct().Count() > 1, "the batch must need padding");
        using var model = GenerationTests.Model(names[0]);
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var answers = gen.GenerateBatch(prompts, Greedy(useCache), ct);
        for (int b = 0; b < names.Length; b++)
        {
            output.WriteLine($"{names[b]} (prompt {prompts[b].Length}): [{string.Join(", ", answers[b])}]");
            Assert.Equal(expected[b], answers[b]);
        }
        // Row 0 stops after 3 tokens at a stop token taken from its own answer; the others stop at it too, if ever.
        int stop = expected[0][3];
        Assert.DoesNotContain(stop, expected[0][..3]);
        var early = gen.GenerateBatch(prompts, Greedy(useCache) with { EosTokenId = stop }, ct);
        for (int b = 0; b < names.Length; b++)
        {
            int cut = Array.IndexOf(expected[b], stop);
            Assert.Equal(cut < 0 ? expected[b] : expected[b][..cut], early[b]);
        }
        Assert.Equal(3, early[0].Length);
        Assert.Contains(early, a => a.Length == NewTokens); // some row ran on after row 0 finished and left the batch

        // The longest prompt's row (the one without pads) leaves first: the others' common pads are cut from the cache.
        int longest = Array.IndexOf(prompts, prompts.MaxBy(p => p.Length));
        int stop2 = expected[longest].Skip(1).First(t => Array.IndexOf(expected[longest], t) > 0);
        var early2 = gen.GenerateBatch(prompts, Greedy(useCache) with { EosTokenId = stop2 }, ct);
        for (int b = 0; b < names.Length; b++)
        {
            int cut = Array.IndexOf(expected[b], stop2);
            Assert.Equal(cut < 0 ? expected[b] : expected[b][..cut], early2[b]);
        }
        Assert.True(early2[longest].Length < NewTokens);
    }

    [Theory]
    [InlineData("base")]
    [InlineData("lora")]
    [InlineData("ptuning")]
    public void Batched_cached_step_logits_match_the_reference_row_by_row(string group)
    {
        var names = Names(group);
        using var f = ModelFixture.Open("generation");
        var prompts = names.Select(n => f.Load($"{n}.prompt").ToIntArray()).ToArray();
        var tokens = names.Select(n => f.Load($"{n}.greedy").ToIntArray()).ToArray();
        var reference = names.Select(n => f.Floats($"{n}.logits")).ToArray();
        using var model = GenerationTests.Model(names[0]);
        var config = model.Config;
        int batch = names.Length, v = config.VocabSize, steps = tokens.Min(t => t.Length);
        using var cache = model.CreateCache(batch);
        // The generator's public batched step over its own cache must be this very computation, and without a cache the full forward.
        var gen = new GlmGenerator(model);
        using var genCache = model.CreateCache(batch);
        var seqs = prompts.Select(p => p.ToList()).ToArray();
        double worst = 0, worstFull = 0;
        using (GradMode.NoGrad())
        {
            for (int step = 0; step < steps; step++)
            {
                var stepped = gen.NextLogitsBatch(seqs, genCache);
                var steppedFull = gen.NextLogitsBatch(seqs, null);
                for (int b = 0; b < batch; b++) seqs[b].Add(tokens[b][step]);
                using var scope = TensorScope.Begin();
                float[] logits;
                if (step == 0)
                {
                    using var inputs = GlmInputs.Build(prompts, config);
                    cache.SetLeftPadding(inputs.PadLeft);
                    logits = model.Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, cache, lastOnly: true).ToFloatArray();
                }
                else
                {
                    var ids = new int[batch];
                    var pos = new int[2 * batch];
                    for (int b = 0; b < batch; b++)
                    {
                        var (ctx, maskPos) = GlmInputs.ContextAndMask(prompts[b], config);
                        int t = prompts[b].Length + step - 1; // index of the token fed, in the unpadded sequence
                        ids[b] = tokens[b][step - 1];
                        pos[2 * b] = maskPos;
                        pos[2 * b + 1] = t - ctx + 1;
                    }
                    using var past = cache.PastMask();
                    Assert.NotNull(past); // the rows' pads are in the past now
                    logits = model.Forward(Tensor.FromArray(ids, new Shape(batch, 1)), Tensor.FromArray(pos, new Shape(batch, 2, 1)), null, cache).ToFloatArray();
                }
                for (int b = 0; b < batch; b++)
                {
                    worst = Math.Max(worst, ModelFixture.MaxAbs(reference[b].AsSpan(step * v, v), logits.AsSpan(b * v, v)));
                    worstFull = Math.Max(worstFull, ModelFixture.MaxAbs(steppedFull[b], logits.AsSpan(b * v, v)));
                    Assert.Equal(logits.AsSpan(b * v, v).ToArray(), stepped[b]);
                }
            }
        }
        output.WriteLine($"{group}: {batch} rows, {steps} steps, max |batched − reference| {worst:E3}, max |cached − full forward| {worstFull:E3}");
        Assert.True(worst < 1e-4, $"{group}: batched logits vs reference {worst:E3}");
        Assert.True(worstFull < 1e-5, $"{group}: batched cached vs full-forward logits {worstFull:E3}");
        seqs[0].Add(7); // two new tokens in row 0: the cache holds one fewer
        Assert.Contains("of row 0", Assert.Throws<InvalidOperationException>(() => gen.NextLogitsBatch(seqs, genCache)).Message);
        // A step's tokens are checked on the host before they go up (the embedding then skips its device check), and
        // the message is the embedding's own, naming the row.
        seqs[0].RemoveAt(seqs[0].Count - 1);
        seqs[^1][^1] = config.VocabSize + 5; // the newest token of the last row, the one this step embeds
        var bad = Assert.Throws<ArgumentOutOfRangeException>(() => gen.NextLogitsBatch(seqs, genCache));
        Assert.Contains($"Embedding: ids[{batch - 1}] = {config.VocabSize + 5} is outside the table's {config.VocabSize} rows", bad.Message);
    }

    /// <summary>
    /// <see cref="GlmKvCache.Append"/> (continuous batching): a running batch takes in a cache of newly arrived prompts,
    /// in both directions of the length difference (the newcomer's text longer, then shorter, than the batch's) and
    /// with a P-Tuning prefix in front; every row's next logits must be those of its own single-row cache. With
    /// <see cref="GlmKvCache.ReservedRows"/> the batch has a free row, and a newcomer no longer than the batch goes into
    /// it without copying the running row (<c>AppendsInPlace</c>); a longer one still takes the copying path.
    /// </summary>
    [Theory]
    [InlineData("p0", "turn2", false)]
    [InlineData("turn2", "p1", false)]
    [InlineData("ptuning0", "ptuning1", false)]
    [InlineData("p0", "turn2", true)]
    [InlineData("turn2", "p1", true)]
    [InlineData("ptuning0", "ptuning1", true)]
    public void Appended_caches_continue_every_row_as_alone(string running, string arriving, bool reserve)
    {
        using var f = ModelFixture.Open("generation");
        int[] Load(string n, string what) => f.Load($"{n}.{what}").ToIntArray();
        using var model = GenerationTests.Model(running);
        var gen = new GlmGenerator(model);
        var a = Load(running, "prompt").ToList();
        var b = Load(arriving, "prompt").ToList();
        var ta = Load(running, "greedy");
        var tb = Load(arriving, "greedy");
        using var batch = model.CreateCache(1);
        using var aloneA = model.CreateCache(1);
        using var aloneB = model.CreateCache(1);
        for (int i = 0; i < 3; i++) // the running row decodes a few tokens first
        {
            gen.NextLogitsBatch([a], batch);
            gen.NextLogitsBatch([a], aloneA);
            a.Add(ta[i]);
        }
        if (reserve)
        {
            batch.ReservedRows = 3; // reallocates the running row's buffers with two spare rows
            batch.FillSpareRows(float.NaN); // stale memory: the newcomer's gap must be zeroed, not left as it was
        }
        bool inPlace;
        using (var arrived = model.CreateCache(1))
        {
            gen.NextLogitsBatch([b], arrived);
            gen.NextLogitsBatch([b], aloneB);
            b.Add(tb[0]);
            inPlace = reserve && arrived.TokenCount <= batch.TokenCount;
            batch.Append(arrived);
        }
        Assert.Equal(2, batch.Batch);
        Assert.Equal(inPlace ? 1 : 0, batch.AppendsInPlace);
        double worst = 0;
        for (int step = 1; step < 6; step++)
        {
            var both = gen.NextLogitsBatch([a, b], batch);
            worst = Math.Max(worst, ModelFixture.MaxAbs(gen.NextLogitsBatch([a], aloneA)[0], both[0]));
            worst = Math.Max(worst, ModelFixture.MaxAbs(gen.NextLogitsBatch([b], aloneB)[0], both[1]));
            a.Add(ta[2 + step]);
            b.Add(tb[step]);
        }
        output.WriteLine($"{running} + {arriving}: pads {string.Join(",", batch.PadLeft)}, max |batched − alone| {worst:E3}");
        Assert.True(worst < 1e-5, $"appended rows drift from their single-row caches: {worst:E3}");
        Assert.Contains(batch.PadLeft, p => p > 0);
    }

    [Fact]
    public void Sampled_rows_equal_single_generation_with_the_same_seed()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        int[][] prompts = [[150, 4, 60, 60, 17, 88, 9, 120, 44, 191, 192], [11, 27, 191, 192], [60, 61, 62, 63, 64, 65, 191, 192]];
        var o = new GenerationOptions { MaxNewTokens = 14, Temperature = 3f, TopP = 1f, TopK = 0, RepetitionPenalty = 2f, Seed = 7 };
        var ct = TestContext.Current.CancellationToken;
        var batched = gen.GenerateBatch(prompts, o, ct);
        for (int b = 0; b < prompts.Length; b++)
        {
            var alone = gen.Generate(prompts[b], o, ct);
            output.WriteLine($"row {b}: [{string.Join(", ", batched[b])}]");
            Assert.Equal(alone, batched[b]);
            Assert.True(alone.Distinct().Count() > 3, "the test needs a spread-out distribution");
        }
    }

    [Fact]
    public void MaxNewTokens_caps_each_row_and_MaxLength_still_counts_its_own_prompt()
    {
        using var f = ModelFixture.Open("generation");
        var p0 = f.Load("p0.prompt").ToIntArray();
        var p1 = f.Load("p1.prompt").ToIntArray();
        var e0 = f.Load("p0.greedy").ToIntArray();
        var e1 = f.Load("p1.greedy").ToIntArray();
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var o = new GenerationOptions { DoSample = false, RepetitionPenalty = Penalty };
        Assert.Equal(e0[..5], gen.Generate(p0, o with { MaxNewTokens = 5 }, ct));
        // MaxLength = longer prompt + 4: the shorter prompt gets more new tokens, as it would alone.
        int maxLength = Math.Max(p0.Length, p1.Length) + 4;
        var r = gen.GenerateBatch([p0, p1], o with { MaxLength = maxLength }, ct);
        Assert.Equal(e0[..(maxLength - p0.Length)], r[0]);
        Assert.Equal(e1[..(maxLength - p1.Length)], r[1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => gen.Generate(p0, o with { MaxNewTokens = 0 }, ct));
    }

    [Fact]
    public void Rejects_bad_batches_and_cache_padding()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        Assert.Contains("no prompts", Assert.Throws<ArgumentException>(() => gen.GenerateBatch([], null, ct)).Message);
        Assert.Contains("prompt 1 has no <sop>", Assert.Throws<ArgumentException>(() => gen.GenerateBatch([[11, 191, 192], [11, 27, 191]], null, ct)).Message);
        Assert.Contains("prompt 0: token 1 = 500", Assert.Throws<ArgumentOutOfRangeException>(() => gen.GenerateBatch([[11, 500, 191, 192]], null, ct)).Message);

        using var cache = model.CreateCache(2);
        Assert.Null(cache.PastMask());
        Assert.Contains("3 pad counts for a batch of 2", Assert.Throws<ArgumentException>(() => cache.SetLeftPadding([1, 0, 0])).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.SetLeftPadding([1, -1]));
        cache.SetLeftPadding([2, 0]);
        Assert.Equal([2, 0], cache.PadLeft);
        using (TensorScope.Begin())
        using (GradMode.NoGrad())
        using (var inputs = GlmInputs.Build([[11, 191, 192], [11, 27, 45, 191, 192]], model.Config))
            model.Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, cache, lastOnly: true);
        using (var past = cache.PastMask())
            Assert.Equal(new byte[] { 1, 1, 0, 0, 0, 0, 0, 0, 0, 0 }, past!.ToBytes());
        Assert.Contains("already holds 5 tokens", Assert.Throws<InvalidOperationException>(() => cache.SetLeftPadding([0, 0])).Message);
        // Dropping row 0 (the padded one) leaves row 1 with its own past and no pads.
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.KeepRows([1, 0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.KeepRows([2]));
        Assert.Throws<ArgumentException>(() => cache.KeepRows([]));
        cache.KeepRows([1]);
        Assert.Equal(1, cache.Batch);
        Assert.Equal([0], cache.PadLeft);
        Assert.Null(cache.PastMask());
        Assert.Equal(5, cache.Length);
        // Keeping only the padded row cuts its two pads out of the cache.
        using var padded = model.CreateCache(2);
        padded.SetLeftPadding([2, 0]);
        using (TensorScope.Begin())
        using (GradMode.NoGrad())
        using (var inputs = GlmInputs.Build([[11, 191, 192], [11, 27, 45, 191, 192]], model.Config))
            model.Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, padded, lastOnly: true);
        padded.KeepRows([0]);
        Assert.Equal((1, 3, 0), (padded.Batch, padded.Length, padded.PadLeft[0]));
        Assert.Null(padded.PastMask());
    }

    /// <summary>
    /// KeepRows moves runs of consecutive rows as one block: keeping rows 0, 1, 3, 5, 6 of seven (three runs), each
    /// kept row's past, in every layer and in both the fp32 and the bf16 cache, must be exactly the row it was.
    /// </summary>
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    public void KeepRows_moves_each_kept_rows_past_exactly(DType dtype)
    {
        using var model = ModelFixture.LoadModel();
        model.KvCacheDType = dtype;
        var c = model.Config;
        int[][] prompts = [.. Enumerable.Range(0, 7).Select(b => new[] { 11 + b, 40 + 3 * b, 7 + b, c.GMaskTokenId, c.BosTokenId })];
        using var cache = model.CreateCache(prompts.Length);
        using (TensorScope.Begin())
        using (GradMode.NoGrad())
        using (var inputs = GlmInputs.Build(prompts, c))
            model.Forward(inputs.Ids, inputs.PositionIds, inputs.Mask, cache, lastOnly: true);
        float[][] Rows(int layer, bool values)
        {
            var (k, v) = cache.Past(layer);
            var all = (values ? v : k)!.Contiguous().ToFloatArray();
            int per = all.Length / cache.Batch;
            return [.. Enumerable.Range(0, cache.Batch).Select(b => all[(b * per)..((b + 1) * per)])];
        }
        var before = Enumerable.Range(0, c.NumLayers).Select(l => (K: Rows(l, false), V: Rows(l, true))).ToArray();
        int[] keep = [0, 1, 3, 5, 6];
        cache.KeepRows(keep);
        Assert.Equal(keep.Length, cache.Batch);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var (k, v) = (Rows(l, false), Rows(l, true));
            for (int i = 0; i < keep.Length; i++)
            {
                Assert.Equal(before[l].K[keep[i]], k[i]);
                Assert.Equal(before[l].V[keep[i]], v[i]);
            }
        }
    }
}
