using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// A frozen base kept in bf16/fp16 (<see cref="GlmModel.WeightDType"/>). On the CPU the 16-bit weights are
/// converted exactly inside the GEMM, so a 16-bit model must compute what an fp32 model holding the same rounded
/// values computes, up to fp32 summation order (1e-5 of the largest value), while its matrices take half the bytes.
/// </summary>
public class GlmMixedPrecisionTests(ITestOutputHelper output)
{
    private const double SameValuesTol = 1e-5;

    [Theory]
    [InlineData("BF16")]
    [InlineData("F16")]
    public void Sixteen_bit_base_computes_what_fp32_with_the_rounded_weights_computes(string type)
    {
        var dt = Enum.Parse<DType>(type);
        var half = LoraStepRunner.Run(Device.Cpu, dt);
        var reference = LoraStepRunner.Run(Device.Cpu, DType.F32, roundedTo: dt);
        var full = LoraStepRunner.Run(Device.Cpu, DType.F32);

        double logitsErr = ModelFixture.RelErr(reference.Logits, half.Logits);
        double lossErr = reference.LossError(half);
        double gradErr = reference.LoraGradError(half);
        // How far rounding the weights moves the result from the fp32 model: what mixed precision costs.
        double roundingEffect = ModelFixture.RelErr(full.Logits, half.Logits);
        output.WriteLine($"{type}: logits {logitsErr:E2}, loss {lossErr:E2}, LoRA grads {gradErr:E2} vs fp32 with rounded weights; " +
                         $"logits {roundingEffect:E2} vs the fp32 model; base bytes {half.BaseBytes} vs {full.BaseBytes}");
        Assert.True(logitsErr < SameValuesTol, $"logits {logitsErr:E3}");
        Assert.True(lossErr < SameValuesTol, $"loss {lossErr:E3}");
        Assert.True(gradErr < SameValuesTol, $"LoRA gradients {gradErr:E3}");
        Assert.True(roundingEffect > 0, "rounding the weights changed nothing: the model did not use 16-bit weights");
        Assert.True(roundingEffect < (dt == DType.BF16 ? 2e-2 : 2e-3), $"rounding effect {roundingEffect:E3} is larger than 16-bit weights explain");

        // Matrices in 2 bytes, vectors (LayerNorm, biases) in 4.
        var config = ModelFixture.Config;
        long matrices = GlmModel.ParameterShapes(config).Where(p => p.Shape.Rank == 2).Sum(p => p.Shape.NumElements);
        long vectors = GlmModel.ParameterShapes(config).Where(p => p.Shape.Rank == 1).Sum(p => p.Shape.NumElements);
        Assert.Equal(2 * matrices + 4 * vectors, half.BaseBytes);
        Assert.Equal(4 * matrices + 4 * vectors, full.BaseBytes);
    }

