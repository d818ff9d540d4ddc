using DoctorGlm.Engine.Backends.Cuda;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// KV-cached decoding on the GPU against the CPU (issue #6): the chat fixture model greedily decodes 24 tokens on the
/// CPU; the GPU is then fed the same tokens (teacher forcing, with the same incremental 2D positions) and every
/// step's logits are compared — fp32 weights, bf16 weights, and the fused INT8 / INT4 matrix-vector kernels.
/// Tolerances (max |GPU − CPU| over the vocabulary, relative to the largest CPU logit): 1e-4 for fp32 and the
/// quantized modes (both backends de-quantize exactly; only summation order differs), 3e-2 for bf16 (the GPU also
/// rounds activations to bf16 at each GEMM). The GPU's greedy choice must be the CPU's token at every step unless
/// the CPU's two best logits are within that tolerance of each other (a tie the test cannot decide).
/// </summary>
[Collection(GpuCollection.Name)]
public class CudaDecodeTests(ITestOutputHelper output)
{
    private const int Steps = 24;

    [Theory]
    [InlineData("f32", 1e-4)]
    [InlineData("bf16", 3e-2)]
    [InlineData("int8", 1e-4)]
    [InlineData("int4", 1e-4)]
    [InlineData("int4-bf16", 3e-2)] // the benchmark's INT4: bf16 embedding, so a bf16 cache and 16-bit inputs to the fused kernel
    public void Cached_decoding_matches_the_cpu_step_by_step(string mode, double tol)
    {
        var gpu = CudaTestSetup.Require();
        var tok = ChatModelFixture.Tokenizer();
        using var cpuModel = Prepare(ChatModelFixture.Model(tok), mode);
        using var gpuModel = Prepare(ChatModelFixture.Model(tok, device: gpu.Device), mode);
        var prompt = Prompt(tok, Hypertension).ToList();
        // bf16 weights on the GPU keep a bf16 KV cache (half the bytes each step reads); the CPU's stays fp32.
        if (mode is "bf16" or "int4-bf16") Assert.Equal(DType.BF16, gpuModel.KvCacheDType);
        Assert.Equal(DType.F32, cpuModel.KvCacheDType);

        var cpuSteps = Decode(cpuModel, prompt, forced: null);
        var tokens = cpuSteps.Select(l => LogitsProcessing.ArgMax(l)).ToList();
        var gpuSteps = Decode(gpuModel, prompt, forced: tokens);
        Assert.Equal(Steps, gpuSteps.Count);

        double worst = 0;
        int ties = 0;
        for (int s = 0; s < Steps; s++)
        {
            float[] c = cpuSteps[s], g = gpuSteps[s];
            double scale = c.Max(x => Math.Abs((double)x)), err = 0;
            for (int i = 0; i < c.Length; i++) err = Math.Max(err, Math.Abs((double)g[i] - c[i]));
            Assert.True(err <= tol * scale, $"{mode}: step {s}: max |GPU − CPU| logit {err:G4} > {tol} × {scale:G4}");
            worst = Math.Max(worst, err / scale);
            var top = c.Select((x, i) => (x, i)).OrderByDescending(p => p.x).Take(2).ToArray();
            if (top[0].x - top[1].x < tol * scale) { ties++; continue; }
            Assert.True(LogitsProcessing.ArgMax(g) == tokens[s], $"{mode}: step {s}: GPU picks {LogitsProcessing.ArgMax(g)}, CPU {tokens[s]}");
        }
        output.WriteLine($"{mode}: {Steps} steps, worst relative logit error {worst:E2}, {ties} near-ties");
    }

