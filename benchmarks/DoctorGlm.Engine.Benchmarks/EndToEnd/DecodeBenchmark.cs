using System.Diagnostics;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Backends;
using System.Globalization;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;

using DoctorGlm.Engine.Benchmarks.Cuda;

namespace DoctorGlm.Engine.Benchmarks.EndToEnd;

/// <summary>
/// "--decode": decoding with the KV cache, step by step as <see cref="GlmGenerator"/> runs it (the cached forward of one
/// token per row, then the pick: greedy, or with <c>--sampling chat</c> <c>chat()</c>'s defaults), at batch 1 and, with
/// <c>--batch</c>, for several prompts of different lengths left-padded into one batch, with fp32 or bf16 weights and
/// quantized to INT8 and INT4 while loading (<see cref="GlmLoadOptions.QuantizeBits"/>), against the memory-bandwidth bound: each token must read every weight
/// once per step, so tokens/s ≤ batch × copy bandwidth / bytes per step.
/// </summary>
/// <remarks>
/// Bytes per token: the four block linears of every layer (fp32: 4 B per weight; INT8: 1 B + an fp16 scale per row;
/// INT4: ½ B + the scale), the tied head (the embedding, fp32 in the fp32 mode and bf16 in the others, read whole for
/// the last position's logits), the biases
/// and LayerNorm vectors (fp32), and the KV cache read by attention (2·L·t·H values at position t in the cache's dtype,
/// <see cref="GlmModel.KvCacheDType"/>: bf16 on a GPU with 16-bit weights, fp32 otherwise; averaged over
/// the timed tokens; once per row). Bandwidth is the same process's copy (bytes read + written per second), measured
/// right before.
/// </remarks>
public static class DecodeBenchmark
{
    /// <summary>Runs the mode; returns the process exit code.</summary>
    public static int Run(IReadOnlyList<string> args)
    {
        var o = new Options("--decode", args);
        var device = Ceilings.Parse(o.Text("device", "cpu"));
        bool cpu = device.Kind == DeviceKind.Cpu;
        string preset = o.Text("config", cpu ? "medium" : "6b");
        var modes = o.List("modes", "f32,bf16,int8,int4", "f32", "bf16", "f16", "int8", "int4");
        int promptLength = o.Int("prompt", 32), tokens = o.Int("tokens", cpu ? 16 : 64), warmup = o.Int("warmup", 2);
        var batches = o.IntList("batch", "1");
        // Where the pick's pipeline runs: "device" reduces each row to top-k's candidates where the logits are
        // (CandidatePicking), "host" brings the logits over whole; "auto" is the generator's own choice.
        var picks = o.List("pick", "auto", "auto", "device", "host");
        var samplings = o.List("sampling", "greedy", "greedy", "chat");
        string? jsonl = o.Text("jsonl", "");
        o.RejectUnknown();

        var config = ModelPresets.Get(preset);
        if (promptLength < 3 || promptLength + warmup + tokens + 1 > config.MaxSequenceLength)
            throw new ArgumentException($"--prompt {promptLength} + --warmup {warmup} + --tokens {tokens}: must fit in {config.MaxSequenceLength} positions (prompt ≥ 3)");
        if (batches.Any(b => b < 1)) throw new ArgumentException($"--batch {string.Join(',', batches)}: every batch size must be at least 1");
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(inv, $"Decode at batch {string.Join(", ", batches)}: {preset} ({config.NumLayers} layers, hidden {config.HiddenSize}, FFN {config.InnerHiddenSize}, vocabulary {config.VocabSize}), prompt {promptLength}, {tokens} timed tokens after {warmup}, on {Ceilings.Name(device)}"));
        double bandwidth = Ceilings.CopyGBps(device);
        Console.WriteLine(string.Create(inv, $"  copy bandwidth (read + write): {bandwidth:F1} GB/s"));