    /// <summary>
    /// 16-bit activations (<see cref="GlmModel.ActivationDType"/>): each op rounds its output once to bf16/fp16, so
    /// the LoRA step must stay close to the same model with fp32 activations — the bounds are what those roundings
    /// explain (measured on the fixture: bf16 logits 3.6e-3 and LoRA gradients 8.3e-3 of their largest element, loss
    /// 1.3e-5 relative; fp16 4.0e-4, 1.1e-3, 6.4e-5; bounds 2–4× above) — and must differ from it (else nothing was
    /// rounded).
    /// </summary>
    [Theory]
    [InlineData("BF16", 1e-3, 2e-2)]
    [InlineData("F16", 1e-3, 4e-3)]
    public void Sixteen_bit_activations_stay_close_to_fp32_activations(string type, double lossTol, double tol)
    {
        var dt = Enum.Parse<DType>(type);
        var half = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: dt);
        var full = LoraStepRunner.Run(Device.Cpu, DType.BF16);
        double logitsErr = ModelFixture.RelErr(full.Logits, half.Logits);
        double lossErr = full.LossError(half);
        double gradErr = full.LoraGradError(half);
        output.WriteLine($"{type} activations vs fp32 activations (bf16 weights): loss {half.Loss:F6} vs {full.Loss:F6} ({lossErr:E2}), logits {logitsErr:E2}, LoRA grads {gradErr:E2}");
        Assert.True(logitsErr > 0, "the logits did not change: the activations were not stored in 16 bits");
        Assert.True(lossErr <= lossTol, $"loss {lossErr:E3} > {lossTol:E1}");
        Assert.True(logitsErr <= tol, $"logits {logitsErr:E3} > {tol:E1}");
        Assert.True(gradErr <= tol, $"LoRA gradients {gradErr:E3} > {tol:E1}");
    }

    /// <summary>Checkpointing with 16-bit activations keeps each block's 16-bit input and replays the block exactly: identical results.</summary>
    [Fact]
    public void Checkpointing_with_bf16_activations_gives_the_same_step()
    {
        var plain = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: DType.BF16);
        var ckpt = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: DType.BF16, checkpointing: true);
        plain.AssertSameStep(ckpt);
    }

    /// <summary>Freeing the block intermediates no backward reads changes nothing but memory: the same step, bit for bit.</summary>
    [Theory]
    [InlineData("F32", false)]
    [InlineData("BF16", true)]
    public void Releasing_block_intermediates_gives_the_same_step(string activation, bool checkpointing)
    {
        var act = Enum.Parse<DType>(activation);
        var released = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: act, checkpointing: checkpointing);
        var kept = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: act, checkpointing: checkpointing, keepIntermediates: true);
        kept.AssertSameStep(released);
    }

    [Fact]
    public void Activation_dtype_must_be_a_float_type_and_quantized_models_take_16_bit_activations()
    {
        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel();
        Assert.Throws<ArgumentException>(() => model.ActivationDType = DType.I32);
        model.Quantize(8);
        using var train = ModelFixture.Open("train");
        using var batch = GlmInputs.Build(ModelFixture.Rows(train, "ids"), ModelFixture.Config);
        float[] f32, bf16;
        using (GradMode.NoGrad())
        {
            f32 = model.Forward(batch).ToFloatArray();
            model.ActivationDType = DType.BF16; // the quantized linears de-quantize for a GEMM that takes 16-bit rows
            bf16 = model.Forward(batch).ToFloatArray();
        }
        double err = ModelFixture.MaxAbs(f32, bf16), scale = f32.Max(Math.Abs);
        Assert.True(err > 0 && err <= 2e-2 * scale, $"INT8 model, bf16 vs fp32 activations: logits differ by {err:E3} of {scale:F3}");
    }

    [Fact]
    public void Loading_in_bf16_equals_converting_after_loading_and_keeps_vectors_fp32()
    {
        using var scope = TensorScope.Begin();
        using var w = ModelFixture.Open("weights");
        using var loaded = GlmModel.Load(ModelFixture.Config, w, weightDType: DType.BF16);
        using var converted = ModelFixture.LoadModel();
        converted.ConvertWeights(DType.BF16);
        Assert.Equal(DType.BF16, loaded.WeightDType);
        foreach (var (name, t) in loaded.BaseParameters())
        {
            var other = converted.Parameter(name);
            Assert.Equal(t.Rank == 2 ? DType.BF16 : DType.F32, t.DType);
            Assert.Equal(t.DType, other.DType);
            Assert.Equal(t.ToFloatArray(), other.ToFloatArray());
        }
    }

    [Fact]
    public void Trainable_base_weights_must_stay_fp32()
    {
        using var scope = TensorScope.Begin();
        using var w = ModelFixture.Open("weights");
        var e1 = Assert.Throws<ArgumentException>(() => GlmModel.Load(ModelFixture.Config, w, trainable: true, weightDType: DType.BF16));
        Assert.Contains("must be F32", e1.Message);
        using var model = GlmModel.Load(ModelFixture.Config, w, weightDType: DType.F16);
        var e2 = Assert.Throws<ArgumentException>(() => model.SetBaseTrainable(true));
        Assert.Contains("master weights", e2.Message);
        using var full = ModelFixture.LoadModel(trainable: true);
        Assert.Throws<ArgumentException>(() => full.ConvertWeights(DType.BF16));
        Assert.Throws<ArgumentException>(() => model.ConvertWeights(DType.I8));
    }

    [Fact]
    public void A_bf16_model_quantizes_to_int8_and_keeps_its_embedding_in_bf16()
    {
        using var scope = TensorScope.Begin();
        var config = ModelFixture.Config;
        using var w = ModelFixture.Open("weights");
        using var half = GlmModel.Load(config, w, weightDType: DType.BF16);
        using var full = ModelFixture.LoadModel();
        using var batch = GlmInputs.Build(ModelFixture.Rows(ModelFixture.Open("train"), "ids"), config);
        float[] reference;
        using (Autograd.GradMode.NoGrad()) reference = full.Forward(batch).ToFloatArray();
        half.Quantize(8);
        Assert.Equal(DType.BF16, half.Parameter(GlmModel.EmbeddingKey).DType);
        float[] quantized;
        using (Autograd.GradMode.NoGrad()) quantized = half.Forward(batch).ToFloatArray();
        double err = ModelFixture.RelErr(reference, quantized);
        output.WriteLine($"bf16 + INT8 vs fp32 logits: {err:E2}");
        Assert.True(err < 1e-2, $"bf16 + INT8 logits {err:E3} of max |logit| from fp32");
    }

    [Fact]
    public void Merging_lora_into_bf16_weights_matches_the_unmerged_forward_to_bf16_precision()
    {
        using var scope = TensorScope.Begin();
        var config = ModelFixture.Config;
        using var f = ModelFixture.Open("lora_peft");
        using var w = ModelFixture.Open("weights");
        using var model = GlmModel.Load(config, w, weightDType: DType.BF16);
        var layers = new List<(Tensor, Tensor)>();
        using (TensorScope.Unscoped())
            for (int i = 0; i < config.NumLayers; i++) layers.Add((f.Load($"lora_a.{i}"), f.Load($"lora_b.{i}")));
        model.AttachLora(new GlmLora(new LoraSettings((int)f.Meta("r"), (float)f.Meta("alpha")), layers));
        using var batch = GlmInputs.Build(ModelFixture.Rows(ModelFixture.Open("train"), "ids"), config);
        float[] unmerged, merged;
        using (Autograd.GradMode.NoGrad())
        {
            unmerged = model.Forward(batch).ToFloatArray();
            model.MergeLora();
            Assert.Equal(DType.BF16, model.Parameter("transformer.layers.0.attention.query_key_value.weight").DType);
            merged = model.Forward(batch).ToFloatArray();
        }
        double err = ModelFixture.RelErr(unmerged, merged);
        output.WriteLine($"merged vs unmerged logits: {err:E2}");
        Assert.True(err > 0 && err < 2e-2, $"merged vs unmerged {err:E3}");
        Assert.Throws<InvalidOperationException>(() => model.ConvertWeights(DType.F32));
    }
}
