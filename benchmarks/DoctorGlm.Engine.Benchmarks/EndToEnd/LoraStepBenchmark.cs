using System.Diagnostics;
using System.Globalization;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Backends.Cpu;
using DoctorGlm.Engine.Backends.Cuda;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Optim;

using DoctorGlm.Engine.Benchmarks.Cuda;

namespace DoctorGlm.Engine.Benchmarks.EndToEnd;

/// <summary>
/// "--lora-step": wall time of one LoRA training step (r 8, alpha 32, dropout 0.1 on query_key_value, AdamW, global-norm
/// clipping at 1 — <see cref="Training.Trainer"/>'s defaults and its step: loss, backward, clip, step, zero) on a
/// ChatGLM-shaped model with random frozen weights, with gradient checkpointing off and on.
/// </summary>
/// <remarks>
/// FLOPs (matrix products only; LayerNorm, GELU, softmax and the rank-8 adapters are left out, all under 1%): with N the
/// parameters used as matrices per token (the four block linears of every layer and the tied head) and T = B·S tokens,
/// forward = 2·N·T + 4·L·B·S²·H (attention's QKᵀ and PV over the full S×S matrix); backward = 2·N·T (the input gradient
/// through the frozen weights; LoRA computes no weight gradient, so the usual 6·N·T of full training is wrong here) +
/// 8·L·B·S²·H. MFU = (forward + backward) / time / ceiling. Checkpointing re-runs each block's forward in backward
/// (2·N_blocks·T + 4·L·B·S²·H more): counted in HFU, not in MFU. The ceiling is the same process's matrix rate for
/// the weights' dtype (GPU: 8192³ cuBLAS GEMM; CPU: the all-core fp32 FMA peak).
/// </remarks>
public static class LoraStepBenchmark
{
    /// <summary>"--dtype" values: the storage dtypes of the frozen weights that <see cref="LoadModel"/> can produce.</summary>
    private static readonly Dictionary<string, DType> s_weightDTypes = new(StringComparer.Ordinal) { ["f32"] = DType.F32, ["bf16"] = DType.BF16 };

    /// <summary>Runs the mode; returns the process exit code.</summary>
    public static int Run(IReadOnlyList<string> args)
    {
        var o = new Options("--lora-step", args);
        var device = Ceilings.Parse(o.Text("device", "cpu"));
        bool cpu = device.Kind == DeviceKind.Cpu;
        string preset = o.Text("config", cpu ? "small" : "6b");
        int seq = o.Int("seq", 512), steps = o.Int("steps", 3), warmup = o.Int("warmup", 1);
        // Several batch sizes in one run (e.g. 4,16,32): one model load; a size that does not fit reports out of memory.
        var batches = o.IntList("batch", "1");
        var modes = o.List("checkpointing", "off,on", "off", "on");
        var dtype = s_weightDTypes[o.List("dtype", "f32", [.. s_weightDTypes.Keys])[0]];
        // Activation storage (GlmModel.ActivationDType): by default the weights' type, as a PyTorch model cast to bf16 runs.
        var activationDTypes = o.List("activations", dtype == DType.BF16 ? "bf16" : "f32", [.. s_weightDTypes.Keys]).Select(a => s_weightDTypes[a]).ToList();
        // Attention kernels on the GPU: tensor cores when the weights are 16-bit (as PyTorch's SDPA runs in bf16), unless told.
        string attentionKernels = o.List("attention", "auto", "auto", "fp32", "tensor-cores")[0];
        // 8 or 4: the base's block linears quantized while loading (LoRA over INT8/INT4, QLoRA's arrangement).
        int quantize = int.Parse(o.List("quantize", "0", "0", "8", "4")[0], CultureInfo.InvariantCulture);
        string? jsonl = o.Text("jsonl", "");
        o.RejectUnknown();

        var config = ModelPresets.Get(preset);
        if (seq < 4 || seq > config.MaxSequenceLength) throw new ArgumentException($"--seq {seq}: must be in [4, {config.MaxSequenceLength}]");
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(inv, $"LoRA step: {preset} ({config.NumLayers} layers, hidden {config.HiddenSize}, {config.NumAttentionHeads} heads, FFN {config.InnerHiddenSize}, vocabulary {config.VocabSize}, {config.ParameterCount / 1e9:F3} B parameters), {dtype} weights{(quantize != 0 ? $" (block linears INT{quantize})" : "")}, batch {string.Join(", ", batches)} × seq {seq}, on {Ceilings.Name(device)}"));

