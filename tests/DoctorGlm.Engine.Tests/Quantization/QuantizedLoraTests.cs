using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Quantization;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Quantization;

/// <summary>
/// LoRA over an INT8/INT4 base (QLoRA's arrangement): the adapter sees exactly the de-quantized weights, so a model
/// whose block linears are quantized computes, to the last bit, what the float model holding the de-quantized values
/// computes — logits, loss and the gradients of A and B — and decoding with the fused kernel stays within fp32
/// rounding of it.
/// </summary>
public class QuantizedLoraTests(ITestOutputHelper output)
{
    private static readonly string[] Linears = ["attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight"];

    /// <summary>An adapter with a non-zero B (a fresh one has B = 0 and would change nothing), the same for every call.</summary>
    private static GlmLora Adapter(GlmConfig config, bool grouped)
    {
        var settings = grouped ? new LoraSettings(4, 8f, 0.1f, [true, false, true]) : new LoraSettings(4, 8f, 0.1f);
        var lora = GlmLora.Create(config, settings, new RandomGenerator(5));
        var noise = new RandomGenerator(6);
        foreach (var (_, b) in lora.Layers)
            using (var n = noise.Normal(b.Shape, 0.2f)) b.Backend.Copy(n, b);
        return lora;
    }

    /// <summary>
    /// The fixture model (its matrices in <paramref name="weights"/>) with its block linears replaced by their
    /// de-quantized values in that type: what a model quantized from the same weights multiplies with.
    /// </summary>
    private static GlmModel Dequantized(int bits, DType weights = DType.F32)
    {
        var model = ModelFixture.LoadModel();
        if (weights != DType.F32) model.ConvertWeights(weights);
        for (int i = 0; i < model.Config.NumLayers; i++)
            foreach (var suffix in Linears)
            {
                var w = model.Parameter($"transformer.layers.{i}.{suffix}");
                using var q = QuantizedWeight.Quantize(w, bits);
                using var dq = q.Dequantize();
                w.Backend.Copy(dq, w);
            }
        return model;
    }

    private static (float Loss, float[][] Grads, float[] Logits) Step(GlmModel model)
    {
        using var scope = TensorScope.Begin();
        model.Training = true; // LoRA dropout on: both models replay the same mask stream
        model.Rng = new RandomGenerator(11);
        using var batch = ModelFixture.TrainBatch(model.Config);
        var loss = model.Loss(batch);
        loss.Backward();
        var grads = model.Lora!.Layers.SelectMany(l => new[] { l.A.Grad!.ToFloatArray(), l.B.Grad!.ToFloatArray() }).ToArray();
        model.Training = false;
        float[] logits;
        using (GradMode.NoGrad()) logits = model.Forward(batch).ToFloatArray();
        return (loss.Item(), grads, logits);
    }

    // With 16-bit weights the base is de-quantized into that type (THUDM's reference de-quantizes into fp16), so the
    // GEMMs run on tensor cores on the GPU; the reference then holds the de-quantized values rounded the same way.
    [Theory]
    [InlineData(8, false, DType.F32)]
    [InlineData(4, false, DType.F32)]
    [InlineData(4, true, DType.F32)]
    [InlineData(4, false, DType.BF16)]
    [InlineData(8, true, DType.F16)]
    public void Training_over_the_quantized_base_equals_training_over_its_dequantized_weights(int bits, bool grouped, DType weights)
    {
        using var quantized = ModelFixture.LoadModel();
        if (weights != DType.F32) quantized.ConvertWeights(weights);
        quantized.Quantize(bits);
        quantized.AttachLora(Adapter(quantized.Config, grouped));
        using var reference = Dequantized(bits, weights);
        reference.AttachLora(Adapter(reference.Config, grouped));

        var q = Step(quantized);
        var r = Step(reference);
        output.WriteLine($"INT{bits}{(grouped ? " grouped" : "")}, {weights}: loss {q.Loss} (reference {r.Loss})");
        Assert.Equal(r.Loss, q.Loss);
        for (int i = 0; i < r.Grads.Length; i++) Assert.Equal(r.Grads[i], q.Grads[i]);
        Assert.All(q.Grads, g => Assert.Contains(g, v => v != 0f));
        Assert.Equal(r.Logits, q.Logits);
    }

