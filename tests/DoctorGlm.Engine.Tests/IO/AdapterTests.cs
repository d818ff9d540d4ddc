using System.Text.Json.Nodes;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.IO.Adapters;
using static DoctorGlm.Engine.Tests.IO.IoFixture;

namespace DoctorGlm.Engine.Tests.IO;

/// <summary>PEFT, DoctorGLM (deep_training) and P-Tuning v2 checkpoints: exact values, key names, shapes and refusals.</summary>
public sealed class AdapterTests : IDisposable
{
    private readonly string _dir = TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The fixtures' model: L = 2 layers, H = 4 (query_key_value is [12, 4]), r = 2.
    private static readonly AdapterExpectations Tiny = new(NumLayers: 2, HiddenSize: 4);

    [Fact]
    public void PeftAdapterLoadsExactly()
    {
        using var expected = Expected();
        using var a = PeftAdapter.Load(PathOf("peft_adapter"), Tiny);
        Assert.Equal(2, a.Rank);
        Assert.Equal(8f, a.Alpha);
        Assert.Equal(4f, a.Scaling);
        Assert.Equal(0.1f, a.Dropout, 6);
        Assert.False(a.Grouped);
        Assert.Equal((4, 12), (a.InFeatures, a.OutFeatures));
        Assert.Equal([0, 1], a.Layers.Keys.Order());
        foreach (var (i, l) in a.Layers)
        {
            Assert.Equal([2, 4], l.A.Shape.ToArray());
            Assert.Equal([12, 2], l.B.Shape.ToArray());
            AssertBitExact(expected, "peft/" + PeftAdapter.KeyA(i), l.A);
            AssertBitExact(expected, "peft/" + PeftAdapter.KeyB(i), l.B);
        }
        var cfg = PeftAdapter.ReadConfig(PathOf("peft_adapter"));
        Assert.Equal("THUDM/chatglm-6b", cfg.BaseModelNameOrPath);
        Assert.Equal("CAUSAL_LM", cfg.TaskType);
        Assert.Equal(["query_key_value"], cfg.TargetModules);
        Assert.True(cfg.InferenceMode);
    }

    [Fact]
    public void PeftWriteThenReadRoundTripsWithExactKeysAndShapes()
    {
        using var a = PeftAdapter.Load(PathOf("peft_adapter"), Tiny);
        string outDir = Path.Combine(_dir, "saved");
        PeftAdapter.Save(outDir, a);

        using (var f = SafeTensorsFile.Open(Path.Combine(outDir, "adapter_model.safetensors")))
        {
            Assert.Equal(
                ["base_model.model.transformer.layers.0.attention.query_key_value.lora_A.weight",
                 "base_model.model.transformer.layers.0.attention.query_key_value.lora_B.weight",
                 "base_model.model.transformer.layers.1.attention.query_key_value.lora_A.weight",
                 "base_model.model.transformer.layers.1.attention.query_key_value.lora_B.weight"],
                f.Entries.Select(e => e.Name));
            Assert.Equal([2, 4], f[PeftAdapter.KeyA(1)].Shape);
            Assert.Equal([12, 2], f[PeftAdapter.KeyB(1)].Shape);
        }
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!;
        Assert.Equal("LORA", (string)json["peft_type"]!);
        Assert.Equal(2, (int)json["r"]!);
        Assert.Equal(8.0, (double)json["lora_alpha"]!);
        Assert.Equal("query_key_value", (string)json["target_modules"]![0]!);
        Assert.Equal("none", (string)json["bias"]!);
        Assert.False((bool)json["fan_in_fan_out"]!);

        using var back = PeftAdapter.Load(outDir, Tiny);
        Assert.Equal((a.Rank, a.Alpha, a.Grouped), (back.Rank, back.Alpha, back.Grouped));
        foreach (var (i, l) in a.Layers)
        {
            Assert.Equal(l.A.ToBytes(), back.Layers[i].A.ToBytes());
            Assert.Equal(l.B.ToBytes(), back.Layers[i].B.ToBytes());
        }
    }

