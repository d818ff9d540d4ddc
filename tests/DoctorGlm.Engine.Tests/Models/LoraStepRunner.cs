using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// One LoRA forward + backward of the 2-layer fixture model (tools/reference/make_model_fixtures.py) with the
/// fixture's non-zero PEFT adapter, on any device and with the base weights stored in any float type. The
/// mixed-precision tests compare these runs across storage types and backends.
/// </summary>
internal static class LoraStepRunner
{
    /// <summary>What a step produced, copied to the host.</summary>
    /// <param name="PeakStepBytes">The device allocator's peak over forward + backward above what was in use before
    /// (CUDA only: the CPU allocator is shared by tests running in parallel; 0 there).</param>
    public sealed record Result(float[] Logits, double Loss, float[][] GradA, float[][] GradB, long BaseBytes, long PeakStepBytes = 0)
    {
        /// <summary>The largest <see cref="ModelFixture.RelErr"/> of any LoRA gradient (A or B, any layer) of <paramref name="other"/> against these.</summary>
        public double LoraGradError(Result other)
        {
            double err = 0;
            for (int i = 0; i < GradA.Length; i++)
                err = Math.Max(err, Math.Max(ModelFixture.RelErr(GradA[i], other.GradA[i]), ModelFixture.RelErr(GradB[i], other.GradB[i])));
            return err;
        }

        /// <summary>|other.Loss − Loss| / |Loss|.</summary>
        public double LossError(Result other) => Math.Abs(other.Loss - Loss) / Math.Abs(Loss);

        /// <summary>Asserts that <paramref name="other"/> is the same step bit for bit: logits, loss, every LoRA gradient.</summary>
        public void AssertSameStep(Result other)
        {
            Assert.Equal(Logits, other.Logits);
            Assert.Equal(Loss, other.Loss);
            for (int i = 0; i < GradA.Length; i++)
            {
                Assert.Equal(GradA[i], other.GradA[i]);
                Assert.Equal(GradB[i], other.GradB[i]);
            }
        }
    }

    /// <param name="device">Where the model runs.</param>
    /// <param name="weightDType">Storage type of the base weight matrices.</param>
    /// <param name="roundedTo">If set, the weights are rounded to this type and stored back in F32 (the reference a
    /// 16-bit run is compared with: the same values, fp32 storage).</param>
    /// <param name="activation">The model's <see cref="GlmModel.ActivationDType"/>.</param>
    /// <param name="checkpointing">Gradient checkpointing of every block.</param>
    /// <param name="keepIntermediates">Keep every block intermediate to the end of the step (GlmModel.ReleaseIntermediates off).</param>
    public static Result Run(Device device, DType weightDType, DType? roundedTo = null, DType activation = DType.F32, bool checkpointing = false,
        bool keepIntermediates = false)
    {
        using var scope = TensorScope.Begin();
        var config = ModelFixture.Config;
        using var f = ModelFixture.Open("lora_peft");
        using var weights = ModelFixture.Open("weights");
        using var model = GlmModel.Load(config, weights, device, weightDType: weightDType);
        if (roundedTo is { } r)
        {
            model.ConvertWeights(r);
            model.ConvertWeights(DType.F32);
        }
        var layers = new List<(Tensor, Tensor)>();
        using (TensorScope.Unscoped())
            for (int i = 0; i < config.NumLayers; i++)
            {
                var a = f.Load($"lora_a.{i}", device);
                var b = f.Load($"lora_b.{i}", device);
                a.RequiresGrad = b.RequiresGrad = true;
                layers.Add((a, b));
            }
        var lora = model.AttachLora(new GlmLora(new LoraSettings((int)f.Meta("r"), (float)f.Meta("alpha")), layers));
        model.ActivationDType = activation;
        model.GradientCheckpointing = checkpointing;
        model.ReleaseIntermediates = !keepIntermediates;
        using var batch = GlmInputs.Build(TrainRows("ids"), config, TrainRows("labels"), device);
        var gpu = device.Kind == DeviceKind.Cuda ? (DoctorGlm.Engine.Backends.Cuda.CudaBackend)batch.Ids.Backend : null;
        gpu?.Synchronize();
        long before = gpu?.Memory.InUseBytes ?? 0;
        gpu?.ResetPeak();
        var logits = model.Forward(batch);
        var loss = GlmModel.LanguageModelLoss(logits, batch.Labels!);
        loss.Backward();
        long peak = gpu is null ? 0 : gpu.Memory.PeakBytes - before;
        return new Result(logits.ToFloatArray(), loss.Item(),
            lora.Layers.Select(l => l.A.Grad!.ToFloatArray()).ToArray(),
            lora.Layers.Select(l => l.B.Grad!.ToFloatArray()).ToArray(),
            model.BaseParameterBytes, peak);
    }

    private static int[][] TrainRows(string name)
    {
        using var f = ModelFixture.Open("train");
        return ModelFixture.Rows(f, name);
    }
}
