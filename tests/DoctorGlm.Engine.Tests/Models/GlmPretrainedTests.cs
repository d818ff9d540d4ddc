using System.Text.Json;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.IO.Adapters;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// The tiny model saved as torch / HF / PEFT / DoctorGLM / the Trainer save it (make_model_fixtures.py's folders)
/// loaded through <see cref="GlmModel.FromPretrained"/>, <see cref="GlmModel.LoadLoraAdapter"/> and
/// <see cref="GlmModel.LoadPrefixEncoder"/> against the PyTorch reference's logits, losses and gradients; adapter
/// saving in PEFT's exact form; broken folders named in errors, with nothing half-loaded.
/// </summary>
public sealed class GlmPretrainedTests(ITestOutputHelper output) : IDisposable
{
    private const double LogitsTol = 1e-4, LossTol = 1e-5, GradTol = 1e-3;

    private readonly string _dir = Directory.CreateTempSubdirectory("glm-pretrained-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Folder(string name) => Path.Combine(ModelFixture.Dir, name);

    private static GlmInputs LogitsBatch(SafeTensorsFile f, GlmConfig config)
    {
        var flat = f.Load("sequences").ToIntArray();
        var lengths = f.Load("lengths").ToIntArray();
        var seqs = new int[lengths.Length][];
        for (int b = 0, o = 0; b < lengths.Length; o += lengths[b], b++) seqs[b] = flat[o..(o + lengths[b])];
        return GlmInputs.Build(seqs, config);
    }

    private static float[] Logits(GlmModel model)
    {
        using var f = ModelFixture.Open("logits");
        using var inputs = LogitsBatch(f, model.Config);
        using (GradMode.NoGrad()) return model.Forward(inputs).ToFloatArray();
    }

    private static float TrainLoss(GlmModel model)
    {
        using var batch = ModelFixture.TrainBatch(model.Config);
        using (GradMode.NoGrad()) return model.Loss(batch).Item();
    }

    private static float[] Snapshot(GlmModel m) => m.BaseParameters().SelectMany(kv => kv.Value.ToFloatArray()).ToArray();

    /// <summary>A writable copy of a fixture folder.</summary>
    private string Copy(string name)
    {
        string dst = Path.Combine(_dir, name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(Folder(name))) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    // ------------------------------------------------------------------ base model folders

    public static TheoryData<string> ModelFolders => new() { "hf_bin", "hf_bin_sharded", "hf_safetensors_sharded" };

    [Theory]
    [MemberData(nameof(ModelFolders))]
    public void FromPretrained_gives_the_reference_logits(string folder)
    {
        using var scope = TensorScope.Begin();
        using var model = GlmModel.FromPretrained(Folder(folder));
        Assert.Equal(ModelFixture.Config, model.Config);
        Assert.Empty(model.TrainableParameters());
        using var f = ModelFixture.Open("logits");
        double err = ModelFixture.MaxAbs(f.Floats("logits"), Logits(model));
        output.WriteLine($"{folder}: logits max |err| = {err:E3}");
        Assert.True(err < LogitsTol, $"{folder}: logits max |err| {err:E3}");
        // fp32 all the way: every weight is bit-identical to the fixture's.
        using var w = ModelFixture.Open("weights");
        foreach (var (k, t) in model.BaseParameters()) Assert.Equal(w.Floats(k), t.ToFloatArray());
    }

    [Fact]
    public void The_torch_bin_stores_the_tied_head_as_one_shared_storage_and_it_loads_once()
    {
        using var src = CheckpointReader.Open(Folder("hf_bin"));
        Assert.True(src.Contains(GlmModel.LmHeadKey));
        // One storage per tensor except the head, which shares the embedding's (as a tied HF model saves it).
        using var zip = System.IO.Compression.ZipFile.OpenRead(Path.Combine(Folder("hf_bin"), "pytorch_model.bin"));
        int storages = zip.Entries.Count(e => e.FullName.Contains("/data/", StringComparison.Ordinal));
        Assert.Equal(src.Tensors.Count - 1, storages);
        using var model = GlmModel.FromPretrained(Folder("hf_bin"), trainable: true);
        Assert.DoesNotContain(model.NamedParameters(), kv => kv.Key == GlmModel.LmHeadKey);
        Assert.All(model.BaseParameters(), kv => Assert.True(kv.Value.RequiresGrad));
    }

    // ------------------------------------------------------------------ adapters

    [Theory]
    [InlineData("peft_adapter", "lora_peft", LoraAdapterFormat.Peft)]
    [InlineData("doctorglm_adapter", "lora_grouped", LoraAdapterFormat.DoctorGlm)]
    public void A_lora_folder_attaches_and_gives_the_reference_loss_and_gradients(string folder, string fixture, LoraAdapterFormat format)
    {
        Assert.Equal(format, LoraAdapters.Detect(Folder(folder)));
        using var f = ModelFixture.Open(fixture);
        using var scope = TensorScope.Begin();
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        var lora = model.LoadLoraAdapter(Folder(folder), trainable: true);
        Assert.Same(lora, model.Lora);
        Assert.Equal((int)f.Meta("r"), lora.Settings.Rank);
        Assert.Equal((float)f.Meta("alpha"), lora.Settings.Alpha);
        Assert.Equal(f.Metadata.ContainsKey("enable_lora") ? 3 : 1, lora.Groups.Count);
        for (int i = 0; i < model.Config.NumLayers; i++)
        {
            Assert.Equal(f.Floats($"lora_a.{i}"), lora.Layers[i].A.ToFloatArray());
            Assert.Equal(f.Floats($"lora_b.{i}"), lora.Layers[i].B.ToFloatArray());
        }
        Assert.Equal(2 * model.Config.NumLayers, model.TrainableParameters().Count); // base frozen, A and B train

        using var batch = ModelFixture.TrainBatch(model.Config);
        var loss = model.Loss(batch);
        double lossErr = Math.Abs(loss.Item() - f.Floats("loss")[0]);
        loss.Backward();
        double worst = 0;
        for (int i = 0; i < model.Config.NumLayers; i++)
        {
            worst = Math.Max(worst, ModelFixture.RelErr(f.Floats($"grad_a.{i}"), lora.Layers[i].A.Grad!.ToFloatArray()));
            worst = Math.Max(worst, ModelFixture.RelErr(f.Floats($"grad_b.{i}"), lora.Layers[i].B.Grad!.ToFloatArray()));
        }
        output.WriteLine($"{folder}: loss |err| {lossErr:E3}, worst LoRA gradient relative error {worst:E3}");
        Assert.True(lossErr < LossTol, $"{folder}: loss |err| {lossErr:E3}");
        Assert.True(worst < GradTol, $"{folder}: LoRA gradient relative error {worst:E3}");
    }

    [Fact]
    public void A_lora_folder_loads_frozen_by_default_and_a_second_one_is_refused()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        model.LoadLoraAdapter(Folder("peft_adapter"));
        Assert.Empty(model.TrainableParameters());
        var e = Assert.Throws<InvalidOperationException>(() => model.LoadLoraAdapter(Folder("doctorglm_adapter")));
        Assert.Contains("already attached", e.Message);
    }

    [Fact]
    public void A_ptuning_checkpoint_attaches_and_gives_the_reference_loss_and_gradient()
    {
        using var f = ModelFixture.Open("ptuning");
        using var scope = TensorScope.Begin();
        using var model = GlmModel.FromPretrained(Folder("hf_safetensors_sharded"));
        var encoder = model.LoadPrefixEncoder(Folder("ptuning_checkpoint"), trainable: true);
        Assert.Same(encoder, model.Prefix);
        Assert.Equal((int)f.Meta("pre_seq_len"), encoder.Length);
        Assert.False(encoder.Projection);
        using var batch = ModelFixture.TrainBatch(model.Config);
        var loss = model.Loss(batch);
        double lossErr = Math.Abs(loss.Item() - f.Floats("loss")[0]);
        loss.Backward();
        var (key, p) = Assert.Single(model.TrainableParameters());
        double gradErr = ModelFixture.RelErr(f.Floats("grad." + key), p.Grad!.ToFloatArray());
        output.WriteLine($"ptuning_checkpoint: loss |err| {lossErr:E3}, gradient relative error {gradErr:E3}");
        Assert.True(lossErr < LossTol, $"loss |err| {lossErr:E3}");
        Assert.True(gradErr < GradTol, $"gradient relative error {gradErr:E3}");
    }

    [Fact]
    public void SavePrefixEncoder_round_trips_through_a_folder_and_a_file()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        model.LoadPrefixEncoder(Path.Combine(Folder("ptuning_checkpoint"), "pytorch_model.bin"));
        float want = TrainLoss(model);
        string folder = Path.Combine(_dir, "prefix");
        Directory.CreateDirectory(folder);
        model.SavePrefixEncoder(folder);
        string file = Path.Combine(_dir, "prefix.safetensors");
        model.SavePrefixEncoder(file);
        using (var st = SafeTensorsFile.Open(file))
            Assert.Equal(["transformer.prefix_encoder.embedding.weight"], st.Entries.Select(e => e.Name));
        foreach (var path in new[] { folder, file })
        {
            using var again = GlmModel.FromPretrained(Folder("hf_bin"));
            again.LoadPrefixEncoder(path);
            Assert.Equal(want, TrainLoss(again));
        }
    }

