using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Quantization;

/// <summary>The tiny PyTorch-parity model quantized to INT8/INT4: logits stay close to the fp32 reference.</summary>
public class QuantizedModelTests(ITestOutputHelper output)
{
    private static (float[] Reference, float[] Ours, double Scale) Run(int bits)
    {
        using var f = ModelFixture.Open("logits");
        var flat = f.Load("sequences").ToIntArray();
        var lengths = f.Load("lengths").ToIntArray();
        var seqs = new int[lengths.Length][];
        for (int b = 0, o = 0; b < lengths.Length; o += lengths[b], b++) seqs[b] = flat[o..(o + lengths[b])];
        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel();
        model.Quantize(bits);
        Assert.Equal(bits, model.QuantizationBits);
        using var inputs = GlmInputs.Build(seqs, ModelFixture.Config);
        float[] ours;
        using (GradMode.NoGrad()) ours = model.Forward(inputs).ToFloatArray();
        var reference = f.Floats("logits");
        return (reference, ours, reference.Select(Math.Abs).Max());
    }

    // Stated tolerances, relative to the largest |logit|: measured 2026-11-25: 0.26% (INT8, 0.050 of 19.7) and 5.4% (INT4, 1.06);
    // the bounds leave room for a different random model but fail on a wrong nibble order or scale.
    [Theory]
    [InlineData(8, 0.02)]
    [InlineData(4, 0.20)]
    public void Quantized_logits_stay_within_the_stated_error_of_fp32(int bits, double tolerance)
    {
        var (reference, ours, scale) = Run(bits);
        double err = ModelFixture.MaxAbs(reference, ours);
        output.WriteLine($"INT{bits}: max |logit error| {err:E3} = {err / scale:P2} of max |logit| {scale:F3}");
        Assert.True(err <= tolerance * scale, $"INT{bits} logits error {err:E3} exceeds {tolerance:P0} of {scale:F3}");
        Assert.True(err > 0, "quantization changed nothing: the quantized path was not used");
    }

    [Fact]
    public void Quantizing_keeps_an_adapter_as_it_was_attached_and_frees_the_fp32_weights()
    {
        using var model = ModelFixture.LoadModel();
        model.AttachLora(new LoraSettings(2, 4f), new RandomGenerator(1));
        int before = model.BaseParameters().Count();
        model.Quantize(8); // unmerged: it stays on top of the INT8 base
        Assert.False(model.Lora!.Merged);
        Assert.Equal(before - 4 * model.Config.NumLayers, model.BaseParameters().Count());
        var e = Assert.Throws<InvalidOperationException>(() => model.MergeLora());
        Assert.Contains("cannot be folded into INT8/INT4 weights", e.Message);
        Assert.Throws<InvalidOperationException>(() => model.Quantize(4));

        using var merged = ModelFixture.LoadModel();
        merged.AttachLora(new LoraSettings(2, 4f), new RandomGenerator(1));
        merged.MergeLora();
        merged.Quantize(8); // merged: quantized with the weights
        Assert.True(merged.Lora!.Merged);
        Assert.Throws<InvalidOperationException>(() => merged.UnmergeLora());
    }
}

/// <summary>THUDM-style pre-quantized checkpoints (int8 weight + fp16 weight_scale, quantization_bit in config.json).</summary>
public class PreQuantizedCheckpointTests
{
    private static string Folder(int bits) => Path.Combine(Fixture.Dir("quant"), $"hf_int{bits}");

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    public void Loads_and_matches_quantizing_the_fp32_model_on_load_bit_for_bit(int bits)
    {
        using var scope = TensorScope.Begin();
        using var pre = GlmModel.FromPretrained(Folder(bits));
        Assert.Equal(bits, pre.QuantizationBits);
        using var onLoad = ModelFixture.LoadModel();
        onLoad.Quantize(bits);
        using var inputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71]], ModelFixture.Config);
        float[] a, b;
        using (GradMode.NoGrad()) { a = pre.Forward(inputs).ToFloatArray(); b = onLoad.Forward(inputs).ToFloatArray(); }
        Assert.Equal(b, a);
    }

    [Fact]
    public void A_missing_scale_or_a_float_weight_is_named()
    {
        string dir = Path.Combine(Path.GetTempPath(), "doctorglm-q-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            // The fp32 parity checkpoint with a config that claims INT8: the weight is F32, not I8.
            File.Copy(Path.Combine(ModelFixture.Dir, "weights.safetensors"), Path.Combine(dir, "model.safetensors"));
            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(Folder(8), "config.json")));
            var e = Assert.Throws<InvalidDataException>(() => GlmModel.FromPretrained(dir));
            Assert.Contains("transformer.layers.0.attention.query_key_value.weight", e.Message);
            Assert.Contains("I8", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