    /// <summary>
    /// A left-padded batch of three prompts of different lengths (issue #6's serving case): the GPU's batched prompt
    /// pass and cached steps, whose past mask hides each row's pads, against the CPU's, row by row, teacher-forced
    /// with the CPU's greedy tokens; same tolerances as above.
    /// </summary>
    [Theory]
    [InlineData("f32", 1e-4)]
    [InlineData("bf16", 3e-2)]
    [InlineData("int4", 1e-4)]
    public void Batched_cached_decoding_matches_the_cpu_row_by_row(string mode, double tol)
    {
        var gpu = CudaTestSetup.Require();
        var tok = ChatModelFixture.Tokenizer();
        using var cpuModel = Prepare(ChatModelFixture.Model(tok), mode);
        using var gpuModel = Prepare(ChatModelFixture.Model(tok, device: gpu.Device), mode);
        int[][] prompts = [Prompt(tok, Hypertension), Prompt(tok, Headache), Prompt(tok, Insomnia)];
        const int steps = 12;
        var cpuSteps = BatchDecode(cpuModel, prompts, steps, forced: null);
        var tokens = cpuSteps.Select(l => Enumerable.Range(0, prompts.Length).Select(b => LogitsProcessing.ArgMax(Row(l, b, cpuModel))).ToArray()).ToList();
        var gpuSteps = BatchDecode(gpuModel, prompts, steps, forced: tokens);
        double worst = WorstRowError(cpuSteps, gpuSteps, prompts.Length, cpuModel.Config.VocabSize, tol, mode);
        output.WriteLine($"{mode}: {prompts.Length} rows × {steps} steps, worst relative logit error {worst:E2}");
    }

    /// <summary>
    /// A bf16 model with head size 64 (the chat fixture's 16 is below the tensor-core kernels' sizes): its prompt pass
    /// rounds q, k and v to the bf16 cache's dtype, so the default <see cref="CudaAttentionKernel.Auto"/>
    /// runs the tensor-core attention forward once per layer (counted), and the decoding steps none; a batch of two
    /// left-padded prompts then the same under <see cref="CudaAttentionKernel.Fp32"/> (no tensor-core
    /// launch). Both against the CPU's bf16 weights with an fp32 cache, at the bf16 tolerance of the tests above.
    /// </summary>
    [Theory]
    [InlineData("Auto")]
    [InlineData("Fp32")]
    public void A_bf16_prompt_pass_takes_the_selected_attention_kernels_and_matches_the_cpu(string kernel)
    {
        var gpu = CudaTestSetup.Require();
        var which = Enum.Parse<CudaAttentionKernel>(kernel);
        if (which == CudaAttentionKernel.Auto && gpu.ComputeCapability < 80) Assert.Skip($"tensor-core attention needs sm_80+, this GPU is sm_{gpu.ComputeCapability}");
        const double tol = 3e-2;
        var config = GlmConfig.Tiny(vocabSize: 256, hiddenSize: 128, numLayers: 2, numHeads: 2);
        using var cpuModel = GlmModel.CreateRandom(config, new RandomGenerator(61), std: 0.1f);
        using var gpuModel = GlmModel.CreateRandom(config, new RandomGenerator(61), gpu.Device, std: 0.1f);
        foreach (var m in new[] { cpuModel, gpuModel }) { m.SetBaseTrainable(false); m.ConvertWeights(DType.BF16); }
        Assert.Equal(DType.BF16, gpuModel.KvCacheDType);
        var rng = new Random(7);
        int[] Prompt(int n) => [.. Enumerable.Range(0, n).Select(_ => rng.Next(4, config.VocabSize - 10)), config.GMaskTokenId, config.BosTokenId];
        int[][] prompts = [Prompt(45), Prompt(29)];
        const int steps = 6;

        var previous = gpu.AttentionKernel;
        gpu.AttentionKernel = which;
        try
        {
            var cpuSteps = BatchDecode(cpuModel, prompts, steps, forced: null);
            var tokens = cpuSteps.Select(l => Enumerable.Range(0, prompts.Length).Select(b => LogitsProcessing.ArgMax(Row(l, b, cpuModel))).ToArray()).ToList();
            long before = gpu.TensorCoreAttentionForwards;
            var gpuSteps = BatchDecode(gpuModel, prompts, steps, forced: tokens);
            long launched = gpu.TensorCoreAttentionForwards - before;
            Assert.Equal(which == CudaAttentionKernel.Auto ? config.NumLayers : 0, launched);
            double worst = WorstRowError(cpuSteps, gpuSteps, prompts.Length, config.VocabSize, tol, kernel);
            output.WriteLine($"{kernel}: {launched} tensor-core attention forwards, {prompts.Length} rows × {steps} steps, worst relative logit error {worst:E2}");
        }
        finally { gpu.AttentionKernel = previous; }
    }