    [Fact]
    public void A_prefix_length_that_disagrees_with_the_model_config_is_refused()
    {
        var config = ModelFixture.Config with { PreSeqLen = 5 };
        using var w = ModelFixture.Open("weights");
        using var model = GlmModel.Load(config, w);
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPrefixEncoder(Folder("ptuning_checkpoint")));
        Assert.Contains("pre_seq_len 5", e.Message);
        Assert.Null(model.Prefix);
    }

    // ------------------------------------------------------------------ saving LoRA in PEFT's form

    [Fact]
    public void SaveLoraAdapter_writes_peft_keys_shapes_and_config_and_reloads_to_identical_outputs()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        model.LoadLoraAdapter(Folder("peft_adapter"));
        var logits = Logits(model);
        string saved = Path.Combine(_dir, "saved_peft");
        model.SaveLoraAdapter(saved);

        // Keys, shapes and values exactly those of the PEFT-written adapter_model.bin.
        using (var peft = CheckpointReader.Open(Path.Combine(Folder("peft_adapter"), "adapter_model.bin")))
        using (var ours = SafeTensorsFile.Open(Path.Combine(saved, PeftAdapter.WeightsFileName)))
        {
            Assert.Equal(peft.Tensors.Select(t => t.Name).Order(), ours.Tensors.Select(t => t.Name).Order());
            foreach (var t in peft.Tensors)
            {
                Assert.Equal(t.Shape, ours.Info(t.Name).Shape);
                Assert.Equal(DType.F32, ours.Info(t.Name).DType);
                using var a = Tensor.Empty(t.Shape);
                peft.ReadInto(t.Name, a);
                Assert.Equal(a.ToFloatArray(), ours.Floats(t.Name));
            }
        }
        AssertPeftConfig(Path.Combine(Folder("peft_adapter"), "adapter_config.json"), Path.Combine(saved, "adapter_config.json"));

        Assert.Equal(LoraAdapterFormat.Peft, LoraAdapters.Detect(saved));
        using var again = GlmModel.FromPretrained(Folder("hf_bin"));
        again.LoadLoraAdapter(saved);
        Assert.Equal(logits, Logits(again));
    }

    /// <summary>Every field PEFT 0.3 wrote is written with the same value (extra fields are fine: PEFT ignores unknown ones).</summary>
    private static void AssertPeftConfig(string peftPath, string oursPath)
    {
        using var peft = JsonDocument.Parse(File.ReadAllText(peftPath));
        using var ours = JsonDocument.Parse(File.ReadAllText(oursPath));
        foreach (var p in peft.RootElement.EnumerateObject())
        {
            Assert.True(ours.RootElement.TryGetProperty(p.Name, out var v), $"{oursPath}: field '{p.Name}' missing");
            bool same = p.Value.ValueKind == JsonValueKind.Number
                ? v.ValueKind == JsonValueKind.Number && p.Value.GetDouble() == v.GetDouble()
                : p.Value.GetRawText().Replace(" ", "").Replace("\n", "") == v.GetRawText().Replace(" ", "").Replace("\n", "").Replace("\r", "");
            Assert.True(same, $"{oursPath}: '{p.Name}' is {v.GetRawText()}, PEFT wrote {p.Value.GetRawText()}");
        }
    }

    [Fact]
    public void SaveLoraAdapter_writes_a_grouped_adapter_as_the_equivalent_plain_peft_lora()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        model.LoadLoraAdapter(Folder("doctorglm_adapter"));
        var logits = Logits(model);
        float loss = TrainLoss(model);
        string saved = Path.Combine(_dir, "saved_grouped");
        model.SaveLoraAdapter(saved);

        var cfg = PeftAdapter.ReadConfig(saved);
        Assert.Equal(4, cfg.R);             // r 2 × 2 enabled blocks
        Assert.Equal(12f, cfg.LoraAlpha);   // alpha 6 × 2: scaling stays 3
        Assert.Null(cfg.EnableLora);
        using (var st = SafeTensorsFile.Open(Path.Combine(saved, PeftAdapter.WeightsFileName)))
        {
            Assert.Equal(new Shape(4, 64), st.Info(PeftAdapter.KeyA(0)).Shape);
            Assert.Equal(new Shape(192, 4), st.Info(PeftAdapter.KeyB(1)).Shape);
            // Block-diagonal: the middle block (rows 64..127, not enabled) is zero; block 0 uses columns 0..1 only.
            var b = st.Floats(PeftAdapter.KeyB(0));
            for (int row = 64; row < 128; row++) for (int c = 0; c < 4; c++) Assert.Equal(0f, b[row * 4 + c]);
            for (int row = 0; row < 64; row++) { Assert.Equal(0f, b[row * 4 + 2]); Assert.Equal(0f, b[row * 4 + 3]); }
            for (int row = 128; row < 192; row++) { Assert.Equal(0f, b[row * 4]); Assert.Equal(0f, b[row * 4 + 1]); }
        }

        using var again = GlmModel.FromPretrained(Folder("hf_bin"));
        var lora = again.LoadLoraAdapter(saved);
        Assert.Equal(LoraGroups.Full.Count, lora.Groups.Count);
        double err = ModelFixture.MaxAbs(logits, Logits(again));
        output.WriteLine($"grouped → plain PEFT: logits max |diff| {err:E3}, loss diff {Math.Abs(loss - TrainLoss(again)):E3}");
        Assert.True(err < 1e-5, $"logits max |diff| {err:E3}");
        Assert.True(Math.Abs(loss - TrainLoss(again)) < 1e-6);
    }

    [Fact]
    public void SaveLoraAdapter_without_an_adapter_is_refused()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        Assert.Throws<InvalidOperationException>(() => model.SaveLoraAdapter(Path.Combine(_dir, "none")));
        Assert.Throws<InvalidOperationException>(() => model.SavePrefixEncoder(Path.Combine(_dir, "none.safetensors")));
    }

    [Fact]
    public void A_deep_training_config_without_its_marker_fields_is_told_apart_by_its_keys()
    {
        string dir = Copy("doctorglm_adapter");
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), """{ "r": 2, "lora_alpha": 6, "target_modules": ["query_key_value"] }""");
        Assert.Equal(LoraAdapterFormat.DoctorGlm, LoraAdapters.Detect(dir));
        Assert.Equal(LoraAdapterFormat.Peft, LoraAdapters.Detect(Fixture.Dir("io/peft020_adapter")));
        Assert.Equal(LoraAdapterFormat.DoctorGlm, LoraAdapters.Detect(Fixture.Dir("io/doctorglm_adapter")));
        File.Delete(Path.Combine(dir, "adapter_config.json"));
        var e = Assert.Throws<FileNotFoundException>(() => LoraAdapters.Detect(dir));
        Assert.Contains("adapter_config.json", e.Message);
    }

    [Fact]
    public void An_adapter_for_another_model_size_is_refused_and_nothing_is_attached()
    {
        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        // The io fixture's adapter is for H = 4.
        var e = Assert.Throws<InvalidDataException>(() => model.LoadLoraAdapter(Fixture.Dir("io/peft_adapter")));
        Assert.Contains("lora_A.weight", e.Message);
        Assert.Contains("adapter_model.bin", e.Message);
        Assert.Null(model.Lora);
        var p = Assert.Throws<InvalidDataException>(() => model.LoadPrefixEncoder(Fixture.Dir("io/ptuning")));
        Assert.Contains("config.json", p.Message);
        Assert.Null(model.Prefix);
    }

    // ------------------------------------------------------------------ broken folders

    [Fact]
    public void A_folder_without_config_or_weights_names_what_is_missing()
    {
        var e = Assert.Throws<FileNotFoundException>(() => GlmModel.FromPretrained(Folder("peft_adapter")));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("LoadLoraAdapter", e.Message);
        string onlyConfig = Path.Combine(_dir, "only-config");
        Directory.CreateDirectory(onlyConfig);
        File.Copy(ModelFixture.ConfigPath, Path.Combine(onlyConfig, "config.json"));
        var w = Assert.Throws<FileNotFoundException>(() => GlmModel.FromPretrained(onlyConfig));
        Assert.Contains("pytorch_model.bin", w.Message);
        Assert.Contains("model.safetensors", w.Message);
        Assert.Throws<DirectoryNotFoundException>(() => GlmModel.FromPretrained(Path.Combine(_dir, "nowhere")));
        var p = Assert.Throws<InvalidDataException>(() => GlmModel.FromPretrained(Folder("ptuning_checkpoint")));
        Assert.Contains("LoadPrefixEncoder", p.Message);
    }

    /// <summary>FromPretrained on <paramref name="folder"/> throws mentioning each of <paramref name="mentions"/>; a
    /// model loaded earlier keeps its weights (and still works) when LoadWeights fails on it.</summary>
    private void AssertBroken(string folder, params string[] mentions)
    {
        var e = Assert.Throws<InvalidDataException>(() => GlmModel.FromPretrained(folder));
        output.WriteLine(e.Message);
        foreach (var m in mentions) Assert.Contains(m, e.Message);

        using var model = GlmModel.FromPretrained(Folder("hf_bin"));
        var before = Snapshot(model);
        var logits = Logits(model);
        var again = Assert.Throws<InvalidDataException>(() => model.LoadWeights(folder));
        Assert.Equal(e.Message, again.Message);
        Assert.Equal(before, Snapshot(model));
        Assert.All(model.BaseParameters(), kv => Assert.False(kv.Value.IsDisposed));
        Assert.Equal(logits, Logits(model));
    }

    [Fact]
    public void A_missing_shard_is_named_with_a_key_it_holds()
    {
        string dir = Copy("hf_bin_sharded");
        File.Delete(Path.Combine(dir, "pytorch_model-00002-of-00002.bin"));
        AssertBroken(dir, "pytorch_model-00002-of-00002.bin", "(holding 'lm_head.weight')", "does not exist");
    }

    [Theory]
    [InlineData("hf_bin_sharded", "pytorch_model-00001-of-00002.bin")]
    [InlineData("hf_safetensors_sharded", "model-00002-of-00002.safetensors")]
    public void A_truncated_shard_is_named_with_a_key_it_holds(string folder, string shard)
    {
        string dir = Copy(folder);
        string path = Path.Combine(dir, shard);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length * 2 / 3)]);
        AssertBroken(dir, shard, "'transformer.", "truncated");
    }

    [Fact]
    public void A_wrong_shape_in_a_shard_is_named_with_the_shard_and_key()
    {
        string dir = Copy("hf_safetensors_sharded");
        string shard = Path.Combine(dir, "model-00002-of-00002.safetensors");
        const string key = "transformer.layers.1.mlp.dense_4h_to_h.weight";
        var list = new List<KeyValuePair<string, Tensor>>();
        using (var src = SafeTensorsFile.Open(shard))
            foreach (var entry in src.Entries.OrderBy(x => x.Begin))
                list.Add(new(entry.Name, entry.Name == key ? Tensor.Zeros(new Shape(64, 255)) : src.Load(entry.Name)));
        SafeTensorsFile.Save(shard, list);
        foreach (var kv in list) kv.Value.Dispose();
        AssertBroken(dir, "model-00002-of-00002.safetensors", $"'{key}'", "[64, 255]", "[64, 256]");
    }
}
