using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// <see cref="GlmModel.SavePretrained"/>: what it writes loads back through <see cref="GlmModel.FromPretrained(string, Device?, bool, DType)"/>
/// as the same model, bit for bit — fp32, 16-bit, and quantized models in THUDM's pre-quantized layout.
/// </summary>
public sealed class GlmSavePretrainedTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("glm-save-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Folder(string name) => Path.Combine(ModelFixture.Dir, name);

    private static float[] Logits(GlmModel model)
    {
        using var scope = TensorScope.Begin();
        using var inputs = GlmInputs.Build([[5, 17, 42, 9, 191, 192, 33, 71], [88, 3, 191, 192, 120]], model.Config);
        using (GradMode.NoGrad()) return model.Forward(inputs).ToFloatArray();
    }

    private static Dictionary<string, DType> StoredTypes(string folder)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(folder, GlmModel.WeightsFileName));
        return f.Tensors.ToDictionary(t => t.Name, t => t.DType);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    public void A_quantized_model_is_saved_in_thudms_layout_and_loads_back_the_same(int bits)
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"), new GlmLoadOptions { QuantizeBits = bits, MergeLoraAdapter = Folder("peft_adapter") });
        string dir = Path.Combine(_dir, $"int{bits}");
        model.SavePretrained(dir);

        var config = GlmConfig.FromJson(Path.Combine(dir, GlmModel.ConfigFileName));
        Assert.Equal(bits, config.QuantizationBit);
        var types = StoredTypes(dir);
        Assert.Equal(DType.I8, types["transformer.layers.1.mlp.dense_4h_to_h.weight"]);
        Assert.Equal(DType.F16, types["transformer.layers.1.mlp.dense_4h_to_h.weight_scale"]);
        Assert.Equal(DType.F32, types[GlmModel.EmbeddingKey]);
        Assert.Equal(2 * 4 + 1 + 12 * 2 + 2, types.Count); // 4 scales per layer more than the float model's keys

        using var loaded = GlmModel.FromPretrained(dir);
        Assert.Equal(bits, loaded.QuantizationBits);
        Assert.Equal(Logits(model), Logits(loaded));
    }

    [Fact]
    public void Sixteen_bit_weights_keep_their_type_unless_a_dtype_is_asked_for()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"), weightDType: DType.BF16);
        string own = Path.Combine(_dir, "own");
        model.SavePretrained(own);
        var types = StoredTypes(own);
        Assert.Equal(DType.BF16, types["transformer.layers.0.attention.query_key_value.weight"]);
        Assert.Equal(DType.F32, types["transformer.layers.0.attention.query_key_value.bias"]);
        Assert.Equal("bfloat16", GlmConfig.FromJson(Path.Combine(own, GlmModel.ConfigFileName)).TorchDType);
        using (var back = GlmModel.FromPretrained(own, weightDType: DType.BF16))
            Assert.Equal(Logits(model), Logits(back));

        string half = Path.Combine(_dir, "f16");
        model.SavePretrained(half, DType.F16);
        Assert.All(StoredTypes(half).Values, t => Assert.Equal(DType.F16, t));
        Assert.Equal("float16", GlmConfig.FromJson(Path.Combine(half, GlmModel.ConfigFileName)).TorchDType);
        using var fp16 = GlmModel.FromPretrained(half);
        double err = ModelFixture.MaxAbs(Logits(model), Logits(fp16));
        Assert.True(err > 0 && err < 5e-2, $"fp16 copy of a bf16 model: logits moved by {err:E3}"); // bf16 → fp16 rounds; vectors too
    }

    [Fact]
    public void An_fp32_model_round_trips_bit_for_bit_and_bad_dtypes_are_refused()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        string dir = Path.Combine(_dir, "fp32");
        model.SavePretrained(dir);
        using var back = GlmModel.FromPretrained(dir);
        Assert.Equal(Logits(model), Logits(back));
        Assert.Throws<ArgumentException>(() => model.SavePretrained(dir, DType.I8));

        // Only float tensors convert: an int tensor asked to become BF16 is refused before the file is touched.
        using var ids = Tensor.FromArray(new[] { 1, 2, 3 }, new Shape(3));
        string file = Path.Combine(_dir, "ids.safetensors");
        var e = Assert.Throws<ArgumentException>(() => SafeTensorsFile.Save(file, [new("ids", ids)], null, (_, _) => DType.BF16));
        Assert.Contains("'ids'", e.Message);
        Assert.False(File.Exists(file));
    }
}