    [Fact]
    public void Peft020MergedLinearFormIsReadAsGrouped()
    {
        using var expected = Expected();
        using var a = PeftAdapter.Load(PathOf("peft020_adapter"), Tiny);
        Assert.True(a.Grouped);
        Assert.Equal([true, false, true], a.EnableLora);
        Assert.Equal(8f, a.Scaling);
        foreach (var (i, l) in a.Layers)
        {
            Assert.Equal([4, 4], l.A.Shape.ToArray());
            Assert.Equal([8, 2], l.B.Shape.ToArray()); // Conv1d [8, 2, 1] squeezed
            AssertBitExact(expected, "peft020/" + PeftAdapter.KeyA(i), l.A);
            using var expB = expected.Load("peft020/" + PeftAdapter.KeyB(i));
            Assert.Equal(expB.ToBytes(), l.B.ToBytes());
        }
        // PEFT ≥ 0.3 cannot express enable_lora: refuse rather than write a file PEFT would misread.
        Assert.Throws<InvalidOperationException>(() => PeftAdapter.Save(Path.Combine(_dir, "x"), a));
    }

    [Fact]
    public void DoctorGlmAdapterIsGroupedFp16AndMatchedBySuffix()
    {
        using var expected = Expected();
        using var a = DoctorGlmAdapter.Load(PathOf("doctorglm_adapter"), Tiny);
        Assert.True(a.Grouped);
        Assert.Equal([true, false, true], a.EnableLora);
        Assert.Equal(2f, a.Scaling);
        Assert.Equal(12, a.OutFeatures);
        foreach (var (i, l) in a.Layers)
        {
            Assert.Equal(DType.F16, l.A.DType);
            AssertBitExact(expected, $"doctorglm/model.transformer.transformer.layers.{i}.attention.query_key_value.lora_A", l.A);
            AssertBitExact(expected, $"doctorglm/model.transformer.transformer.layers.{i}.attention.query_key_value.lora_B", l.B);
        }
        var cfg = DoctorGlmAdapter.ReadConfig(PathOf("doctorglm_adapter"));
        Assert.True(cfg.FanInFanOutAsWritten);
        Assert.False(cfg.FanInFanOut);
        Assert.Equal("16", cfg.TargetDType);

        // Converting load to fp32 is exact.
        using var f = DoctorGlmAdapter.Load(PathOf("doctorglm_adapter"), Tiny, DType.F32);
        Assert.Equal(a.Layers[1].B.ToFloatArray(), f.Layers[1].B.ToFloatArray());
    }

    [Fact]
    public void DoctorGlmGroupsAreInferredWithoutEnableLora()
    {
        string d = CopyTo("doctorglm_adapter", _dir);
        EditJson(Path.Combine(d, "adapter_config.json"), j => j.AsObject().Remove("enable_lora"));
        using var a = DoctorGlmAdapter.Load(d, Tiny);
        Assert.Equal([true, false, true], a.EnableLora);
    }

    private static void EditJson(string path, Action<JsonNode> edit)
    {
        var j = JsonNode.Parse(File.ReadAllText(path))!;
        edit(j);
        File.WriteAllText(path, j.ToJsonString());
    }