    /// <summary>
    /// What one decoding step launches, pinned (a fusion undone shows up here, not only in a GPU profile): per layer two
    /// LayerNorms, the QKV split, the attention, the GELU and two residual adds — 7 kernels — beside its 4 GEMMs (bf16)
    /// or 4 fused INT4 matrix-vector kernels; per step the embedding's gather and the final LayerNorm, and the head's
    /// GEMM; and two host transfers. A bf16 model with a bf16 cache, batch 1, after its prompt pass.
    /// </summary>
    [Theory]
    [InlineData("bf16", 7, 4)]
    [InlineData("int4-bf16", 11, 0)]
    public void A_decoding_step_launches_seven_kernels_per_layer(string mode, int launchesPerLayer, int gemmsPerLayer)
    {
        var gpu = CudaTestSetup.Require();
        var config = GlmConfig.Tiny(vocabSize: 256, hiddenSize: 128, numLayers: 3, numHeads: 2);
        using var model = Prepare(GlmModel.CreateRandom(config, new RandomGenerator(5), gpu.Device, std: 0.1f), mode, frozen: true);
        var generator = new GlmGenerator(model);
        var sequence = new List<int> { 10, 11, 12, 13, 14, 15, config.GMaskTokenId, config.BosTokenId };
        using var cache = model.CreateCache();
        sequence.Add(LogitsProcessing.ArgMax(generator.NextLogits(sequence, cache))); // the prompt pass
        long launches = gpu.Launches, gemms = gpu.GemmCalls, transfers = gpu.HostTransfers;
        generator.NextLogits(sequence, cache);
        launches = gpu.Launches - launches;
        gemms = gpu.GemmCalls - gemms;
        transfers = gpu.HostTransfers - transfers;
        output.WriteLine($"{mode}: {launches} kernel launches, {gemms} GEMMs and {transfers} host transfers for {config.NumLayers} layers");
        // Beside the layers: the embedding, the final LayerNorm and the head's GEMM. The host waits twice: the
        // token and its positions go up in one copy (the token checked on the host, so the embedding makes no
        // device check), the logits come down.
        Assert.Equal(launchesPerLayer * config.NumLayers + 2, launches);
        Assert.Equal(gemmsPerLayer * config.NumLayers + 1, gemms);
        Assert.Equal(2, transfers);
        // The host's check stands in for the device's: a token outside the vocabulary fails before anything runs.
        sequence.Add(config.VocabSize + 1);
        int held = cache.TokenCount;
        var bad = Assert.Throws<ArgumentOutOfRangeException>(() => generator.NextLogits(sequence, cache));
        Assert.Contains($"Embedding: ids[0] = {config.VocabSize + 1} is outside the table's {config.VocabSize} rows", bad.Message);
        Assert.Equal(held, cache.TokenCount);
    }

    /// <summary>
    /// A left-padded batch's round trips (fp32, three rows of different lengths): the prompt pass sends its ids,
    /// positions and mask up in one copy (<see cref="GlmInputs.Build"/> checked the ids, so the embedding makes no
    /// device check) and brings the logits down; each step after it sends the tokens, their positions and the past's
    /// pad mask in one copy. Two transfers each, and the logits are the CPU's.
    /// </summary>
    [Fact]
    public void A_padded_batch_waits_twice_for_its_prompt_pass_and_for_each_step()
    {
        var gpu = CudaTestSetup.Require();
        var config = GlmConfig.Tiny(vocabSize: 256, hiddenSize: 128, numLayers: 2, numHeads: 2);
        using var gpuModel = GlmModel.CreateRandom(config, new RandomGenerator(6), gpu.Device, std: 0.1f);
        using var cpuModel = GlmModel.CreateRandom(config, new RandomGenerator(6), Device.Cpu, std: 0.1f);
        gpuModel.Training = cpuModel.Training = false;
        List<int>[] Prompts() =>
        [
            [10, 11, 12, 13, 14, 15, 16, config.GMaskTokenId, config.BosTokenId],
            [20, 21, config.GMaskTokenId, config.BosTokenId],
            [30, 31, 32, 33, config.GMaskTokenId, config.BosTokenId],
        ];
        var (gpuSeqs, cpuSeqs) = (Prompts(), Prompts());
        var (gpuGen, cpuGen) = (new GlmGenerator(gpuModel), new GlmGenerator(cpuModel));
        using (var warmUp = gpuModel.CreateCache(3)) // the first pass also uploads the backend's rotary table for this head size once: not counted
        {
            var seqs = Prompts();
            var first = gpuGen.NextLogitsBatch(seqs, warmUp);
            for (int b = 0; b < 3; b++) seqs[b].Add(LogitsProcessing.ArgMax(first[b]));
            gpuGen.NextLogitsBatch(seqs, warmUp);
        }
        using var gpuCache = gpuModel.CreateCache(3);
        using var cpuCache = cpuModel.CreateCache(3);
        for (int step = 0; step < 4; step++)
        {
            long before = gpu.HostTransfers;
            var logits = gpuGen.NextLogitsBatch(gpuSeqs, gpuCache);
            long transfers = gpu.HostTransfers - before;
            var expected = cpuGen.NextLogitsBatch(cpuSeqs, cpuCache);
            output.WriteLine($"{(step == 0 ? "prompt pass" : $"step {step}")}: {transfers} host transfers");
            Assert.Equal(2, transfers);
            for (int b = 0; b < 3; b++)
            {
                double worst = 0;
                for (int v = 0; v < config.VocabSize; v++) worst = Math.Max(worst, Math.Abs(logits[b][v] - expected[b][v]));
                Assert.True(worst < 1e-4, $"step {step}, row {b}: max |GPU − CPU| = {worst:E3}");
                int next = LogitsProcessing.ArgMax(expected[b]);
                gpuSeqs[b].Add(next);
                cpuSeqs[b].Add(next);
            }
        }
        Assert.True(gpuCache.PastMask() is not null, "the rows were padded: the past has a pad mask");
    }