        double ceiling = Ceilings.MatmulTflops(device, dtype);
        Console.WriteLine(string.Create(inv, $"  matrix ceiling ({(cpu ? "all-core fp32 FMA peak" : $"8192³ {dtype} cuBLAS GEMM")}): {ceiling:F2} TFLOP/s"));

        string attentionUsed = "cpu";
        if (!cpu && BackendRegistry.For(device) is CudaBackend gpu)
        {
            gpu.AttentionKernel = attentionKernels == "tensor-cores" || (attentionKernels == "auto" && dtype != DType.F32)
                ? CudaAttentionKernel.TensorCores : CudaAttentionKernel.Fp32;
            attentionUsed = gpu.AttentionKernel == CudaAttentionKernel.TensorCores ? "tensor-cores" : "fp32";
            Console.WriteLine($"  attention kernels: {gpu.AttentionKernel}");
        }

        var clock = Stopwatch.StartNew();
        using var model = LoadModel(config, device, dtype, quantize);
        model.AttachLora(new LoraSettings(8, 32f, 0.1f), new RandomGenerator(11));
        model.Training = true;
        model.Rng = new RandomGenerator(12);
        var trainable = model.TrainableParameters();
        using var optimizer = new AdamW(trainable.Select(kv => (kv.Key, kv.Value)), lr: 1e-4);
        Ceilings.Synchronize(device);
        Console.WriteLine(string.Create(inv, $"  model with random weights ready in {clock.Elapsed.TotalSeconds:F1} s; {trainable.Sum(kv => kv.Value.NumElements):N0} LoRA parameters train"));

