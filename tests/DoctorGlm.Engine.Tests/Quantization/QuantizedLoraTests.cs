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

    /// <summary>The fixture model with its block linears replaced by their de-quantized values, kept in fp32.</summary>
    private static GlmModel Dequantized(int bits)
    {
        var model = ModelFixture.LoadModel();
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

    [Theory]
    [InlineData(8, false)]
    [InlineData(4, false)]
    [InlineData(4, true)]
    public void Training_over_the_quantized_base_equals_training_over_its_dequantized_weights(int bits, bool grouped)
    {
        using var quantized = ModelFixture.LoadModel();
        quantized.Quantize(bits);
        quantized.AttachLora(Adapter(quantized.Config, grouped));
        using var reference = Dequantized(bits);
        reference.AttachLora(Adapter(reference.Config, grouped));

        var q = Step(quantized);
        var r = Step(reference);
        output.WriteLine($"INT{bits}{(grouped ? " grouped" : "")}: loss {q.Loss} (reference {r.Loss})");
        Assert.Equal(r.Loss, q.Loss);
        for (int i = 0; i < r.Grads.Length; i++) Assert.Equal(r.Grads[i], q.Grads[i]);
        Assert.All(q.Grads, g => Assert.Contains(g, v => v != 0f));
        Assert.Equal(r.Logits, q.Logits);
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