        foreach (var mode in modes)
        {
            int bits = mode switch { "int8" => 8, "int4" => 4, "bf16" or "f16" => 16, _ => 0 };
            var clock = Stopwatch.StartNew();
            using var source = new RandomWeights(config, 2026);
            var memory = BackendRegistry.For(device);
            Ceilings.Synchronize(device);
            long before = memory.Memory.InUseBytes;
            Ceilings.ResetPeak(device);
            // INT8/INT4 are quantized as the weights stream in (never the whole fp32 model: the 6B shape fits a 24 GB
            // host) and keep the embedding — the tied head — in bf16, as THUDM's quantized checkpoints keep it in fp16.
            var floats = bits == 0 ? DType.F32 : mode == "f16" ? DType.F16 : DType.BF16; // f16: THUDM's checkpoint type
            using var model = GlmModel.Load(config, source, new GlmLoadOptions { WeightDType = floats, QuantizeBits = bits is 8 or 4 ? bits : 0 }, device);
            Ceilings.Synchronize(device);
            double setup = clock.Elapsed.TotalSeconds;
            double held = (memory.Memory.InUseBytes - before) / 1e9, loadPeak = (memory.Memory.PeakBytes - before) / 1e9;
            double peakRss = Process.GetCurrentProcess().PeakWorkingSet64 / 1e9; // the whole process, since it started

            foreach (int batch in batches)
            foreach (var sampling in samplings)
            foreach (var pick in picks)
            {
                bool? onDevice = pick switch { "device" => true, "host" => false, _ => null };
                var (seconds, promptSeconds, generated, pickedOnDevice) = Decode(model, batch, promptLength, warmup, tokens, sampling == "chat", onDevice);
                string how = $"{sampling}, picked on the {(pickedOnDevice ? "device" : "host")}, {model.KvCacheDType} cache";
                double perStep = BytesPerToken(config, bits, promptLength + warmup + tokens / 2.0, batch, model.KvCacheDType!.Value.SizeOf());
                double rate = batch * tokens / seconds, bound = batch * bandwidth * 1e9 / perStep;
                Console.WriteLine(string.Create(inv, $"  {mode,-4} batch {batch,2} ({how}): {rate:F2} tokens/s ({1e3 * seconds / tokens:F1} ms/step); bound {bound:F2} tokens/s ({perStep / 1e9:F3} GB/step) → {100 * rate / bound:F0}% of the bound; prompt pass {1e3 * promptSeconds:F0} ms; model ready in {setup:F1} s, holds {held:F2} GB (loading peaked at {loadPeak:F2}; process peak RSS so far {peakRss:F2}); tokens {string.Join(' ', generated.Take(6))} …"));
                ResultLine.Write(new Dictionary<string, object?>
                {
                    ["impl"] = "doctorglm", ["kind"] = "decode", ["device"] = device.ToString(), ["device_name"] = Ceilings.Name(device),
                    ["config"] = preset, ["weights"] = mode, ["batch"] = batch, ["prompt"] = promptLength, ["tokens"] = tokens,
                    ["sampling"] = sampling, ["pick"] = pickedOnDevice ? "device" : "host", ["kv_cache"] = model.KvCacheDType.ToString(),
                    ["tokens_per_s"] = rate, ["ms_per_token"] = 1e3 * seconds / tokens, ["bytes_per_token"] = perStep,
                    ["copy_gbps"] = bandwidth, ["bound_tokens_per_s"] = bound, ["of_bound"] = rate / bound,
                    ["prompt_pass_ms"] = 1e3 * promptSeconds, ["model_gb"] = held, ["load_peak_gb"] = loadPeak, ["process_peak_rss_gb"] = peakRss, ["setup_s"] = setup,
                }, jsonl);
            }
        }
        return 0;
    }

    /// <summary>
    /// Prompt pass, <paramref name="warmup"/> untimed steps, then <paramref name="tokens"/> timed ones, each step one
    /// token per row through the generator's own step (the cached forward, then <c>PickAll</c>), with prompts of
    /// <paramref name="promptLength"/>, −1, −2 and −3 tokens in turn, so that the rows are left-padded as a real batch
    /// would be. No row stops early (there is no stop token). Returns the timed seconds, the prompt pass's, row 0's
    /// tokens and where the picks ran.
    /// </summary>
    private static (double Seconds, double PromptSeconds, List<int> Tokens, bool OnDevice) Decode(GlmModel model, int batch, int promptLength, int warmup,
        int tokens, bool sample, bool? pickOnDevice)
    {
        var config = model.Config;
        ulong stream = RandomGenerator.Mix(99);
        int span = Math.Min(config.VocabSize, config.MaskTokenId) - 16;
        var sequences = Enumerable.Range(0, batch).Select(b =>
        {
            int n = Math.Max(3, promptLength - b % 4);
            var s = Enumerable.Range(0, n - 2).Select(i => 16 + (int)(RandomGenerator.Uniform(stream, (ulong)(b * 100_003 + i)) * span)).ToList();
            s.AddRange([config.GMaskTokenId, config.BosTokenId]);
            return s;
        }).ToArray();
        using var cache = model.CreateCache(batch);
        var generator = new GlmGenerator(model); // its own step: prompt pass, then §4.2's incremental positions
        if (pickOnDevice is bool d) generator.SelectOnDevice = d;
        var options = sample ? new GenerationOptions { MaxLength = int.MaxValue, EosTokenId = -1, Seed = 7 }
            : new GenerationOptions { DoSample = false, MaxLength = int.MaxValue, EosTokenId = -1 };
        var rows = sequences.Select((s, b) => generator.CheckPrompt(s, options, $"prompt {b}", "prompts")).ToArray();
        void Step()
        {
            int[] picked;
            using (GradMode.NoGrad())
            using (TensorScope.Begin())
                picked = generator.PickAll(rows, generator.BatchLogits(rows, cache));
            for (int b = 0; b < batch; b++) rows[b].Sequence.Add(picked[b]);
        }

        var prefill = Stopwatch.StartNew();
        Step(); // the prompt pass: the time to the first token
        double prompt = prefill.Elapsed.TotalSeconds;
        for (int i = 0; i < warmup; i++) Step();
        int first = rows[0].Sequence.Count;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < tokens; i++) Step();
        return (sw.Elapsed.TotalSeconds, prompt, rows[0].Sequence[first..], generator.SelectOnDevice);
    }

    /// <summary>Bytes one decoding step must read at context length <paramref name="context"/> (see the remarks).</summary>
    /// <param name="c">The model's shape.</param>
    /// <param name="bits">0 (fp32), 16, 8 or 4: how the block linears are stored.</param>
    /// <param name="context">Positions held in the cache.</param>
    /// <param name="batch">Rows decoded together: the weights are read once per step, each row's cache once.</param>
    /// <param name="cacheBytes">Bytes per cached key or value element (4 for an fp32 cache, 2 for bf16).</param>
    public static double BytesPerToken(GlmConfig c, int bits, double context, int batch = 1, int cacheBytes = 4)
    {
        double h = c.HiddenSize, f = c.InnerHiddenSize, l = c.NumLayers;
        double matrices = ModelPresets.BlockMatrixParameters(c);
        double rows = l * (3 * h + h + f + h);
        double blocks = bits switch { 8 => matrices + 2 * rows, 4 => matrices / 2 + 2 * rows, 16 => 2 * matrices, _ => 4 * matrices };
        double vectors = 4 * (l * (2 * h + 3 * h + h + 2 * h + f + h) + 2 * h);
        double head = (bits == 0 ? 4.0 : 2.0) * ModelPresets.HeadParameters(c); // bf16, f16, INT8, INT4 keep the tied head in 16 bits
        double kv = (double)cacheBytes * 2 * l * context * h * batch;
        return blocks + vectors + head + kv;
    }
}
