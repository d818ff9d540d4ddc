using System.Buffers.Binary;
using System.IO.Compression;
using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.IO.Adapters;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Optim;
using DoctorGlm.Engine.Training;

namespace DoctorGlm.Engine.Tests.Training;

/// <summary>The training loop: resume bit-identity, cancellation, checkpoints, exports and the options.</summary>
public sealed class TrainerTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dglm-train-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private static readonly GlmConfig Config = GlmConfig.Tiny(vocabSize: 64, hiddenSize: 32, numLayers: 2, numHeads: 2);

    /// <summary>Synthetic §5.1 samples: a prompt of random ids, an answer that depends on it (so the loss can fall).</summary>
    private static List<ChatGlmTrainSample> Samples(int count, ulong seed)
    {
        var rng = new Random((int)seed);
        var builder = new ChatGlmSampleBuilder(s => s.Split(' ').Select(int.Parse).ToArray(), Config.GMaskTokenId, Config.BosTokenId,
            Config.EosTokenId, Config.PadTokenId, maxSourceLength: 8, maxTargetLength: 10);
        var list = new List<ChatGlmTrainSample>();
        for (int i = 0; i < count; i++)
        {
            var q = Enumerable.Range(0, rng.Next(2, 7)).Select(_ => rng.Next(10, 40)).ToArray();
            var a = q.Reverse().Select(x => x + 5).Take(rng.Next(2, 8)).ToArray();
            list.Add(builder.BuildTrain(new DialogueExample(string.Join(' ', q), string.Join(' ', a), [], $"syn:{i}")));
        }
        return list;
    }

    private static TrainerOptions Options(TrainingMethod method = TrainingMethod.Lora, int steps = 6) => new()
    {
        Method = method, LoraRank = 4, LoraAlpha = 8, LoraDropout = 0.1f, PreSeqLen = 3, MaxSourceLength = 8, MaxTargetLength = 10,
        LearningRate = 1e-2, WarmupSteps = 2, BatchSize = 3, GradientAccumulation = 2, MaxSteps = steps, Seed = 7, EvalBatchSize = 4,
    };

    private static GlmModel Model() => GlmModel.CreateRandom(Config, new RandomGenerator(3));

    private TrainingResult Train(string dir, TrainerOptions o, bool resume = false, int cancelAfter = -1, int trainCount = 10,
        DType weightDType = DType.F32, bool roundOnly = false, int quantizeBits = 0)
    {
        using var model = Model();
        if (quantizeBits != 0)
        {
            model.SetBaseTrainable(false);
            model.Quantize(quantizeBits);
        }
        if (weightDType != DType.F32)
        {
            // A frozen base in 16 bits; roundOnly keeps the same rounded values in fp32 storage (the reference).
            model.SetBaseTrainable(false);
            model.ConvertWeights(weightDType);
            if (roundOnly) model.ConvertWeights(DType.F32);
        }
        using var trainer = new Trainer(model, o, Samples(trainCount, 1), Samples(20, 2), dir);
        using var cts = new CancellationTokenSource();
        if (cancelAfter > 0) trainer.Progress = p => { if (p.Step == cancelAfter) cts.Cancel(); };
        return trainer.Run(resume, cts.Token);
    }

    [Theory]
    [InlineData(TrainingMethod.Lora, "adapter_model.safetensors")]
    [InlineData(TrainingMethod.PTuning, ModelExport.PrefixFileName)]
    [InlineData(TrainingMethod.Full, ModelExport.ModelFileName)]
    public void A_run_cancelled_and_resumed_ends_byte_identical_to_an_uninterrupted_one(TrainingMethod method, string file)
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        var whole = Train(a, Options(method));
        Assert.False(whole.Cancelled);
        Assert.Equal(6, whole.StepsDone);

        var first = Train(b, Options(method), cancelAfter: 3);
        Assert.True(first.Cancelled);
        Assert.Equal(3, first.StepsDone);
        Assert.NotNull(TrainingCheckpoint.FindLatest(b));
        Assert.False(File.Exists(Path.Combine(b, file))); // nothing exported from an unfinished run

        var second = Train(b, Options(method), resume: true);
        Assert.False(second.Cancelled);
        Assert.NotNull(second.ResumedFrom);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, file)), File.ReadAllBytes(Path.Combine(b, file)));
        Assert.Equal(File.ReadAllText(Path.Combine(a, "loss.csv")), File.ReadAllText(Path.Combine(b, "loss.csv")));
        Assert.Equal(whole.Evals, second.Evals);
    }

    /// <summary>
    /// --eval-steps: the held-out loss every N steps too, into the result, eval.csv and the progress reports; the
    /// training is bit-identical to a run without it (evaluation runs without dropout and restores the RNG), and a run
    /// cancelled and resumed between two evaluations ends with the same evaluations as an uninterrupted one.
    /// </summary>
    [Fact]
    public void Evaluating_every_few_steps_records_the_curve_and_changes_no_training_step()
    {
        string plain = Path.Combine(_dir, "plain"), every = Path.Combine(_dir, "every"), resumed = Path.Combine(_dir, "resumed");
        var o = Options(TrainingMethod.Lora, steps: 7);
        var without = Train(plain, o);
        var progress = new List<EvalRecord?>();
        TrainingResult with;
        using (var model = Model())
        using (var trainer = new Trainer(model, o with { EvalSteps = 3 }, Samples(10, 1), Samples(20, 2), every))
        {
            trainer.Progress = p => progress.Add(p.LastEval);
            with = trainer.Run(cancellationToken: TestContext.Current.CancellationToken);
        }
        Assert.Equal([0, 3, 6, 7], with.Evals.Select(e => e.Step));
        Assert.Equal(without.Evals[0], with.Evals[0]);
        Assert.Equal(without.Evals[^1], with.Evals[^1]);
        Assert.Equal(File.ReadAllText(Path.Combine(plain, "loss.csv")), File.ReadAllText(Path.Combine(every, "loss.csv")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(plain, "adapter_model.safetensors")), File.ReadAllBytes(Path.Combine(every, "adapter_model.safetensors")));
        Assert.Equal(["step,eval_loss", .. with.Evals.Select(e => $"{e.Step},{e.Loss.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}")],
            File.ReadAllLines(Path.Combine(every, "eval.csv")));
        // Each report carries the latest evaluation: before training for steps 1–2, step 3's from 3 on, step 6's from 6 on.
        Assert.Equal([0, 0, 3, 3, 3, 6, 6], progress.Select(e => e!.Value.Step));
        Assert.Contains("\"eval_steps\": 3", File.ReadAllText(Path.Combine(every, "trainer_options.json")));

        Train(resumed, o with { EvalSteps = 3, SaveSteps = 2 }, cancelAfter: 4);
        var second = Train(resumed, o with { EvalSteps = 3, SaveSteps = 2 }, resume: true);
        Assert.Equal(with.Evals, second.Evals);
        Assert.Throws<ArgumentException>(() => (o with { EvalSteps = -1 }).Validate());
    }

    /// <summary>
    /// --save-best: OUTPUT/best holds the adapter of the lowest held-out loss, and best.json its step and loss; loaded
    /// into a fresh model, that adapter gives exactly the recorded loss again.
    /// </summary>
    [Fact]
    public void The_best_evaluation_is_exported_and_reproduces_its_loss()
    {
        // A learning rate high enough that the held-out loss does not fall all the way: the best is not always the last.
        var o = Options(TrainingMethod.Lora, steps: 12) with { EvalSteps = 2, SaveBest = true, LearningRate = 0.3 };
        TrainingResult r;
        string bestDir;
        using (var model = Model())
        using (var trainer = new Trainer(model, o, Samples(10, 1), Samples(20, 2), _dir))
        {
            r = trainer.Run(cancellationToken: TestContext.Current.CancellationToken);
            bestDir = trainer.BestDir;
        }
        var best = r.Evals.MinBy(e => e.Loss);
        TestContext.Current.TestOutputHelper?.WriteLine($"evals {string.Join(", ", r.Evals.Select(e => $"{e.Step}:{e.Loss:F4}"))}; best at {best.Step}");
        using (var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(bestDir, "best.json"))))
        {
            Assert.Equal(best.Step, doc.RootElement.GetProperty("step").GetInt32());
            Assert.Equal(best.Loss, doc.RootElement.GetProperty("eval_loss").GetDouble());
        }
        using var again = Model();
        again.LoadLoraAdapter(bestDir);
        again.Training = false;
        using var evaluator = new Trainer(again, o, Samples(10, 1), Samples(20, 2), Path.Combine(_dir, "again"));
        Assert.Equal(best.Loss, evaluator.Evaluate());
        Assert.Contains("\"save_best\": true", File.ReadAllText(Path.Combine(_dir, "trainer_options.json")));
    }

    [Fact]
    public void Training_lowers_the_eval_loss_and_writes_the_csv_per_step()
    {
        var r = Train(_dir, Options(TrainingMethod.Full, steps: 30) with { LearningRate = 1e-2, GradientAccumulation = 1, BatchSize = 8 }, trainCount: 400);
        Assert.Equal(0, r.Evals[0].Step);
        Assert.Equal(30, r.Evals[^1].Step);
        Assert.True(r.Evals[^1].Loss < r.Evals[0].Loss - 0.3, $"eval loss {r.Evals[0].Loss} → {r.Evals[^1].Loss}");
        var log = LossLog.Read(Path.Combine(_dir, "loss.csv"));
        Assert.Equal(Enumerable.Range(1, 30), log.Select(x => x.Step));
        Assert.Equal(r.History.Select(x => x.Loss), log.Select(x => x.Loss));
        Assert.Equal(0.0, log[0].LearningRate); // warm-up starts at 0
        Assert.Equal(1e-2 * 0.5, log[1].LearningRate, 12);
        Assert.All(log, x => Assert.True(x.Tokens > 0 && double.IsFinite(x.GradNorm)));
        var text = File.ReadAllLines(Path.Combine(_dir, "loss.csv"));
        Assert.Equal(LossLog.Header, text[0]);
        Assert.Equal(31, text.Length);
    }

    [Fact]
    public void The_lora_adapter_loads_back_with_peft_keys_and_shapes()
    {
        Train(_dir, Options(TrainingMethod.Lora));
        using (var st = SafeTensorsFile.Open(Path.Combine(_dir, "adapter_model.safetensors")))
            Assert.Equal(Enumerable.Range(0, 2).SelectMany(i => new[] { PeftAdapter.KeyA(i), PeftAdapter.KeyB(i) }).Order(), st.Entries.Select(e => e.Name).Order());
        using var data = PeftAdapter.Load(_dir, new AdapterExpectations(Config.NumLayers, Config.HiddenSize));
        Assert.Equal(4, data.Rank);
        Assert.Equal(8f, data.Alpha);
        Assert.False(data.Grouped);
        Assert.Equal(new Shape(4, 32), data.Layers[1].A.Shape);
        Assert.Equal(new Shape(96, 4), data.Layers[1].B.Shape);
        Assert.Contains(data.Layers[0].B.ToFloatArray(), v => v != 0); // B moved away from its zero init
    }

    [Fact]
    public void The_grouped_adapter_is_written_in_doctorglm_form_and_loads_back()
    {
        Train(_dir, Options(TrainingMethod.Lora) with { LoraGrouped = true });
        using var data = DoctorGlmAdapter.Load(_dir, new AdapterExpectations(Config.NumLayers, Config.HiddenSize));
        Assert.True(data.Grouped);
        Assert.Equal([true, false, true], data.EnableLora);
        Assert.Equal(new Shape(64, 4), data.Layers[0].B.Shape);
    }

    [Fact]
    public void The_full_model_export_loads_back_with_its_config()
    {
        Train(_dir, Options(TrainingMethod.Full, steps: 2) with { GradientAccumulation = 1 });
        var cfg = GlmConfig.FromJson(Path.Combine(_dir, ModelExport.ConfigFileName));
        Assert.Equal(Config with { TorchDType = "float32", UseCache = Config.UseCache }, cfg);
        using var src = CheckpointReader.Open(_dir);
        using var model = GlmModel.Load(cfg, src);
        Assert.Equal(Config.ParameterCount, model.BaseParameters().Sum(kv => kv.Value.NumElements));
    }

    [Fact]
    public void A_failed_checkpoint_save_leaves_no_partial_checkpoint_and_keeps_the_previous_one()
    {
        using var p = Tensor.Full(new Shape(3), 1f);
        p.RequiresGrad = true;
        var trainable = new List<KeyValuePair<string, Tensor>> { new("w", p) };
        var opt = new AdamW([("w", p)]);
        var state = new TrainerState(1, 4, "full", 7, 10, 2, 1, (1, 2), [new StepRecord(1, 2.5, 1e-3, 0.5, 40)], [new EvalRecord(0, 3.0)]);
        string good = TrainingCheckpoint.Save(_dir, trainable, opt, state);
        Assert.Equal(good, TrainingCheckpoint.FindLatest(_dir));

        opt.Dispose(); // SaveState now throws, after the weights file was written
        Assert.Throws<ObjectDisposedException>(() => TrainingCheckpoint.Save(_dir, trainable, opt, state with { Step = 2 }));
        Assert.Equal(good, TrainingCheckpoint.FindLatest(_dir));
        Assert.Equal([good], Directory.GetDirectories(Path.Combine(_dir, TrainingCheckpoint.FolderName)));
        Assert.Equal(state.History, TrainingCheckpoint.ReadState(good).History);
        Assert.Equal(state.Rng, TrainingCheckpoint.ReadState(good).Rng);
    }

    [Theory]
    [InlineData(TrainingMethod.Lora)]
    [InlineData(TrainingMethod.PTuning)]
    public void A_bf16_base_trains_exactly_as_an_fp32_base_holding_the_rounded_weights(TrainingMethod method)
    {
        string a = Path.Combine(_dir, "bf16"), b = Path.Combine(_dir, "rounded");
        var half = Train(a, Options(method), weightDType: DType.BF16);
        var rounded = Train(b, Options(method), weightDType: DType.BF16, roundOnly: true);
        Assert.Equal(rounded.History.Select(h => h.Loss), half.History.Select(h => h.Loss));
        string file = method == TrainingMethod.Lora ? "adapter_model.safetensors" : ModelExport.PrefixFileName;
        Assert.Equal(File.ReadAllBytes(Path.Combine(b, file)), File.ReadAllBytes(Path.Combine(a, file)));
        Assert.Contains("\"weight_dtype\": \"bfloat16\"", File.ReadAllText(Path.Combine(a, "trainer_options.json")));
        Assert.Contains("\"weight_dtype\": \"float32\"", File.ReadAllText(Path.Combine(b, "trainer_options.json")));
        // The rounding is real: an fp32 base gives other losses.
        var full = Train(Path.Combine(_dir, "fp32"), Options(method));
        Assert.NotEqual(full.History.Select(h => h.Loss), half.History.Select(h => h.Loss));
    }

    [Fact]
    public void Resume_refuses_a_checkpoint_of_another_weight_dtype()
    {
        Train(_dir, Options(), cancelAfter: 2, weightDType: DType.BF16);
        var e = Assert.Throws<InvalidDataException>(() => Train(_dir, Options(), resume: true));
        Assert.Contains("weight dtype is bfloat16, this run's float32", e.Message);
        var ok = Train(_dir, Options(), resume: true, weightDType: DType.BF16);
        Assert.NotNull(ok.ResumedFrom);
    }

    [Theory]
    [InlineData(TrainingMethod.Lora, "adapter_model.safetensors")]
    [InlineData(TrainingMethod.PTuning, ModelExport.PrefixFileName)]
    public void A_quantized_base_trains_resumes_identically_and_is_recorded(TrainingMethod method, string file)
    {
        // THUDM's P-Tuning recipe trains over an INT4 base; LoRA over one is QLoRA's arrangement.
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        var whole = Train(a, Options(method), quantizeBits: 4);
        Assert.True(whole.History[^1].Loss < whole.History[0].Loss + 1, "training over the INT4 base diverged");
        Train(b, Options(method), cancelAfter: 3, quantizeBits: 4);
        var resumed = Train(b, Options(method), resume: true, quantizeBits: 4);
        Assert.NotNull(resumed.ResumedFrom);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, file)), File.ReadAllBytes(Path.Combine(b, file)));
        Assert.Contains("\"quantization_bit\": 4", File.ReadAllText(Path.Combine(a, "trainer_options.json")));
        // The quantization changes the computation: a float base gives other losses, and its run cannot resume this one.
        var fp32 = Train(Path.Combine(_dir, "fp32"), Options(method));
        Assert.NotEqual(fp32.History.Select(h => h.Loss), whole.History.Select(h => h.Loss));
        string c = Path.Combine(_dir, "c");
        Train(c, Options(method), cancelAfter: 2, quantizeBits: 4);
        var e = Assert.Throws<InvalidDataException>(() => Train(c, Options(method), resume: true));
        Assert.Contains("weight dtype is int4+float32, this run's float32", e.Message);
    }

    [Fact]
    public void Full_training_refuses_a_quantized_base()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Train(_dir, Options(TrainingMethod.Full), quantizeBits: 8));
        Assert.Contains("INT8", e.Message);
    }

    [Fact]
    public void Full_training_refuses_a_16_bit_base()
    {
        var e = Assert.Throws<ArgumentException>(() => Train(_dir, Options(TrainingMethod.Full), weightDType: DType.BF16));
        Assert.Contains("master weights", e.Message);
    }

    [Fact]
    public void Resume_refuses_a_checkpoint_of_other_settings()
    {
        Train(_dir, Options(), cancelAfter: 2);
        var e = Assert.Throws<InvalidDataException>(() => Train(_dir, Options() with { BatchSize = 2 }, resume: true));
        Assert.Contains("batch size", e.Message);
    }

    [Fact]
    public void The_png_is_valid_with_correct_crcs_and_an_idat_of_the_right_size()
    {
        var losses = Enumerable.Range(0, 200).Select(i => 5.0 * Math.Exp(-i / 50.0) + 0.1 * Math.Sin(i)).ToList();
        var png = PngLossCurve.Render(losses, [(0, 5.5), (200, 1.0)], 320, 200);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        int pos = 8;
        var idat = new MemoryStream();
        var types = new List<string>();
        int w = 0, h = 0;
        while (pos < png.Length)
        {
            int len = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos));
            string type = System.Text.Encoding.ASCII.GetString(png, pos + 4, 4);
            var body = png.AsSpan(pos + 4, 4 + len);
            Assert.Equal(BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(pos + 8 + len)), PngLossCurve.Crc32(body));
            if (type == "IHDR")
            {
                w = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos + 8));
                h = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos + 12));
                Assert.Equal(new byte[] { 8, 2, 0, 0, 0 }, png[(pos + 16)..(pos + 21)]);
            }
            if (type == "IDAT") idat.Write(png, pos + 8, len);
            types.Add(type);
            pos += 12 + len;
        }
        Assert.Equal(["IHDR", "IDAT", "IEND"], types);
        Assert.Equal((320, 200), (w, h));
        idat.Position = 0;
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        var pixels = raw.ToArray();
        Assert.Equal(h * (1 + w * 3), pixels.Length);
        for (int y = 0; y < h; y++) Assert.Equal(0, pixels[y * (1 + w * 3)]);
        Assert.Contains(pixels, b => b != 255 && b != 0); // something besides white and the filter bytes was drawn
        Assert.Equal(0xCBF43926u, PngLossCurve.Crc32("123456789"u8)); // the CRC-32 check value
    }

    [Theory]
    [InlineData("bogus", "--method bogus")]
    [InlineData("LoRA", null)]
    public void Method_names_parse_or_fail_naming_the_option(string text, string? error)
    {
        if (error is null) Assert.Equal(TrainingMethod.Lora, TrainerOptions.ParseMethod(text));
        else Assert.Contains(error, Assert.Throws<ArgumentException>(() => TrainerOptions.ParseMethod(text)).Message);
    }

    [Fact]
    public void Bad_dtype_and_bad_values_fail_naming_the_option()
    {
        Assert.Equal(DType.BF16, TrainerOptions.ParseDType("bf16"));
        Assert.Contains("--dtype int8", Assert.Throws<ArgumentException>(() => TrainerOptions.ParseDType("int8")).Message);
        // The samples' --dtype auto: fp32, bf16 beside quantized block linears; explicit names win either way.
        Assert.Equal(DType.F32, TrainerOptions.ParseWeightDType("auto", 0, null));
        Assert.Equal(DType.BF16, TrainerOptions.ParseWeightDType("Auto", 4, null));
        Assert.Equal(DType.F32, TrainerOptions.ParseWeightDType("fp32", 8, null));
        Assert.Equal(DType.F16, TrainerOptions.ParseWeightDType("fp16", 0, null));
        Assert.Equal(DType.F32, TrainerOptions.ParseWeightDType("auto", 0, Path.Combine(Path.GetTempPath(), "no-such-model-folder")));
        Assert.Contains("--dtype int4: must be auto, bf16, fp16 or fp32", Assert.Throws<ArgumentException>(() => TrainerOptions.ParseWeightDType("int4", 4, null)).Message);
        Assert.Contains("--lora-rank", Assert.Throws<ArgumentException>(() => new TrainerOptions { LoraRank = 0 }.Validate()).Message);
        Assert.Contains("--lora-target", Assert.Throws<ArgumentException>(() => new TrainerOptions { LoraTarget = "dense" }.Validate()).Message);
        Assert.Contains("--batch-size", Assert.Throws<ArgumentException>(() => new TrainerOptions { BatchSize = 0 }.Validate()).Message);
        Assert.Contains("--max-target-length", Assert.Throws<ArgumentException>(() => new TrainerOptions { MaxTargetLength = 2 }.Validate()).Message);
        Assert.Contains("--method", Assert.Throws<ArgumentException>(() => new TrainerOptions { Method = (TrainingMethod)9 }.Validate()).Message);
    }

    [Fact]
    public void Epoch_orders_are_permutations_that_differ_between_epochs()
    {
        var a = Trainer.EpochOrder(7, 0, 50);
        var b = Trainer.EpochOrder(7, 1, 50);
        Assert.Equal(Enumerable.Range(0, 50), a.Order());
        Assert.Equal(Enumerable.Range(0, 50), b.Order());
        Assert.NotEqual(a, b);
        Assert.Equal(a, Trainer.EpochOrder(7, 0, 50));
    }
}
