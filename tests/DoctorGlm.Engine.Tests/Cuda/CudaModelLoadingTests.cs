using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// <see cref="GlmLoadOptions"/> on the device: a model quantized (and a LoRA adapter merged) while it loads never holds
/// its fp32 block linears, so the allocator's peak is the finished model plus one weight matrix, where loading and
/// then quantizing peaks at the whole fp32 model; and it computes what the CPU's model loaded the same way computes.
/// </summary>
[Collection(GpuCollection.Name)]
public class CudaModelLoadingTests(ITestOutputHelper output)
{
    private static string Folder(string name) => Path.Combine(ModelFixture.Dir, name);

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    public void Quantizing_while_loading_peaks_at_the_quantized_model_plus_one_weight(int bits)
    {
        var gpu = CudaTestSetup.Require();
        var options = new GlmLoadOptions { QuantizeBits = bits, MergeLoraAdapter = Folder("peft_adapter") };
        var config = ModelFixture.Config;
        // The largest matrix read as a temporary: the MLP's [inner, hidden] in fp32 (the embedding is kept, not temporary).
        long largest = (long)config.InnerHiddenSize * config.HiddenSize * sizeof(float);

        (long Peak, long Kept) Measure(Func<GlmModel> load, out GlmModel model)
        {
            gpu.Synchronize();
            long before = gpu.Memory.InUseBytes;
            gpu.ResetPeak();
            model = load();
            gpu.Synchronize();
            return (gpu.Memory.PeakBytes - before, gpu.Memory.InUseBytes - before);
        }

        var onLoad = Measure(() => GlmModel.FromPretrained(Folder("hf_bin"), options, gpu.Device), out var quantized);
        using (quantized)
        {
            var after = Measure(() =>
            {
                var m = GlmModel.FromPretrained(Folder("hf_bin"), device: gpu.Device);
                m.LoadLoraAdapter(Folder("peft_adapter"));
                m.MergeLora();
                m.Quantize(bits);
                return m;
            }, out var reference);
            using (reference)
            {
                output.WriteLine($"INT{bits}: while loading: peak {onLoad.Peak:N0} B, kept {onLoad.Kept:N0} B; load then quantize: peak {after.Peak:N0} B, kept {after.Kept:N0} B; largest fp32 matrix {largest:N0} B");
                // The adapter (A, B of every layer) is read first and freed at the end: part of the allowance.
                long adapter = config.NumLayers * 2L * 8 * (3L * config.HiddenSize + config.HiddenSize) * sizeof(float);
                Assert.True(onLoad.Peak <= onLoad.Kept + largest + adapter + 64 * 1024,
                    $"INT{bits}: loading peaked at {onLoad.Peak:N0} B for a model of {onLoad.Kept:N0} B: more than one fp32 matrix ({largest:N0} B) above it");
                Assert.True(onLoad.Peak < after.Peak, $"INT{bits}: quantizing while loading peaked at {onLoad.Peak:N0} B, loading then quantizing at {after.Peak:N0} B");

                using var scope = TensorScope.Begin();
                using var inputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71]], config, device: gpu.Device);
                using (GradMode.NoGrad())
                    Assert.Equal(reference.Forward(inputs).ToFloatArray(), quantized.Forward(inputs).ToFloatArray());
            }
        }

        // And the same as the CPU's model loaded the same way (de-quantization is exact on both; sums differ in order).
        using var cpu = GlmModel.FromPretrained(Folder("hf_bin"), options);
        using var cpuScope = TensorScope.Begin();
        using var cpuInputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71]], config);
        using var gpuModel = GlmModel.FromPretrained(Folder("hf_bin"), options, gpu.Device);
        using var gpuInputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71]], config, device: gpu.Device);
        float[] c, g;
        using (GradMode.NoGrad()) { c = cpu.Forward(cpuInputs).ToFloatArray(); g = gpuModel.Forward(gpuInputs).ToFloatArray(); }
        double scale = c.Max(Math.Abs), err = ModelFixture.MaxAbs(c, g);
        output.WriteLine($"INT{bits}: GPU vs CPU logits max |error| {err:E3} of max |logit| {scale:F3}");
        Assert.True(err <= 1e-4 * scale, $"INT{bits}: GPU logits differ from the CPU's by {err:E3} (bound {1e-4 * scale:E3})");
    }

    /// <summary>
    /// LoRA trained over an INT4 base on the device (QLoRA's arrangement) against the same on the CPU. With bf16 weights
    /// the base is de-quantized into bf16 and the GPU rounds the fp32 activations to bf16 for its tensor-core GEMMs
    /// (the CPU multiplies them exactly): issue #4's bf16 bounds, 2e-2 on the loss and 5e-2 on the LoRA gradients.
    /// </summary>
    [Theory]
    [InlineData(DType.F32, 1e-5, 1e-4)]
    [InlineData(DType.BF16, 2e-2, 5e-2)]
    public void Lora_over_an_int4_base_matches_the_cpu(DType weights, double lossTol, double gradTol)
    {
        var gpu = CudaTestSetup.Require();
        (float Loss, float[][] Grads) Step(Device device)
        {
            using var model = GlmModel.FromPretrained(Folder("hf_bin"), new GlmLoadOptions { QuantizeBits = 4, WeightDType = weights }, device);
            var rng = new RandomGenerator(8);
            var layers = new List<(Tensor, Tensor)>();
            using (TensorScope.Unscoped())
                for (int i = 0; i < model.Config.NumLayers; i++)
                {
                    // Drawn on the host (the same numbers for both runs), then moved; To(Cpu) returns the tensor itself.
                    Tensor OnDevice(Tensor host) { var t = host.To(device); if (!ReferenceEquals(t, host)) host.Dispose(); return t; }
                    var da = OnDevice(rng.Normal(new Shape(4, model.Config.HiddenSize), 0.1f));
                    var db = OnDevice(rng.Normal(new Shape(3 * model.Config.HiddenSize, 4), 0.1f));
                    da.RequiresGrad = db.RequiresGrad = true;
                    layers.Add((da, db));
                }
            var lora = model.AttachLora(new GlmLora(new LoraSettings(4, 8f), layers));
            using var scope = TensorScope.Begin();
            using var batch = GlmInputs.Build(ModelFixture.Rows(ModelFixture.Open("train"), "ids"), model.Config,
                ModelFixture.Rows(ModelFixture.Open("train"), "labels"), device);
            var loss = model.Loss(batch);
            loss.Backward();
            return (loss.Item(), lora.Layers.SelectMany(l => new[] { l.A.Grad!.ToFloatArray(), l.B.Grad!.ToFloatArray() }).ToArray());
        }
        var cpu = Step(Device.Cpu);
        var dev = Step(gpu.Device);
        double lossErr = Math.Abs(cpu.Loss - dev.Loss) / Math.Abs(cpu.Loss), worst = 0;
        for (int i = 0; i < cpu.Grads.Length; i++) worst = Math.Max(worst, ModelFixture.RelErr(cpu.Grads[i], dev.Grads[i]));
        output.WriteLine($"LoRA over INT4 ({weights} weights), GPU vs CPU: loss {lossErr:E3} relative, LoRA gradients {worst:E3}");
        Assert.True(lossErr <= lossTol, $"loss differs by {lossErr:E3}");
        Assert.True(worst <= gradTol, $"LoRA gradients differ by {worst:E3}");
    }
}
