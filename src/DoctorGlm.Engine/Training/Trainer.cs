using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Optim;

namespace DoctorGlm.Engine.Training;

/// <summary>A progress report after each optimizer step.</summary>
/// <param name="Step">Steps done (1-based count).</param>
/// <param name="TotalSteps">Planned steps.</param>
/// <param name="Loss">This step's mean training loss.</param>
/// <param name="SmoothedLoss">Mean of the last 20 steps' losses.</param>
/// <param name="LearningRate">The rate this step used.</param>
/// <param name="Epoch">Fractional epochs done.</param>
/// <param name="TokensPerSecond">Non-pad tokens per second in this session (since the start or the resume).</param>
/// <param name="Elapsed">Wall time of this session.</param>
/// <param name="Remaining">Estimated time to the last step.</param>
/// <param name="PeakMemoryBytes">Peak bytes of the device's allocator.</param>
/// <param name="LastEval">The latest held-out loss so far (before training, or at the last <see cref="TrainerOptions.EvalSteps"/>), or null without evaluation samples.</param>
public sealed record TrainingProgress(int Step, int TotalSteps, double Loss, double SmoothedLoss, double LearningRate, double Epoch,
    double TokensPerSecond, TimeSpan Elapsed, TimeSpan Remaining, long PeakMemoryBytes, EvalRecord? LastEval = null);

/// <summary>How a <see cref="Trainer.Run"/> ended.</summary>
/// <param name="StepsDone">Optimizer steps done in total (resumed ones included).</param>
/// <param name="TotalSteps">Planned steps.</param>
/// <param name="Cancelled">True when the token stopped the run (a checkpoint was written first).</param>
/// <param name="ResumedFrom">The checkpoint the run continued from, or null.</param>
/// <param name="CheckpointDir">The last checkpoint written, or null.</param>
/// <param name="History">Every step's record (resumed ones included).</param>
/// <param name="Evals">Evaluation losses (step 0 = before training).</param>
/// <param name="Generation">Generation metrics (BLEU-4, ROUGE) from <see cref="Trainer.GenerationEvaluator"/>, or null when none is set.</param>
/// <param name="Elapsed">Wall time of this session.</param>
/// <param name="Tokens">Non-pad tokens processed in this session.</param>
public sealed record TrainingResult(int StepsDone, int TotalSteps, bool Cancelled, string? ResumedFrom, string? CheckpointDir,
    IReadOnlyList<StepRecord> History, IReadOnlyList<EvalRecord> Evals, IReadOnlyDictionary<string, double>? Generation, TimeSpan Elapsed, long Tokens);

/// <summary>
/// Generation-based evaluation (decode the evaluation prompts, score them with
/// <see cref="Evaluation.GenerationMetrics"/>): the hook a generator plugs into. The trainer calls it after training
/// when set; it has no implementation of its own, because scoring needs real decoded text.
/// </summary>
public interface IGenerationEvaluator
{
    /// <summary>Scores <paramref name="model"/> (in eval mode) on the evaluation dialogues; keys like <c>bleu-4</c>, <c>rouge-1</c>.</summary>
    IReadOnlyDictionary<string, double> Evaluate(GlmModel model);
}