    [Fact]
    public void LayerOutsideTheModelIsRefusedNamingFileAndKey()
    {
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(PathOf("peft_adapter"), new AdapterExpectations(NumLayers: 1, HiddenSize: 4)));
        Assert.Contains("adapter_model.bin", e.Message);
        Assert.Contains("layers.1.attention.query_key_value.lora_", e.Message);
        e = Assert.Throws<InvalidDataException>(() => DoctorGlmAdapter.Load(PathOf("doctorglm_adapter"), new AdapterExpectations(NumLayers: 1)));
        Assert.Contains("model.transformer.transformer.layers.1.attention.query_key_value.lora_", e.Message);
    }

    [Fact]
    public void MissingLayersAreRefused()
    {
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(PathOf("peft_adapter"), new AdapterExpectations(NumLayers: 3)));
        Assert.Contains("layer(s) 2", e.Message);
        Assert.Contains("adapter_model.bin", e.Message);
    }

    [Fact]
    public void WrongShapesAreRefusedNamingFileAndKey()
    {
        // H = 8: lora_A's in-features (4) no longer match.
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(PathOf("peft_adapter"), new AdapterExpectations(HiddenSize: 8)));
        Assert.Contains("adapter_model.bin", e.Message);
        Assert.Contains("lora_A.weight", e.Message);
        // r = 3 in the config disagrees with lora_A's 2 rows.
        string d = CopyTo("peft_adapter", _dir);
        EditJson(Path.Combine(d, "adapter_config.json"), j => j["r"] = 3);
        e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(d, Tiny));
        Assert.Contains("lora_", e.Message);
        // A grouped DoctorGLM lora_B must have ⅔·3H rows: claim the plain form and it fails on the shapes.
        string g = CopyTo("doctorglm_adapter", _dir);
        EditJson(Path.Combine(g, "adapter_config.json"), j => j["enable_lora"] = new JsonArray(true, true, true));
        e = Assert.Throws<InvalidDataException>(() => DoctorGlmAdapter.Load(g, Tiny));
        Assert.Contains("query_key_value.lora_", e.Message);
    }

    /// <summary>Rewrites a copied adapter folder's weights as safetensors with <paramref name="edit"/> applied to the key list.</summary>
    private string AdapterWith(string fixture, Func<List<KeyValuePair<string, Tensor>>, List<KeyValuePair<string, Tensor>>> edit)
    {
        string d = CopyTo(fixture, Directory.CreateDirectory(Path.Combine(_dir, Guid.NewGuid().ToString("N"))).FullName);
        var items = new List<KeyValuePair<string, Tensor>>();
        using (var src = CheckpointReader.Open(Path.Combine(d, "adapter_model.bin")))
            foreach (var t in src.Tensors) items.Add(new(t.Name, Load(src, t.Name)));
        File.Delete(Path.Combine(d, "adapter_model.bin"));
        var edited = edit(items);
        SafeTensorsFile.Save(Path.Combine(d, "adapter_model.safetensors"), edited);
        foreach (var (_, t) in items.Concat(edited)) t.Dispose();
        return d;
    }

    [Fact]
    public void ExtraAndMissingKeysAreRefused()
    {
        string extra = AdapterWith("peft_adapter", l => [.. l, new("base_model.model.transformer.layers.0.attention.dense.lora_A.weight", Tensor.Zeros(new Shape(2, 4)))]);
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(extra, Tiny));
        Assert.Contains("'base_model.model.transformer.layers.0.attention.dense.lora_A.weight'", e.Message);
        Assert.Contains("adapter_model.safetensors", e.Message);

        string missing = AdapterWith("peft_adapter", l => l.Where(kv => kv.Key != PeftAdapter.KeyB(1)).ToList());
        e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(missing, Tiny));
        Assert.Contains(PeftAdapter.KeyA(1), e.Message);
        Assert.Contains("lora_B", e.Message);

        // A DoctorGLM-suffixed key in a PEFT folder is not PEFT's exact name.
        string renamed = AdapterWith("peft_adapter", l => l.Select(kv => new KeyValuePair<string, Tensor>(kv.Key.Replace("base_model.model.", "model.transformer."), kv.Value)).ToList());
        e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(renamed, Tiny));
        Assert.Contains("unexpected key 'model.transformer.transformer.layers.", e.Message);
    }

    [Fact]
    public void VocabularyMismatchWithTheAdaptersConfigIsRefused()
    {
        string d = CopyTo("doctorglm_adapter", _dir);
        File.WriteAllText(Path.Combine(d, "config.json"), """{"vocab_size": 150528, "num_layers": 2, "hidden_size": 4}""");
        using (DoctorGlmAdapter.Load(d, Tiny with { VocabSize = 150528 })) { }
        var e = Assert.Throws<InvalidDataException>(() => DoctorGlmAdapter.Load(d, Tiny with { VocabSize = 130528 }));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("vocab_size", e.Message);
    }

    [Fact]
    public void PTuningLoadsExactlyWithAndWithoutProjection()
    {
        using var expected = Expected();
        using (var p = PTuningCheckpoint.Load(PathOf("ptuning"), Tiny with { VocabSize = 5 }))
        {
            Assert.False(p.PrefixProjection);
            Assert.Equal(3, p.PreSeqLen);
            Assert.Equal(16, p.Width);
            AssertBitExact(expected, "ptuning/transformer.prefix_encoder.embedding.weight", p.Embedding);
        }
        using (var p = PTuningCheckpoint.Load(PathOf("ptuning_projection/pytorch_model.bin"), Tiny))
        {
            Assert.True(p.PrefixProjection);
            Assert.Equal(16, p.Width);
            AssertBitExact(expected, "ptuning_projection/transformer.prefix_encoder.embedding.weight", p.Embedding);
            AssertBitExact(expected, "ptuning_projection/transformer.prefix_encoder.trans.0.weight", p.Trans0Weight!);
            AssertBitExact(expected, "ptuning_projection/transformer.prefix_encoder.trans.0.bias", p.Trans0Bias!);
            AssertBitExact(expected, "ptuning_projection/transformer.prefix_encoder.trans.2.weight", p.Trans2Weight!);
            AssertBitExact(expected, "ptuning_projection/transformer.prefix_encoder.trans.2.bias", p.Trans2Bias!);

            string saved = Path.Combine(_dir, "prefix.safetensors");
            PTuningCheckpoint.Save(saved, p);
            using var back = PTuningCheckpoint.Load(saved, Tiny);
            Assert.Equal(p.Trans2Weight!.ToBytes(), back.Trans2Weight!.ToBytes());
            Assert.Equal(p.Embedding.ToBytes(), back.Embedding.ToBytes());
        }
    }

    [Fact]
    public void PTuningMismatchesAreRefusedNamingFileAndKey()
    {
        // Checkpoint alone (no config.json): the width 2·L·H must match the model.
        string d = Path.Combine(_dir, "alone");
        Directory.CreateDirectory(d);
        File.Copy(PathOf("ptuning/pytorch_model.bin"), Path.Combine(d, "pytorch_model.bin"));
        var e = Assert.Throws<InvalidDataException>(() => PTuningCheckpoint.Load(d, new AdapterExpectations(NumLayers: 28, HiddenSize: 4)));
        Assert.Contains("'transformer.prefix_encoder.embedding.weight'", e.Message);
        Assert.Contains("pytorch_model.bin", e.Message);

        // The folder's config.json says another vocabulary / layer count.
        e = Assert.Throws<InvalidDataException>(() => PTuningCheckpoint.Load(PathOf("ptuning"), Tiny with { VocabSize = 130528 }));
        Assert.Contains("vocab_size", e.Message);

        // config.json says prefix_projection but the file has no projection weights.
        string p = CopyTo("ptuning", _dir);
        EditJson(Path.Combine(p, "config.json"), j => j["prefix_projection"] = true);
        e = Assert.Throws<InvalidDataException>(() => PTuningCheckpoint.Load(p));
        Assert.Contains("prefix_projection", e.Message);

        // pre_seq_len disagrees with the stored rows.
        string n = CopyTo("ptuning_projection", Directory.CreateDirectory(Path.Combine(_dir, "pt")).FullName);
        EditJson(Path.Combine(n, "config.json"), j => j["pre_seq_len"] = 128);
        e = Assert.Throws<InvalidDataException>(() => PTuningCheckpoint.Load(n));
        Assert.Contains("'transformer.prefix_encoder.embedding.weight'", e.Message);

        // A base-model tensor in a P-Tuning checkpoint is not a prefix encoder weight.
        e = Assert.Throws<InvalidDataException>(() => PTuningCheckpoint.Load(PathOf("single.safetensors")));
        Assert.Contains("unexpected key", e.Message);
    }
}
