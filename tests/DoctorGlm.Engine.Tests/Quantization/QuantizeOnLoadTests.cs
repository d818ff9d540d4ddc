using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Quantization;

/// <summary>
/// <see cref="GlmLoadOptions"/>: quantizing and merging a LoRA adapter while the checkpoint streams in gives, bit for
/// bit, the model that loading, <see cref="GlmModel.LoadLoraAdapter"/> + <see cref="GlmModel.MergeLora"/> and
/// <see cref="GlmModel.Quantize"/> make; bad combinations are refused before anything is read. (The peak memory it
/// saves is checked on the device allocator: <c>Cuda/CudaModelLoadingTests</c>.)
/// </summary>
public class QuantizeOnLoadTests(ITestOutputHelper output)
{
    private static string Folder(string name) => Path.Combine(ModelFixture.Dir, name);

    private static float[] Logits(GlmModel model)
    {
        using var scope = TensorScope.Begin();
        using var inputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71], [88, 3, 191, 192, 120]], model.Config);
        using (GradMode.NoGrad()) return model.Forward(inputs).ToFloatArray();
    }

    [Theory]
    [InlineData(8, DType.F32)]
    [InlineData(4, DType.F32)]
    [InlineData(8, DType.BF16)]
    [InlineData(4, DType.F16)]
    public void Quantizing_while_loading_equals_loading_then_quantizing(int bits, DType weights)
    {
        using var w = ModelFixture.Open("weights");
        using var after = GlmModel.Load(ModelFixture.Config, w, weightDType: weights);
        after.Quantize(bits);
        using var onLoad = GlmModel.Load(ModelFixture.Config, w, new GlmLoadOptions { QuantizeBits = bits, WeightDType = weights });

        Assert.Equal(bits, onLoad.QuantizationBits);
        Assert.Equal(weights, onLoad.WeightDType);
        // The four block linears are gone from the float parameters; the embedding and the vectors stay.
        Assert.Equal(after.BaseParameters().Select(kv => kv.Key), onLoad.BaseParameters().Select(kv => kv.Key));
        Assert.Equal(after.BaseParameterBytes, onLoad.BaseParameterBytes);
        var expected = Logits(after);
        Assert.Equal(expected, Logits(onLoad));
        using var fp32 = ModelFixture.LoadModel();
        Assert.NotEqual(Logits(fp32), expected); // the quantized linears are the ones in use
    }

    [Theory]
    [InlineData("peft_adapter", 0)]
    [InlineData("peft_adapter", 4)]
    [InlineData("doctorglm_adapter", 0)]
    [InlineData("doctorglm_adapter", 8)]
    public void Merging_an_adapter_while_loading_equals_attaching_merging_and_quantizing(string adapter, int bits)
    {
        using var reference = GlmModel.FromPretrained(Folder("hf_bin"));
        var baseLogits = Logits(reference);
        reference.LoadLoraAdapter(Folder(adapter));
        reference.MergeLora();
        if (bits != 0) reference.Quantize(bits);

        using var onLoad = GlmModel.FromPretrained(Folder("hf_bin"), new GlmLoadOptions { QuantizeBits = bits, MergeLoraAdapter = Folder(adapter) });
        Assert.Null(onLoad.Lora); // folded in, not attached
        Assert.Equal(bits, onLoad.QuantizationBits);
        var expected = Logits(reference);
        Assert.Equal(expected, Logits(onLoad));
        double moved = ModelFixture.MaxAbs(baseLogits, expected);
        output.WriteLine($"{adapter}, INT{bits}: the merged adapter moves the logits by up to {moved:E3}");
        Assert.True(moved > 1e-3, $"{adapter}: the adapter changed the logits by only {moved:E3}; the merge was not applied");
    }

    private sealed class Recorder : IProgress<GlmLoadProgress>
    {
        public List<GlmLoadProgress> Reports { get; } = [];

        public void Report(GlmLoadProgress value) => Reports.Add(value);
    }

    [Theory]
    [InlineData(false, 0)]
    [InlineData(false, 4)]
    [InlineData(true, 8)] // THUDM's pre-quantized layout: int8 weight and fp16 weight_scale pairs
    public void Progress_counts_every_tensor_and_byte_read(bool preQuantized, int bits)
    {
        string folder = preQuantized ? Path.Combine(Fixture.Dir("quant"), "hf_int8") : Folder("hf_bin");
        var recorder = new Recorder();
        using var model = GlmModel.FromPretrained(folder, new GlmLoadOptions { QuantizeBits = bits, Progress = recorder });
        Assert.Equal(bits, model.QuantizationBits);
        var r = recorder.Reports;
        using var source = DoctorGlm.Engine.IO.CheckpointReader.Open(folder);
        // Every stored tensor but the rotary tables the model recomputes: the parameters, and lm_head (checked, not kept).
        var stored = source.Tensors.Where(t => !t.Name.EndsWith("inv_freq", StringComparison.Ordinal)).ToList();
        Assert.Equal(stored.Count, r.Count);
        Assert.Equal(Enumerable.Range(1, r.Count), r.Select(x => x.Tensors));
        Assert.All(r, x => Assert.Equal(stored.Count, x.TotalTensors));
        Assert.Equal(stored.Sum(t => t.Shape.NumElements * t.DType.SizeOf()), r[^1].TotalBytes);
        Assert.Equal(r[^1].TotalBytes, r[^1].Bytes);
        Assert.True(r.Zip(r.Skip(1)).All(p => p.Second.Bytes > p.First.Bytes));
        Assert.Equal(stored.Select(t => t.Name).Order(), r.Select(x => x.Name).Order());
    }

    [Fact]
    public void Options_that_cannot_hold_are_refused_before_anything_is_read()
    {
        using var w = ModelFixture.Open("weights");
        var config = ModelFixture.Config;
        var e = Assert.Throws<ArgumentException>(() => GlmModel.Load(config, w, new GlmLoadOptions { QuantizeBits = 6 }));
        Assert.Contains("QuantizeBits 6", e.Message);
        e = Assert.Throws<ArgumentException>(() => GlmModel.Load(config, w, new GlmLoadOptions { QuantizeBits = 8, Trainable = true }));
        Assert.Contains("frozen", e.Message);
        e = Assert.Throws<ArgumentException>(() => GlmModel.Load(config, w, new GlmLoadOptions { WeightDType = DType.BF16, Trainable = true }));
        Assert.Contains("F32", e.Message);
        var missing = Path.Combine(Path.GetTempPath(), "no-such-adapter-" + Guid.NewGuid().ToString("N"));
        var io = Assert.ThrowsAny<IOException>(() => GlmModel.Load(config, w, new GlmLoadOptions { MergeLoraAdapter = missing }));
        Assert.Contains(missing, io.Message);

        // A pre-quantized checkpoint: other bits, or an adapter to merge into its integer weights, are refused.
        string int8 = Path.Combine(Fixture.Dir("quant"), "hf_int8");
        e = Assert.Throws<ArgumentException>(() => GlmModel.FromPretrained(int8, new GlmLoadOptions { QuantizeBits = 4 }));
        Assert.Contains("INT8", e.Message);
        e = Assert.Throws<ArgumentException>(() => GlmModel.FromPretrained(int8, new GlmLoadOptions { MergeLoraAdapter = Folder("peft_adapter") }));
        Assert.Contains("pre-quantized", e.Message);
        using var same = GlmModel.FromPretrained(int8, new GlmLoadOptions { QuantizeBits = 8 });
        Assert.Equal(8, same.QuantizationBits);
    }

    [Fact]
    public void An_adapter_for_another_model_is_named_and_nothing_is_loaded()
    {
        // The fixture adapters are for hidden 64; a config with another width must refuse them by file.
        var json = File.ReadAllText(ModelFixture.ConfigPath).Replace("\"hidden_size\": 64", "\"hidden_size\": 32", StringComparison.Ordinal);
        string dir = Directory.CreateTempSubdirectory("glm-load-options-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "config.json"), json);
            var config = GlmConfig.FromJson(Path.Combine(dir, "config.json"));
            using var w = ModelFixture.Open("weights");
            var e = Assert.ThrowsAny<Exception>(() => GlmModel.Load(config, w, new GlmLoadOptions { MergeLoraAdapter = Folder("peft_adapter"), QuantizeBits = 8 }));
            Assert.True(e is InvalidDataException or ArgumentException or NotSupportedException, e.GetType().Name + ": " + e.Message);
            Assert.Contains("peft_adapter", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