    /// <summary>
    /// <see cref="GlmGenerator.GenerateBatch"/> on the GPU (fp32 weights: logits within 1e-6 of the CPU's, so greedy
    /// picks agree) with a stop token that ends row 0 early: the row leaves the batch and the device cache
    /// (<see cref="GlmKvCache.KeepRows"/>) while the others go on; every row's answer must be the CPU's.
    /// </summary>
    [Fact]
    public void Batched_generation_with_rows_leaving_the_batch_matches_the_cpu()
    {
        var gpu = CudaTestSetup.Require();
        var tok = ChatModelFixture.Tokenizer();
        using var cpuModel = ChatModelFixture.Model(tok);
        using var gpuModel = ChatModelFixture.Model(tok, device: gpu.Device);
        int[][] prompts = [Prompt(tok, Hypertension), Prompt(tok, Headache), Prompt(tok, Insomnia)];
        var o = new GenerationOptions { DoSample = false, RepetitionPenalty = 1.5f, MaxNewTokens = 10 };
        var ct = TestContext.Current.CancellationToken;
        var cpu = new GlmGenerator(cpuModel).GenerateBatch(prompts, o, ct);
        int stop = cpu[0][2];
        o = o with { EosTokenId = stop };
        cpu = new GlmGenerator(cpuModel).GenerateBatch(prompts, o, ct);
        var gpuAnswers = new GlmGenerator(gpuModel).GenerateBatch(prompts, o, ct);
        for (int b = 0; b < prompts.Length; b++)
        {
            output.WriteLine($"row {b}: CPU [{string.Join(", ", cpu[b])}], GPU [{string.Join(", ", gpuAnswers[b])}]");
            Assert.Equal(cpu[b], gpuAnswers[b]);
        }
        Assert.True(cpu[0].Length < 3 && cpu.Any(a => a.Length == 10), "row 0 must stop early while another row runs on");
    }