/// <summary>
/// The fine-tuning loop of ChatGLM-6B (spec §5, §8, §9, §11): attaches what <see cref="TrainerOptions.Method"/>
/// trains, runs optimizer steps over shuffled §5.1 samples with gradient accumulation, clipping and a warm-up/decay
/// schedule, evaluates the loss on held-out samples, checkpoints (every <see cref="TrainerOptions.SaveSteps"/>, at
/// the end, and when cancelled), resumes bit-identically on the CPU, and writes the result into the output folder:
/// the adapter / prefix / full model (<see cref="ModelExport"/>), <c>trainer_options.json</c>, <c>loss.csv</c>
/// (<see cref="LossLog"/>) and <c>loss.png</c> (<see cref="PngLossCurve"/>).
/// </summary>
/// <remarks>
/// Everything random is a function of <see cref="TrainerOptions.Seed"/>: the adapter's initialisation, each epoch's
/// permutation of the data (so the data position needs no state beyond the step), and the dropout generator, whose
/// counter is checkpointed. The training samples form one endless stream of per-epoch permutations; step s uses
/// stream positions [s·B·A, (s + 1)·B·A).
/// </remarks>
public sealed class Trainer : IDisposable
{
    private readonly GlmModel _model;
    private readonly IReadOnlyList<ChatGlmTrainSample> _train;
    private readonly IReadOnlyList<ChatGlmTrainSample> _eval;
    private readonly IReadOnlyList<KeyValuePair<string, Tensor>> _trainable;
    private readonly Optimizer _optimizer;
    private readonly LrSchedule _schedule;
    private readonly Dictionary<long, int[]> _orders = [];
    private readonly List<StepRecord> _history = [];
    private readonly List<EvalRecord> _evals = [];

    /// <summary>
    /// Prepares a run: validates <paramref name="options"/>, attaches a fresh LoRA adapter or prefix encoder (unless
    /// the model already has one) or unfreezes the base for <see cref="TrainingMethod.Full"/>, and builds the optimizer
    /// and schedule over the trainable parameters.
    /// </summary>
    /// <param name="model">The model (trained in place).</param>
    /// <param name="options">Run settings.</param>
    /// <param name="train">Training samples (<see cref="ChatGlmSampleBuilder.BuildTrain"/>), all of one padded length.</param>
    /// <param name="eval">Evaluation samples for the loss (may be empty).</param>
    /// <param name="outputDir">Where checkpoints and results go.</param>
    public Trainer(GlmModel model, TrainerOptions options, IReadOnlyList<ChatGlmTrainSample> train, IReadOnlyList<ChatGlmTrainSample> eval, string outputDir)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(eval);
        ArgumentException.ThrowIfNullOrEmpty(outputDir);
        options.Validate();
        if (train.Count == 0) throw new ArgumentException("Trainer: the training set is empty", nameof(train));
        _model = model;
        _train = train;
        _eval = eval;
        Options = options;
        OutputDir = outputDir;

