using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>Weight loading: every key and shape checked, errors name the source and key, the model is untouched on failure.</summary>
public sealed class GlmLoadTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("glm-load-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes the fixture weights with <paramref name="edit"/> applied to the name → tensor list.</summary>
    private string Variant(string name, Action<List<KeyValuePair<string, Tensor>>> edit)
    {
        using var src = ModelFixture.Open("weights");
        var list = src.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, src.Load(e.Name))).ToList();
        edit(list);
        string path = Path.Combine(_dir, name + ".safetensors");
        SafeTensorsFile.Save(path, list);
        foreach (var kv in list) kv.Value.Dispose();
        return path;
    }

    private static float[] Snapshot(GlmModel m) => m.BaseParameters().SelectMany(kv => kv.Value.ToFloatArray()).ToArray();

    private static void AssertRejected(GlmModel model, string path, params string[] mentions)
    {
        var before = Snapshot(model);
        using var src = SafeTensorsFile.Open(path);
        var e = Assert.Throws<InvalidDataException>(() => model.LoadWeights(src));
        Assert.Contains(path, e.Message);
        foreach (var m in mentions) Assert.Contains(m, e.Message);
        Assert.Equal(before, Snapshot(model)); // untouched
        Assert.All(model.BaseParameters(), kv => Assert.False(kv.Value.IsDisposed));
    }

    [Fact]
    public void Loads_the_fixture_ignoring_inv_freq_and_keeping_one_tied_buffer()
    {
        using var src = ModelFixture.Open("weights");
        Assert.Contains(src.Tensors, t => t.Name == GlmModel.LmHeadKey);
        Assert.Contains(src.Tensors, t => t.Name.EndsWith("rotary_emb.inv_freq"));
        using var model = GlmModel.Load(ModelFixture.Config, src);
        Assert.DoesNotContain(model.NamedParameters(), kv => kv.Key == GlmModel.LmHeadKey);
        Assert.Equal(src.Floats("transformer.layers.1.mlp.dense_4h_to_h.weight"), model.Parameter("transformer.layers.1.mlp.dense_4h_to_h.weight").ToFloatArray());
        Assert.Empty(model.TrainableParameters()); // loaded frozen by default
    }

    [Fact]
    public void A_missing_key_is_named_and_the_model_is_untouched()
    {
        using var model = GlmModel.CreateRandom(ModelFixture.Config, new RandomGenerator(5));
        var path = Variant("missing", l => l.RemoveAll(kv => kv.Key == "transformer.layers.1.attention.dense.bias"));
        AssertRejected(model, path, "missing", "'transformer.layers.1.attention.dense.bias'");
    }

    [Fact]
    public void A_wrong_shape_is_named_and_the_model_is_untouched()
    {
        using var model = GlmModel.CreateRandom(ModelFixture.Config, new RandomGenerator(5));
        var path = Variant("shape", l =>
        {
            int i = l.FindIndex(kv => kv.Key == "transformer.layers.0.mlp.dense_h_to_4h.weight");
            l[i] = new(l[i].Key, Tensor.Zeros(new Shape(255, 64)));
        });
        AssertRejected(model, path, "'transformer.layers.0.mlp.dense_h_to_4h.weight'", "[255, 64]");
    }

    [Fact]
    public void An_extra_key_or_an_untied_head_is_rejected()
    {
        using var model = GlmModel.CreateRandom(ModelFixture.Config, new RandomGenerator(5));
        var extra = Variant("extra", l => l.Add(new("transformer.layers.2.input_layernorm.weight", Tensor.Zeros(new Shape(64)))));
        AssertRejected(model, extra, "unexpected", "'transformer.layers.2.input_layernorm.weight'");
        var prefix = Variant("prefix", l => l.Add(new("transformer.prefix_encoder.embedding.weight", Tensor.Zeros(new Shape(3, 256)))));
        AssertRejected(model, prefix, "prefix encoder");
        var untied = Variant("untied", l =>
        {
            int i = l.FindIndex(kv => kv.Key == GlmModel.LmHeadKey);
            var v = l[i].Value.ToFloatArray();
            v[1234] += 0.01f;
            l[i] = new(l[i].Key, Tensor.FromArray(v, l[i].Value.Shape));
        });
        AssertRejected(model, untied, "'lm_head.weight'", "[19, 18]");
    }

    [Fact]
    public void A_successful_load_replaces_every_weight_and_keeps_trainability()
    {
        using var model = GlmModel.CreateRandom(ModelFixture.Config, new RandomGenerator(5));
        using var src = ModelFixture.Open("weights");
        model.LoadWeights(src);
        foreach (var (k, t) in model.BaseParameters())
        {
            Assert.Equal(src.Floats(k), t.ToFloatArray());
            Assert.True(t.RequiresGrad);
            Assert.Equal(k, t.Name);
        }
    }
}