        double nBlocks = ModelPresets.BlockMatrixParameters(config), n = nBlocks + ModelPresets.HeadParameters(config);
        foreach (int batch in batches)
        {
            using var inputs = Batch(config, batch, seq, device);
            long tokens = (long)batch * seq;
            double attention = 4.0 * config.NumLayers * batch * (double)seq * seq * config.HiddenSize;
            double modelFlops = 4 * n * tokens + 3 * attention;
            foreach (var activations in activationDTypes)
            foreach (var mode in modes)
            {
                bool checkpointing = mode == "on";
                model.GradientCheckpointing = checkpointing;
                model.ActivationDType = activations;
                string act = activations.ToString().ToLowerInvariant();
                double firstLoss = double.NaN, lastLoss = double.NaN;
                var times = new double[steps];
                try
                {
                    for (int i = 0; i < warmup; i++) firstLoss = Step(model, inputs, optimizer, trainable);
                    Ceilings.Synchronize(device);
                    Ceilings.ResetPeak(device);
                    for (int i = 0; i < steps; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        lastLoss = Step(model, inputs, optimizer, trainable);
                        Ceilings.Synchronize(device);
                        times[i] = sw.Elapsed.TotalSeconds;
                    }
                }
                catch (OutOfMemoryException e)
                {
                    // Without checkpointing a large batch may not fit; the other mode can still run.
                    optimizer.ZeroGrad();
                    Console.WriteLine($"  batch {batch}, {act} activations, checkpointing {mode,-3}: out of memory ({e.Message})");
                    ResultLine.Write(new Dictionary<string, object?>
                    {
                        ["impl"] = "doctorglm", ["kind"] = "lora_step", ["device"] = device.ToString(), ["config"] = preset,
                        ["dtype"] = dtype.ToString().ToLowerInvariant(), ["activations"] = act, ["batch"] = batch, ["seq"] = seq, ["checkpointing"] = checkpointing,
                        ["quantize"] = quantize, ["error"] = "out of memory",
                    }, jsonl);
                    continue;
                }
                Array.Sort(times);
                double median = times[steps / 2];
                double hardwareFlops = modelFlops + (checkpointing ? 2 * nBlocks * tokens + attention : 0);
                double mfu = modelFlops / median / 1e12 / ceiling, hfu = hardwareFlops / median / 1e12 / ceiling;
                long peak = BackendRegistry.For(device).Memory.PeakBytes;
                Console.WriteLine(string.Create(inv, $"  batch {batch}, {act} activations, checkpointing {mode,-3}: {median * 1e3:F1} ms/step (median of {steps}), {tokens / median:F1} tokens/s, MFU {100 * mfu:F1}% (HFU {100 * hfu:F1}%), peak memory {peak / 1e9:F2} GB, loss {firstLoss:F4} → {lastLoss:F4}"));
                ResultLine.Write(new Dictionary<string, object?>
                {
                    ["impl"] = "doctorglm", ["kind"] = "lora_step", ["device"] = device.ToString(), ["device_name"] = Ceilings.Name(device),
                    ["config"] = preset, ["dtype"] = dtype.ToString().ToLowerInvariant(), ["activations"] = act, ["batch"] = batch, ["seq"] = seq,
                    ["checkpointing"] = checkpointing, ["quantize"] = quantize, ["steps"] = steps, ["step_ms"] = median * 1e3, ["tokens_per_s"] = tokens / median,
                    ["model_flops_per_step"] = modelFlops, ["hardware_flops_per_step"] = hardwareFlops, ["ceiling_tflops"] = ceiling,
                    ["mfu"] = mfu, ["hfu"] = hfu, ["peak_memory_bytes"] = peak, ["loss"] = lastLoss, ["attention"] = attentionUsed,
                }, jsonl);
            }
        }
        return 0;
    }

    /// <summary>
    /// The frozen model with its base weight matrices stored in <paramref name="dtype"/> (F32 or BF16: on the GPU the
    /// bf16 GEMMs then run on tensor cores; vectors, LoRA and optimizer state stay fp32; activations as --activations says),
    /// the block linears quantized to INT<paramref name="quantize"/> as they load when it is 8 or 4 (de-quantized into
    /// <paramref name="dtype"/> for each product).
    /// </summary>
    private static GlmModel LoadModel(GlmConfig config, Device device, DType dtype, int quantize)
    {
        using var source = new RandomWeights(config, 2026);
        return GlmModel.Load(config, source, new GlmLoadOptions { WeightDType = dtype, QuantizeBits = quantize }, device);
    }

    /// <summary>
    /// <paramref name="batch"/> training sequences of exactly <paramref name="seq"/> tokens (no padding): a random prompt
    /// of half the length, [gMASK] &lt;sop&gt;, a random answer and &lt;eop&gt;, labels on the answer (spec §5.1).
    /// </summary>
    private static GlmInputs Batch(GlmConfig config, int batch, int seq, Device device)
    {
        int source = seq / 2, target = seq - source;
        var ids = new int[batch][];
        var labels = new int[batch][];
        ulong stream = RandomGenerator.Mix(77);
        int span = Math.Min(config.VocabSize, config.MaskTokenId) - 16; // ordinary ids: below the special ones
        for (int b = 0; b < batch; b++)
        {
            int Token(int i) => 16 + (int)(RandomGenerator.Uniform(stream, (ulong)(b * seq + i)) * span);
            var prompt = Enumerable.Range(0, source - 1).Select(Token).ToArray();
            var answer = Enumerable.Range(source, target - 2).Select(Token).ToArray();
            (ids[b], labels[b]) = GlmInputs.TrainingSequence(prompt, answer, config, source, target);
            if (ids[b].Length != seq) throw new InvalidOperationException($"built a {ids[b].Length}-token sequence, wanted {seq}");
        }
        return GlmInputs.Build(ids, config, labels, device);
    }

    /// <summary>One step as <see cref="Training.Trainer"/> takes it (accumulation 1); returns the loss.</summary>
    private static double Step(GlmModel model, GlmInputs inputs, Optimizer optimizer, IReadOnlyList<KeyValuePair<string, Tensor>> trainable)
    {
        double value;
        using (TensorScope.Begin())
        {
            var loss = model.Loss(inputs);
            value = loss.Item();
            loss.Backward();
        }
        GradientClipping.ClipByGlobalNorm(trainable.Select(kv => kv.Value), 1f);
        optimizer.Step();
        optimizer.ZeroGrad();
        return value;
    }
}