    /// <summary>
    /// The picks on the GPU (<see cref="CandidatePicking"/>: penalty, guard, temperature and top-k where the logits
    /// are, only the candidates to the host) against the same generator with the logits brought over whole: sampled
    /// with <c>chat()</c>'s defaults and a repetition penalty, seeded, alone and in a batch, with top-k off (the
    /// whole-row fallback) and greedy. The answers must be identical: the candidate path is exact by construction.
    /// </summary>
    [Fact]
    public void Picks_on_the_gpu_equal_picks_from_the_whole_logits()
    {
        var gpu = CudaTestSetup.Require();
        var tok = ChatModelFixture.Tokenizer();
        using var gpuModel = ChatModelFixture.Model(tok, device: gpu.Device);
        int[][] prompts = [Prompt(tok, Hypertension), Prompt(tok, Headache), Prompt(tok, Insomnia)];
        var ct = TestContext.Current.CancellationToken;
        var onDevice = new GlmGenerator(gpuModel);
        Assert.True(onDevice.SelectOnDevice, "the generator picks on the device when the model is there");
        var onHost = new GlmGenerator(gpuModel) { SelectOnDevice = false };
        GenerationOptions[] options =
        [
            new() { Seed = 3, RepetitionPenalty = 1.2f, MaxNewTokens = 16 },
            new() { Seed = 4, TopK = 0, Temperature = 1.3f, MaxNewTokens = 8 },
            new() { DoSample = false, RepetitionPenalty = 1.5f, MaxNewTokens = 12 },
        ];
        foreach (var o in options)
        {
            Assert.Equal(onHost.Generate(prompts[0], o, ct), onDevice.Generate(prompts[0], o, ct));
            var host = onHost.GenerateBatch(prompts, o, ct);
            var device = onDevice.GenerateBatch(prompts, o, ct);
            for (int b = 0; b < prompts.Length; b++) Assert.Equal(host[b], device[b]);
        }
        // A cached step that picks on the device waits for it twice: one copy up (the token, its positions and the
        // picking's inputs together), the candidates down.
        var greedy = new GenerationOptions { DoSample = false, RepetitionPenalty = 1.5f };
        (long Transfers, int Tokens) Run(int n)
        {
            long before = gpu.HostTransfers;
            int tokens = onDevice.Generate(prompts[0], greedy with { MaxNewTokens = n }, ct).Length;
            return (gpu.HostTransfers - before, tokens);
        }
        var (t4, n4) = Run(4);
        var (t8, n8) = Run(8);
        Assert.True(n8 > n4, $"the longer run stopped early: {n4} and {n8} tokens");
        Assert.Equal(2 * (n8 - n4), t8 - t4);
    }