        // Distinct derived seeds, so that e.g. the adapter's init and the first dropout masks are not the same numbers.
        var initRng = new RandomGenerator(RandomGenerator.Mix(options.Seed ^ 0x1A17UL));
        switch (options.Method)
        {
            case TrainingMethod.Lora:
                if (model.Prefix is not null) throw new InvalidOperationException("Trainer: --method lora, but the model has a P-Tuning prefix encoder attached");
                if (model.Lora is null) model.AttachLora(options.LoraSettings, initRng);
                break;
            case TrainingMethod.PTuning:
                if (model.Lora is not null) throw new InvalidOperationException("Trainer: --method ptuning, but the model has a LoRA adapter attached");
                if (model.Prefix is null) model.AttachPrefixEncoder(options.PreSeqLen, options.PrefixProjection, initRng);
                break;
            case TrainingMethod.Full:
                if (model.Lora is not null || model.Prefix is not null) throw new InvalidOperationException("Trainer: --method full trains the base; detach the adapter / prefix first");
                model.SetBaseTrainable(true);
                break;
        }
        model.GradientCheckpointing = options.GradientCheckpointing;
        model.ActivationDType = options.ActivationDType;
        model.Rng = new RandomGenerator(RandomGenerator.Mix(options.Seed ^ 0xD20FUL));
        _trainable = model.TrainableParameters();
        var named = _trainable.Select(kv => (kv.Key, kv.Value));
        _optimizer = options.Optimizer == OptimizerKind.Lion
            ? new Lion(named, options.LearningRate, weightDecay: options.WeightDecay)
            : new AdamW(named, options.LearningRate, weightDecay: options.WeightDecay);
        TotalSteps = options.TotalSteps(train.Count);
        int warmup = Math.Min(options.WarmupSteps, TotalSteps);
        _schedule = options.Schedule switch
        {
            ScheduleKind.Cosine => LrSchedule.CosineWithWarmup(options.LearningRate, warmup, TotalSteps),
            ScheduleKind.Constant => LrSchedule.ConstantWithWarmup(options.LearningRate, warmup),
            _ => LrSchedule.LinearWithWarmup(options.LearningRate, warmup, TotalSteps),
        };
    }

    /// <summary>The run's settings.</summary>
    public TrainerOptions Options { get; }

    /// <summary>The output folder.</summary>
    public string OutputDir { get; }

    /// <summary>Planned optimizer steps.</summary>
    public int TotalSteps { get; }

    /// <summary>The trained model.</summary>
    public GlmModel Model => _model;

    /// <summary>Elements that train.</summary>
    public long TrainableParameterCount => _trainable.Sum(kv => kv.Value.NumElements);

    /// <summary>Called after every optimizer step (on the training thread).</summary>
    public Action<TrainingProgress>? Progress { get; set; }

    /// <summary>Generation metrics after training (BLEU/ROUGE); null skips them. See <see cref="IGenerationEvaluator"/>.</summary>
    public IGenerationEvaluator? GenerationEvaluator { get; set; }

    /// <summary>Storage dtype of the exported weights (the training itself is fp32).</summary>
    public DType ExportDType { get; set; } = DType.F32;

    /// <summary>Extra key/value pairs written into <c>trainer_options.json</c> (e.g. the data files and base model).</summary>
    public IDictionary<string, string> RunInfo { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Token-weighted mean loss on the evaluation samples (dropout off, no gradients; the RNG is left as it was).</summary>
    public double Evaluate()
    {
        if (_eval.Count == 0) return double.NaN;
        bool training = _model.Training;
        var rng = _model.Rng.State;
        _model.Training = false;
        try
        {
            using var noGrad = GradMode.NoGrad();
            double sum = 0;
            long n = 0;
            for (int i = 0; i < _eval.Count; i += Options.EvalBatchSize)
            {
                var batch = _eval.Skip(i).Take(Options.EvalBatchSize).ToList();
                int targets = GlmBatch.TargetCount(batch);
                if (targets == 0) continue;
                using var scope = TensorScope.Begin();
                var inputs = GlmBatch.Collate(batch, _model.Config, _model.Device);
                sum += (double)_model.Loss(inputs).Item() * targets;
                n += targets;
            }
            return n > 0 ? sum / n : double.NaN;
        }
        finally
        {
            _model.Training = training;
            _model.Rng.State = rng;
        }
    }

    /// <summary>
    /// Trains to <see cref="TotalSteps"/>. With <paramref name="resume"/>, continues from the newest checkpoint in
    /// <see cref="OutputDir"/> (none: starts fresh). When <paramref name="cancellationToken"/> fires, finishes the
    /// current step, writes a checkpoint and returns with <see cref="TrainingResult.Cancelled"/> set.
    /// </summary>
    public TrainingResult Run(bool resume = false, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(OutputDir);
        string? resumedFrom = null;
        int start = 0;
        _history.Clear();
        _evals.Clear();
        if (resume && TrainingCheckpoint.FindLatest(OutputDir) is { } ckpt)
        {
            var st = TrainingCheckpoint.Load(ckpt, _trainable, _optimizer);
            string Mismatch(string what, object a, object b) => $"{ckpt}: the checkpoint's {what} is {a}, this run's {b}; resume with the same settings and data";
            if (st.Method != MethodName) throw new InvalidDataException(Mismatch("method", st.Method, MethodName));
            if (st.TrainSamples != _train.Count) throw new InvalidDataException(Mismatch("training sample count", st.TrainSamples, _train.Count));
            if (st.BatchSize != Options.BatchSize || st.GradientAccumulation != Options.GradientAccumulation)
                throw new InvalidDataException(Mismatch("batch size × accumulation", $"{st.BatchSize}×{st.GradientAccumulation}", $"{Options.BatchSize}×{Options.GradientAccumulation}"));
            if (st.TotalSteps != TotalSteps) throw new InvalidDataException(Mismatch("total steps", st.TotalSteps, TotalSteps));
            if (st.DataSeed != Options.Seed) throw new InvalidDataException(Mismatch("seed", st.DataSeed, Options.Seed));
            string weightDType = BaseWeights;
            if (st.WeightDType != weightDType) throw new InvalidDataException(Mismatch("weight dtype", st.WeightDType, weightDType));
            _model.Rng.State = st.Rng;
            _history.AddRange(st.History);
            _evals.AddRange(st.Evals);
            start = st.Step;
            resumedFrom = ckpt;
        }
        WriteOptions();

        if (start == 0 && _eval.Count > 0) RecordEval(0);
        _model.Training = true;
        var clock = Stopwatch.StartNew();
        long sessionTokens = 0;
        string? lastCheckpoint = resumedFrom;
        int perStep = Options.BatchSize * Options.GradientAccumulation;
        var backend = BackendRegistry.For(_model.Device);

        for (int step = start; step < TotalSteps; step++)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                lastCheckpoint = SaveCheckpoint(step);
                WriteCurves();
                return Result(step, cancelled: true);
            }
            _schedule.Apply(_optimizer, step);
            double lr = _optimizer.LearningRate;
            double lossSum = 0;
            long tokens = 0;
            for (int m = 0; m < Options.GradientAccumulation; m++)
            {
                long first = (long)step * perStep + (long)m * Options.BatchSize;
                var batch = new ChatGlmTrainSample[Options.BatchSize];
                for (int i = 0; i < batch.Length; i++) batch[i] = SampleAt(first + i);
                tokens += batch.Sum(s => (long)s.Length);
                using var scope = TensorScope.Begin();
                var inputs = GlmBatch.Collate(batch, _model.Config, _model.Device);
                var loss = _model.Loss(inputs);
                lossSum += loss.Item();
                (Options.GradientAccumulation > 1 ? Ops.Scale(loss, 1f / Options.GradientAccumulation) : loss).Backward();
            }
            double norm = Options.MaxGradNorm > 0 ? GradientClipping.ClipByGlobalNorm(_trainable.Select(kv => kv.Value), Options.MaxGradNorm) : double.NaN;
            _optimizer.Step();
            _optimizer.ZeroGrad();
            double meanLoss = lossSum / Options.GradientAccumulation;
            _history.Add(new StepRecord(step + 1, meanLoss, lr, norm, tokens));
            sessionTokens += tokens;

            // Before the checkpoint of the same step, which then holds this evaluation too (a resumed run does not redo it).
            if (Options.EvalSteps > 0 && (step + 1) % Options.EvalSteps == 0 && step + 1 < TotalSteps && _eval.Count > 0)
                RecordEval(step + 1);

            if (Options.SaveSteps > 0 && (step + 1) % Options.SaveSteps == 0 && step + 1 < TotalSteps)
                lastCheckpoint = SaveCheckpoint(step + 1);

            if (Progress is { } report)
            {
                double secs = clock.Elapsed.TotalSeconds;
                int doneHere = step + 1 - start;
                var remaining = TimeSpan.FromSeconds(secs / doneHere * (TotalSteps - step - 1));
                report(new TrainingProgress(step + 1, TotalSteps, meanLoss, _history.TakeLast(20).Average(r => r.Loss), lr,
                    (double)(step + 1) * perStep / _train.Count, secs > 0 ? sessionTokens / secs : 0, clock.Elapsed, remaining, backend.Memory.PeakBytes,
                    _evals.Count > 0 ? _evals[^1] : null));
            }
        }

        _model.Training = false;
        if (_eval.Count > 0 && !_evals.Any(e => e.Step == TotalSteps)) RecordEval(TotalSteps);
        lastCheckpoint = SaveCheckpoint(TotalSteps);
        var generation = GenerationEvaluator?.Evaluate(_model);
        Export();
        WriteCurves();
        return Result(TotalSteps, cancelled: false) with { Generation = generation };

        TrainingResult Result(int done, bool cancelled) =>
            new(done, TotalSteps, cancelled, resumedFrom, lastCheckpoint, _history.ToList(), _evals.ToList(), null, clock.Elapsed, sessionTokens);
    }

    private string MethodName => Options.Method.ToString().ToLowerInvariant();

    private ChatGlmTrainSample SampleAt(long position)
    {
        long epoch = position / _train.Count;
        int index = (int)(position % _train.Count);
        if (!_orders.TryGetValue(epoch, out var order))
        {
            if (_orders.Count > 4) _orders.Clear();
            order = EpochOrder(Options.Seed, epoch, _train.Count);
            _orders[epoch] = order;
        }
        return _train[order[index]];
    }

    /// <summary>The permutation of <paramref name="count"/> samples used in epoch <paramref name="epoch"/> (Fisher–Yates on counter-based uniforms).</summary>
    public static int[] EpochOrder(ulong seed, long epoch, int count)
    {
        var order = Enumerable.Range(0, count).ToArray();
        ulong stream = RandomGenerator.Mix(seed ^ RandomGenerator.Mix(0xE90C0000UL + (ulong)epoch));
        for (int i = count - 1; i > 0; i--)
        {
            // 24-bit uniforms: (i + 1)·u is below 2^24 · count, exact in double, and j ≤ i.
            int j = (int)((double)RandomGenerator.Uniform(stream, (ulong)i) * (i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private string SaveCheckpoint(int step) => TrainingCheckpoint.Save(OutputDir, _trainable, _optimizer,
        new TrainerState(step, TotalSteps, MethodName, Options.Seed, _train.Count, Options.BatchSize, Options.GradientAccumulation,
            _model.Rng.State, _history.ToList(), _evals.ToList(), BaseWeights));

    /// <summary>How the base stores its weights, as checkpoints record it: the float type ("bfloat16"), and for a
    /// quantized base the bits of its block linears first ("int4+bfloat16"); a resume must find the same.</summary>
    private string BaseWeights => (_model.IsQuantized ? $"int{_model.QuantizationBits}+" : "") + ModelExport.DTypeName(_model.WeightDType);

    /// <summary>Writes the trained weights into <see cref="OutputDir"/> (see <see cref="ModelExport"/>).</summary>
    public void Export() => ExportTo(OutputDir);

    private void ExportTo(string dir)
    {
        switch (Options.Method)
        {
            case TrainingMethod.Lora: ModelExport.SaveLora(dir, _model.Lora!, ExportDType, RunInfo.TryGetValue("model", out var m) ? m : null); break;
            case TrainingMethod.PTuning: ModelExport.SavePrefix(dir, _model.Prefix!, ExportDType); break;
            default: ModelExport.SaveFull(dir, _model, ExportDType); break;
        }
    }

    /// <summary>The folder <see cref="TrainerOptions.SaveBest"/> exports into: <c>OutputDir/best</c>.</summary>
    public string BestDir => Path.Combine(OutputDir, "best");

    /// <summary>
    /// Evaluates at <paramref name="step"/> and records it; with <see cref="TrainerOptions.SaveBest"/>, a loss below
    /// every earlier one (a resumed run's included) exports the trained part into <see cref="BestDir"/> with
    /// <c>best.json</c> (its step and loss). Training is unchanged: the export only reads the weights.
    /// </summary>
    private void RecordEval(int step)
    {
        double best = _evals.Count > 0 ? _evals.Min(e => e.Loss) : double.PositiveInfinity;
        var record = new EvalRecord(step, Evaluate());
        _evals.Add(record);
        if (!Options.SaveBest || !(record.Loss < best)) return;
        Directory.CreateDirectory(BestDir);
        ExportTo(BestDir);
        AtomicFile.WriteAllText(Path.Combine(BestDir, "best.json"), string.Create(CultureInfo.InvariantCulture,
            $"{{\n  \"step\": {step},\n  \"eval_loss\": {record.Loss:R},\n  \"total_steps\": {TotalSteps}\n}}\n"));
    }

    private void WriteCurves()
    {
        LossLog.Write(Path.Combine(OutputDir, "loss.csv"), _history);
        var evals = _evals.Select(e => (e.Step, e.Loss)).ToList();
        AtomicFile.WriteAllBytes(Path.Combine(OutputDir, "loss.png"), PngLossCurve.Render(_history.Select(r => r.Loss).ToList(), evals));
        if (_evals.Count > 0)
            AtomicFile.WriteAllText(Path.Combine(OutputDir, "eval.csv"),
                "step,eval_loss\n" + string.Concat(_evals.Select(e => $"{e.Step.ToString(CultureInfo.InvariantCulture)},{e.Loss.ToString("R", CultureInfo.InvariantCulture)}\n")));
    }

    private void WriteOptions()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            var o = Options;
            w.WriteStartObject();
            w.WriteString("method", MethodName);
            if (o.Method == TrainingMethod.Lora)
            {
                w.WriteNumber("lora_rank", o.LoraRank);
                w.WriteNumber("lora_alpha", o.LoraAlpha);
                w.WriteNumber("lora_dropout", o.LoraDropout);
                w.WriteString("lora_target", o.LoraTarget);
                w.WriteBoolean("lora_grouped", o.LoraGrouped);
            }
            if (o.Method == TrainingMethod.PTuning)
            {
                w.WriteNumber("pre_seq_len", o.PreSeqLen);
                w.WriteBoolean("prefix_projection", o.PrefixProjection);
            }
            w.WriteNumber("max_source_length", o.MaxSourceLength);
            w.WriteNumber("max_target_length", o.MaxTargetLength);
            w.WriteString("optimizer", o.Optimizer.ToString().ToLowerInvariant());
            w.WriteNumber("learning_rate", o.LearningRate);
            w.WriteNumber("weight_decay", o.WeightDecay);
            w.WriteString("schedule", o.Schedule.ToString().ToLowerInvariant());
            w.WriteNumber("warmup_steps", o.WarmupSteps);
            w.WriteNumber("batch_size", o.BatchSize);
            w.WriteNumber("gradient_accumulation", o.GradientAccumulation);
            w.WriteNumber("max_grad_norm", o.MaxGradNorm);
            w.WriteNumber("epochs", o.Epochs);
            w.WriteNumber("max_steps", o.MaxSteps);
            w.WriteNumber("total_steps", TotalSteps);
            w.WriteNumber("seed", o.Seed);
            w.WriteBoolean("gradient_checkpointing", o.GradientCheckpointing);
            w.WriteNumber("save_steps", o.SaveSteps);
            w.WriteNumber("eval_steps", o.EvalSteps);
            w.WriteBoolean("save_best", o.SaveBest);
            w.WriteNumber("train_samples", _train.Count);
            w.WriteNumber("eval_samples", _eval.Count);
            w.WriteNumber("trainable_parameters", TrainableParameterCount);
            w.WriteString("device", _model.Device.ToString());
            w.WriteString("weight_dtype", ModelExport.DTypeName(_model.WeightDType));
            w.WriteNumber("quantization_bit", _model.QuantizationBits);
            w.WriteString("activation_dtype", ModelExport.DTypeName(o.ActivationDType));
            w.WriteString("export_dtype", ModelExport.DTypeName(ExportDType));
            foreach (var (k, v) in RunInfo) w.WriteString(k, v);
            w.WriteEndObject();
        }
        AtomicFile.WriteAllBytes(Path.Combine(OutputDir, "trainer_options.json"), ms.ToArray());
    }

    /// <summary>Releases the optimizer state (the model belongs to the caller).</summary>
    public void Dispose() => _optimizer.Dispose();
}