    [Fact]
    public void Bf16_activations_over_a_quantized_base_stay_close_to_fp32_activations()
    {
        // 16-bit activations feed the de-quantized GEMMs (the fused kernel takes fp32 rows only); the bounds are the
        // ones issue #4 sets for bf16 against fp32 (loss 2e-2 relative, LoRA gradients 5e-2 of their largest element).
        (float Loss, float[][] Grads, float[] Logits) Run(DType activations)
        {
            using var model = ModelFixture.LoadModel();
            model.ConvertWeights(DType.BF16);
            model.Quantize(4);
            model.AttachLora(Adapter(model.Config, grouped: false));
            model.ActivationDType = activations;
            return Step(model);
        }
        var f32 = Run(DType.F32);
        var bf16 = Run(DType.BF16);
        double lossErr = Math.Abs(bf16.Loss - f32.Loss) / Math.Abs(f32.Loss), worst = 0;
        for (int i = 0; i < f32.Grads.Length; i++) worst = Math.Max(worst, ModelFixture.RelErr(f32.Grads[i], bf16.Grads[i]));
        output.WriteLine($"INT4 base, bf16 vs fp32 activations: loss {lossErr:E3} relative, LoRA gradients {worst:E3}");
        Assert.True(lossErr <= 2e-2, $"loss {lossErr:E3}");
        Assert.True(worst <= 5e-2, $"LoRA gradients {worst:E3}");
        Assert.True(lossErr > 0, "the activations were not rounded");
    }

    [Fact]
    public void Decoding_over_the_quantized_base_reads_the_packed_weights_and_matches()
    {
        // One row without gradients takes the fused kernel for the base product; the float model's GEMM sums in
        // another order, so the two agree to fp32 rounding, not bit for bit.
        using var scope = TensorScope.Begin();
        using var quantized = ModelFixture.LoadModel();
        quantized.Quantize(4);
        quantized.AttachLora(Adapter(quantized.Config, grouped: false));
        using var reference = Dequantized(4);
        reference.AttachLora(Adapter(reference.Config, grouped: false));
        var x = new RandomGenerator(3).Normal(new Shape(1, 1, quantized.Config.HiddenSize));
        var lora = quantized.Lora!;
        string key = "transformer.layers.0.attention.query_key_value.weight";
        using var q = QuantizedWeight.Quantize(ModelFixture.LoadModel().Parameter(key), 4);
        float[] fused, plain;
        using (GradMode.NoGrad())
        {
            fused = Ops.LoraLinear(x, q, null, lora.Layers[0].A, lora.Layers[0].B, lora.Scaling).ToFloatArray();
            plain = Ops.LoraLinear(x, reference.Parameter(key), null, lora.Layers[0].A, lora.Layers[0].B, lora.Scaling).ToFloatArray();
        }
        double scale = plain.Max(Math.Abs), err = ModelFixture.MaxAbs(plain, fused);
        output.WriteLine($"fused INT4 LoRA row vs the float product: max |error| {err:E3} of {scale:F3}");
        Assert.True(err <= 1e-5 * scale, $"fused LoRA over INT4: {err:E3}");
        Assert.NotEqual(plain, fused); // the fused kernel ran (a GEMM would give the same bits)

        using var cache = quantized.CreateCache();
        using var refCache = reference.CreateCache();
        var ids = new[] { 5, 17, 42, 191, 192 };
        float[] a, b;
        using (GradMode.NoGrad())
        {
            a = new DoctorGlm.Engine.Generation.GlmGenerator(quantized).NextLogits(ids.ToList(), cache);
            b = new DoctorGlm.Engine.Generation.GlmGenerator(reference).NextLogits(ids.ToList(), refCache);
        }
        double lerr = ModelFixture.MaxAbs(b, a), lscale = b.Max(Math.Abs);
        Assert.True(lerr <= 1e-4 * lscale, $"cached logits over the INT4 base with LoRA: {lerr:E3} of {lscale:F3}");
    }
}