    /// <summary>
    /// Continuous batching on the GPU (<see cref="GlmBatchScheduler"/>): two requests join a third while it decodes,
    /// so the device caches are appended (<see cref="GlmKvCache.Append"/>: gaps zeroed, pads hidden) and rows leave as
    /// they finish; every answer must be the CPU's for that prompt alone (fp32 weights).
    /// </summary>
    [Fact]
    public async Task Requests_joining_a_running_batch_on_the_gpu_get_the_cpu_answers()
    {
        var gpu = CudaTestSetup.Require();
        var tok = ChatModelFixture.Tokenizer();
        using var cpuModel = ChatModelFixture.Model(tok);
        using var gpuModel = ChatModelFixture.Model(tok, device: gpu.Device);
        var ct = TestContext.Current.CancellationToken;
        int[][] prompts = [Prompt(tok, Headache), Prompt(tok, Hypertension), Prompt(tok, Insomnia)];
        GenerationOptions[] options =
        [
            new() { DoSample = false, RepetitionPenalty = 1.5f, MaxNewTokens = 40 },
            new() { DoSample = false, RepetitionPenalty = 1.5f, MaxNewTokens = 8 },
            new() { DoSample = false, RepetitionPenalty = 1.5f, MaxNewTokens = 12 },
        ];
        var cpu = new GlmGenerator(cpuModel);
        var expected = prompts.Select((p, i) => cpu.Generate(p, options[i], ct)).ToArray();
        await using var scheduler = new GlmBatchScheduler(new GlmGenerator(gpuModel), maxBatch: 3);
        // The loop holds its first step with request 0 live until the others are queued: they must join its batch.
        using var queued = new ManualResetEventSlim(false);
        scheduler.BeforeStep = live => { if (live > 0) queued.Wait(ct); };
        var first = new List<int>();
        var a = scheduler.StreamTokens(prompts[0], options[0], ct).GetAsyncEnumerator(ct);
        Assert.True(await a.MoveNextAsync());
        first.Add(a.Current);
        var others = Enumerable.Range(1, 2).Select(async i =>
        {
            var list = new List<int>();
            await foreach (int t in scheduler.StreamTokens(prompts[i], options[i], ct)) list.Add(t);
            return list;
        }).ToArray(); // queued on return
        queued.Set();
        while (await a.MoveNextAsync()) first.Add(a.Current);
        await a.DisposeAsync();
        var answers = new[] { first }.Concat(await Task.WhenAll(others)).ToArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            output.WriteLine($"request {i}: CPU [{string.Join(", ", expected[i])}], GPU [{string.Join(", ", answers[i])}]");
            Assert.Equal(expected[i], answers[i]);
        }
        Assert.True(scheduler.Joins >= 1, "no request joined the running batch");
    }

    private static float[] Row(float[] logits, int b, GlmModel model) => logits.AsSpan(b * model.Config.VocabSize, model.Config.VocabSize).ToArray();

    /// <summary>
    /// Asserts every step's and row's max |GPU − CPU| logit is within <paramref name="tol"/> of the CPU row's largest
    /// magnitude; returns the worst such ratio. Steps hold [rows · vocab] logits.
    /// </summary>
    private static double WorstRowError(List<float[]> cpuSteps, List<float[]> gpuSteps, int rows, int vocab, double tol, string label)
    {
        Assert.Equal(cpuSteps.Count, gpuSteps.Count);
        double worst = 0;
        for (int s = 0; s < cpuSteps.Count; s++)
            for (int b = 0; b < rows; b++)
            {
                var c = cpuSteps[s].AsSpan(b * vocab, vocab);
                var g = gpuSteps[s].AsSpan(b * vocab, vocab);
                double scale = 0, err = 0;
                for (int i = 0; i < vocab; i++)
                {
                    scale = Math.Max(scale, Math.Abs((double)c[i]));
                    err = Math.Max(err, Math.Abs((double)g[i] - c[i]));
                }
                Assert.True(err <= tol * scale, $"{label}: step {s} row {b}: max |GPU − CPU| logit {err:G4} > {tol} × {scale:G4}");
                worst = Math.Max(worst, err / scale);
            }
        return worst;
    }

    /// <summary>Batched prompt pass then one token per row and step, through <see cref="GlmGenerator.NextLogitsBatch"/>
    /// (left padding declared to the cache, §4.2 positions per row); [B·V] logits per step.</summary>
    private static List<float[]> BatchDecode(GlmModel model, int[][] prompts, int steps, List<int[]>? forced)
    {
        var generator = new GlmGenerator(model);
        var seqs = prompts.Select(p => p.ToList()).ToArray();
        using var cache = model.CreateCache(prompts.Length);
        var result = new List<float[]>();
        for (int s = 0; s < steps; s++)
        {
            var l = generator.NextLogitsBatch(seqs, cache);
            result.Add([.. l.SelectMany(r => r)]);
            for (int b = 0; b < seqs.Length; b++) seqs[b].Add(forced?[s][b] ?? LogitsProcessing.ArgMax(l[b]));
        }
        return result;
    }

    // Questions of three lengths, so that a batch of them needs left padding.
    private const string Hypertension = "高血压患者能吃党参吗？", Headache = "头疼", Insomnia = "我最近总是失眠，晚上睡不着，白天没精神，怎么办？";

    /// <summary>A question's prompt ids as generation takes them: the text, then [gMASK] &lt;sop&gt;.</summary>
    private static int[] Prompt(DoctorGlm.Engine.Tokenization.ChatGlmTokenizer tok, string question) => [.. tok.Encode(question), tok.GMaskId, tok.SopId];

    private static GlmModel Prepare(GlmModel model, string mode, bool frozen = false)
    {
        if (frozen) model.SetBaseTrainable(false);
        switch (mode)
        {
            case "bf16": model.ConvertWeights(DType.BF16); break;
            case "int8": model.Quantize(8); break;
            case "int4": model.Quantize(4); break;
            case "int4-bf16": model.ConvertWeights(DType.BF16); model.Quantize(4); break;
        }
        return model;
    }

    /// <summary>
    /// The prompt pass, then one cached step per token, through <see cref="GlmGenerator.NextLogits"/> (the generator's
    /// own step). Returns each step's logits; the token fed after step s is the argmax (forced == null) or forced[s].
    /// </summary>
    private static List<float[]> Decode(GlmModel model, List<int> prompt, List<int>? forced)
    {
        var generator = new GlmGenerator(model);
        var sequence = new List<int>(prompt);
        using var cache = model.CreateCache();
        var steps = new List<float[]>();
        for (int s = 0; s < Steps; s++)
        {
            var l = generator.NextLogits(sequence, cache);
            steps.Add(l);
            sequence.Add(forced?[s] ?? LogitsProcessing.ArgMax(l));
        }
        return steps;
    }
}
