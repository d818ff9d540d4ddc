// samples/Train — fine-tunes ChatGLM-6B-architecture models with the engine's Trainer: LoRA (PEFT or DoctorGLM's grouped
// form), P-Tuning v2, or full training (also from a random init, which is how the sample's small base model is made).
// This file is only the command line: the loop, checkpoints, resume and the outputs live in DoctorGlm.Engine.Training.
using System.CommandLine;
using System.Diagnostics;
using DoctorGlm.Engine;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Backends.Cuda;
using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;
using DoctorGlm.Engine.Training;
using Spectre.Console;

string here = AppContext.BaseDirectory;
// The shipped base model: the checkout's samples/Train/base when run from the repository (so the adapter written
// names a stable folder, not the build output), else the copy next to the executable.
string shippedBase = Directory.Exists(Path.Combine("samples", "Train", "base")) ? Path.GetFullPath(Path.Combine("samples", "Train", "base")) : Path.Combine(here, "base");

// Every option is registered where it is declared (in --help order), so none can be declared and forgotten.
var options = new List<Option>();
Option<T> Opt<T>(string name, string description, T? defaultValue = default, bool hasDefault = true)
{
    var o = new Option<T>(name) { Description = description };
    if (hasDefault) o.DefaultValueFactory = _ => defaultValue!;
    options.Add(o);
    return o;
}

var model = Opt<string?>("--model", "Base model folder: a Hugging Face ChatGLM-6B folder (config.json, *.bin/*.safetensors, ice_text.model) or one written by --method full (model.safetensors, config.json, tokenizer.model). Default: samples/Train/base when it holds a model, else a random init (--init random).", null);
var init = Opt("--init", "pretrained: load --model; random: a new model of --config (from-scratch training, use with --method full).", "auto");
var config = Opt("--config", "Size of a random init: tiny (hidden 128, 2 layers, 4 heads, vocabulary of the tokenizer), base (256, 3, 8: the shape of the sample's pretrained base), small (256, 4, 8) or 6b (ChatGLM-6B's shape).", "tiny");
var tokenizer = Opt<string?>("--tokenizer", "SentencePiece model (ChatGLM pieces). Default: the model folder's ice_text.model / tokenizer.model, else samples/Train/base/tokenizer.model.", null);
var device = Opt("--device", "cpu, cuda or auto (CUDA when available, else CPU).", "cpu");
var dtype = Opt("--dtype", "auto, bf16, fp16 or fp32: storage type of the frozen base's weight matrices while training with LoRA or P-Tuning (half the memory; tensor cores on the GPU) and of the written weights. Trainable parameters and optimizer state stay fp32 (activations: --activations); with --method full the weights are trainable, so they stay fp32 and --dtype only sets the written type. auto: fp32, but bf16 beside INT8/INT4 block linears (--quantize, or a pre-quantized --model), as THUDM's quantized checkpoints keep the embedding in 16 bits.", "auto");
var activations = Opt("--activations", "bf16, fp16 or fp32: storage type of the activations while training and computing the evaluation loss (16 bits: half the activation memory; each op computes in fp32 and rounds its output once). Gradients, the loss and optimizer state stay fp32; generation runs fp32.", "fp32");
var quantize = Opt("--quantize", "0, 8 or 4: quantize the frozen base's block linears to INT8/INT4 while loading (ChatGLM's scheme; THUDM's P-Tuning recipe trains over INT4) and train LoRA or P-Tuning over it: a 6B base in 3.9 GB (INT4). Not with --method full.", 0);
var attention = Opt("--attention", "GPU attention kernels: fp32 (match the CPU to fp32 rounding), tensor-cores (bf16 mma with fp32 softmax: FlashAttention-2 speed, bf16 precision) or auto (tensor cores when the frozen matrices are 16-bit). Ignored on the CPU.", "auto");
var method = Opt<string?>("--method", "lora, ptuning or full. Default: lora on a pretrained base, full on a random init.", null);
var loraRank = Opt("--lora-rank", "LoRA rank r.", 8);
var loraAlpha = Opt("--lora-alpha", "LoRA alpha (the update is scaled by alpha / r).", 32f);
var loraDropout = Opt("--lora-dropout", "Dropout on the LoRA branch's input.", 0.1f);
var loraTarget = Opt("--lora-target", "LoRA target module (ChatGLM: query_key_value).", "query_key_value");
var loraGrouped = Opt("--lora-grouped", "DoctorGLM's grouped loralib form, enable_lora [true, false, true] (written in deep_training format) instead of PEFT's full rows.", false);
var preSeqLen = Opt("--pre-seq-len", "P-Tuning v2 prefix length.", 128);
var prefixProjection = Opt("--prefix-projection", "P-Tuning prefix encoder with the two-layer MLP projection.", false);
var train = Opt<string?>("--train", "Training data: Alpaca JSON/JSONL, ChatGLM P-Tuning JSONL or the CMD CSV (format detected). Default: the shipped medical dialogues.", null);
var eval = Opt<string?>("--eval", "Evaluation data (same formats). Default: the shipped held-out dialogues.", null);
var maxTrainSamples = Opt("--max-train-samples", "Use only the first N training dialogues (0 = all).", 0);
var maxEvalSamples = Opt("--max-eval-samples", "Use only the first N evaluation dialogues (0 = all).", 0);
var maxSource = Opt("--max-source-length", "Prompt tokens kept (max_source_length; the prompt is cut to this − 1).", 64);
var maxTarget = Opt("--max-target-length", "Answer tokens kept (max_target_length; the answer is cut to this − 2).", 128);
var optimizer = Opt("--optimizer", "adamw or lion.", "adamw");
var lr = Opt<double?>("--lr", "Peak learning rate. Default: 1e-3 for LoRA, 2e-3 for full, 2e-2 for P-Tuning.", null);
var weightDecay = Opt("--weight-decay", "Decoupled weight decay.", 0.0);
var schedule = Opt("--schedule", "linear, cosine or constant decay after warm-up.", "cosine");
var warmup = Opt("--warmup-steps", "Linear warm-up steps from 0.", 20);
var batch = Opt("--batch-size", "Sequences per micro-batch.", 8);
var accum = Opt("--grad-accum", "Micro-batches per optimizer step (gradient accumulation).", 1);
var clip = Opt("--max-grad-norm", "Clip the global gradient norm to this (0 = no clipping).", 1f);
var epochs = Opt("--epochs", "Passes over the training data (when --max-steps is 0).", 2.0);
var maxSteps = Opt("--max-steps", "Optimizer steps (0 = from --epochs).", 0);
var seed = Opt("--seed", "Seed of the data order, initialisation and dropout.", 42UL);
var checkpointing = Opt("--gradient-checkpointing", "Recompute each GLM block in backward (less memory, ~30% more time).", false);
var saveSteps = Opt("--save-steps", "Write a checkpoint every N steps (0 = only at the end and on Ctrl+C).", 50);
var saveBest = Opt("--save-best", "Export the adapter / prefix / model into OUTPUT/best whenever the held-out loss reaches a new low (with --eval-steps, during training too).", false);
var evalSteps = Opt("--eval-steps", "Evaluate the held-out loss every N steps too (eval.csv, loss.png, the progress line); 0 = only before and after training.", 0);
var output = Opt("--output", "Output folder: adapter / prefix / model, trainer_options.json, loss.csv, loss.png, checkpoints/.", Path.Combine("out", "train"));
var evalGenerate = Opt("--eval-generate", "Answer the first N evaluation prompts (greedy, up to --max-target-length new tokens) before and after training and report BLEU-4 and ROUGE-1/2/L as ChatGLM's P-Tuning evaluation computes them (0 = off).", 16);
var evalBatch = Opt("--eval-batch", "Evaluation prompts answered together in one left-padded batch (the reference's per_device_eval_batch_size); the answers are those each prompt gets alone. 0 = 8 on a GPU, 1 on the CPU (where the small default model's decoding is compute-bound and batching does not pay).", 0);
var resume = Opt("--resume", "Continue from the newest checkpoint in --output (same settings and data).", false);

var root = new RootCommand("Fine-tune a ChatGLM-6B-architecture model (LoRA, P-Tuning v2 or full) on medical dialogues with DoctorGlm.Engine. " +
    "With no arguments: a small real job on the CPU in about three minutes, on the dialogues shipped with the sample.");
foreach (var o in options) root.Options.Add(o);

root.SetAction(parse =>
{
    try { return Run(parse); }
    catch (Exception e) when (e is ArgumentException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or NotSupportedException or InvalidOperationException)
    {
        AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
        return 1;
    }
});
return root.Parse(args).Invoke();

int Run(ParseResult p)
{
    var total = Stopwatch.StartNew();
    // ---- the base model and tokenizer
    string? modelDir = p.GetValue(model);
    string initMode = p.GetValue(init)!.ToLowerInvariant();
    if (initMode is not ("auto" or "pretrained" or "random")) throw new ArgumentException($"--init {initMode}: must be pretrained or random");
    if (modelDir is null && initMode != "random" && File.Exists(Path.Combine(shippedBase, "config.json"))) modelDir = shippedBase;
    bool random = initMode == "random" || (initMode == "auto" && modelDir is null);
    if (!random && modelDir is null) throw new ArgumentException("--init pretrained needs --model DIR");
    var trainingMethod = p.GetValue(method) is { } m ? TrainerOptions.ParseMethod(m) : random ? TrainingMethod.Full : TrainingMethod.Lora;
    var exportType = TrainerOptions.ParseWeightDType(p.GetValue(dtype)!, p.GetValue(quantize), modelDir);
    var dev = DeviceSelector.Resolve(p.GetValue(device)!, out var deviceNote);
    if (deviceNote is not null) AnsiConsole.MarkupLineInterpolated($"[yellow]{deviceNote}[/]");

    string tokPath = p.GetValue(tokenizer)
        ?? (modelDir is null ? null : ChatGlmTokenizer.FindModelFile(modelDir))
        ?? Path.Combine(shippedBase, "tokenizer.model");
    var tok = ChatGlmTokenizer.Load(tokPath, modelDir is null ? 0 : GlmConfigFor(modelDir).NumImageTokens);

    GlmModel glm;
    string modelDescription;
    int quantizeBits = p.GetValue(quantize);
    if (quantizeBits is not (0 or 8 or 4)) throw new ArgumentException($"--quantize {quantizeBits}: use 8 or 4 (0: off)");
    if (quantizeBits != 0 && trainingMethod == TrainingMethod.Full) throw new ArgumentException("--quantize: full training updates the block linears, which INT8/INT4 weights cannot; use --method lora or ptuning");
    if (random)
    {
        if (quantizeBits != 0) throw new ArgumentException("--quantize needs a pretrained --model (a random init is trained in full)");
        var cfg = RandomConfig(p.GetValue(config)!, tok);
        glm = GlmModel.CreateRandom(cfg, new RandomGenerator(p.GetValue(seed)), dev, weightDType: trainingMethod == TrainingMethod.Full ? DType.F32 : exportType);
        modelDescription = $"random init '{p.GetValue(config)}'";
    }
    else
    {
        var cfg = GlmConfigFor(modelDir!);
        using var src = CheckpointReader.Open(modelDir!);
        var loadOptions = new GlmLoadOptions
        {
            Trainable = trainingMethod == TrainingMethod.Full,
            WeightDType = trainingMethod == TrainingMethod.Full ? DType.F32 : exportType,
            QuantizeBits = quantizeBits,
        };
        if (Console.IsOutputRedirected) glm = GlmModel.Load(cfg, src, loadOptions, dev);
        else
            // A 6B base takes tens of seconds to read (and quantize): a bar of the checkpoint's bytes.
            glm = AnsiConsole.Progress().AutoClear(true).Start(ctx =>
            {
                var task = ctx.AddTask($"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(modelDir!))}", maxValue: 1);
                var progress = new Progress<GlmLoadProgress>(r =>
                {
                    task.MaxValue = Math.Max(1, r.TotalBytes);
                    task.Value = Math.Max(task.Value, r.Bytes); // reported on the thread pool, possibly out of order
                });
                return GlmModel.Load(cfg, src, loadOptions with { Progress = progress }, dev);
            });
        modelDescription = Path.GetFullPath(modelDir!);
    }
    using var _ = glm;
    var c = glm.Config;
    string attentionMode = p.GetValue(attention)!.ToLowerInvariant();
    if (attentionMode is not ("auto" or "fp32" or "tensor-cores")) throw new ArgumentException($"--attention {attentionMode}: must be auto, fp32 or tensor-cores");
    string attentionNote = "";
    if (BackendRegistry.For(dev) is CudaBackend gpu)
    {
        gpu.AttentionKernel = attentionMode == "tensor-cores" || (attentionMode == "auto" && glm.WeightDType != DType.F32)
            ? CudaAttentionKernel.TensorCores : CudaAttentionKernel.Fp32;
        attentionNote = $", attention kernels {gpu.AttentionKernel}";
    }
    if (tok.VocabSize > c.VocabSize) throw new InvalidDataException($"{tokPath}: the tokenizer has {tok.VocabSize} ids, the model's vocabulary only {c.VocabSize}");

    // ---- data
    var builder = new ChatGlmSampleBuilder(s => tok.Encode(s), c.GMaskTokenId, c.BosTokenId, c.EosTokenId, c.PadTokenId,
        p.GetValue(maxSource), p.GetValue(maxTarget));
    var evalExamples = new List<DialogueExample>();
    List<ChatGlmTrainSample> Read(string path, int limit, string what, List<DialogueExample>? keep = null)
    {
        var r = DatasetReader.Read(path);
        foreach (var issue in r.Issues.Take(5)) AnsiConsole.MarkupLineInterpolated($"[yellow]skipped[/] {issue.ToString()}");
        if (r.Issues.Count > 5) AnsiConsole.MarkupLineInterpolated($"[yellow]… and {r.Issues.Count - 5} more skipped records[/]");
        var ex = (limit > 0 ? r.Examples.Take(limit) : r.Examples).ToList();
        keep?.AddRange(ex);
        var samples = ex.Select(builder.BuildTrain).ToList();
        AnsiConsole.MarkupLineInterpolated($"{what}: {samples.Count} dialogues from {path} ({r.Format}{(r.SkippedRecords > 0 ? $", {r.SkippedRecords} skipped" : "")}), mean {samples.Average(s => s.Length):F0} tokens");
        return samples;
    }
    string trainPath = p.GetValue(train) ?? Path.Combine(here, "data", "train.jsonl");
    string evalPath = p.GetValue(eval) ?? Path.Combine(here, "data", "eval.jsonl");
    var trainSet = Read(trainPath, p.GetValue(maxTrainSamples), "train");
    var evalSet = Read(evalPath, p.GetValue(maxEvalSamples), "eval ", evalExamples);

    // ---- the run
    var options = new TrainerOptions
    {
        Method = trainingMethod,
        LoraRank = p.GetValue(loraRank), LoraAlpha = p.GetValue(loraAlpha), LoraDropout = p.GetValue(loraDropout),
        LoraTarget = p.GetValue(loraTarget)!, LoraGrouped = p.GetValue(loraGrouped),
        PreSeqLen = p.GetValue(preSeqLen), PrefixProjection = p.GetValue(prefixProjection),
        MaxSourceLength = p.GetValue(maxSource), MaxTargetLength = p.GetValue(maxTarget),
        Optimizer = TrainerOptions.ParseOptimizer(p.GetValue(optimizer)!),
        // LoRA on the shipped base: 1e-3 ends lower on the held-out set than 2e-3 in the default two epochs (3.673 vs 3.675).
        LearningRate = p.GetValue(lr) ?? trainingMethod switch { TrainingMethod.PTuning => 2e-2, TrainingMethod.Lora => 1e-3, _ => 2e-3 },
        WeightDecay = p.GetValue(weightDecay), Schedule = TrainerOptions.ParseSchedule(p.GetValue(schedule)!), WarmupSteps = p.GetValue(warmup),
        BatchSize = p.GetValue(batch), GradientAccumulation = p.GetValue(accum), MaxGradNorm = p.GetValue(clip),
        Epochs = p.GetValue(epochs), MaxSteps = p.GetValue(maxSteps), Seed = p.GetValue(seed),
        GradientCheckpointing = p.GetValue(checkpointing), SaveSteps = p.GetValue(saveSteps), EvalSteps = p.GetValue(evalSteps), SaveBest = p.GetValue(saveBest),
        ActivationDType = TrainerOptions.ParseDType(p.GetValue(activations)!, "--activations"),
    }.Validate();
    string outDir = Path.GetFullPath(p.GetValue(output)!);
    using var trainer = new Trainer(glm, options, trainSet, evalSet, outDir) { ExportDType = exportType };
    trainer.RunInfo["model"] = modelDescription;
    trainer.RunInfo["tokenizer"] = Path.GetFullPath(tokPath);
    trainer.RunInfo["train_file"] = Path.GetFullPath(trainPath);
    trainer.RunInfo["eval_file"] = Path.GetFullPath(evalPath);
    trainer.RunInfo["command_line"] = string.Join(' ', args);

    AnsiConsole.MarkupLineInterpolated($"[bold]DoctorGlm.Engine[/] — {trainingMethod.ToString().ToLowerInvariant()} on {modelDescription}: {c.NumLayers} layers, hidden {c.HiddenSize}, vocabulary {c.VocabSize}, {c.ParameterCount:N0} base parameters ({glm.BaseParameterBytes / 1048576.0:N1} MiB, matrices in {glm.WeightDType}{(glm.IsQuantized ? $", block linears in INT{glm.QuantizationBits}" : "")}), {trainer.TrainableParameterCount:N0} trainable; device {dev}{attentionNote}");
    AnsiConsole.MarkupLineInterpolated($"{trainer.TotalSteps} steps × {options.BatchSize * options.GradientAccumulation} sequences, {options.Optimizer} lr {options.LearningRate:G3} ({options.Schedule}, warm-up {options.WarmupSteps}), output {outDir}");
    GenerationEvaluator? generationEval = null;
    IReadOnlyDictionary<string, double>? generationBefore = null;
    IReadOnlyList<string> answersBefore = [];
    int nGenerate = Math.Min(p.GetValue(evalGenerate), evalExamples.Count);
    if (nGenerate > 0)
    {
        generationEval = new GenerationEvaluator(tok, evalExamples.Take(nGenerate).ToList(), options.MaxTargetLength, batchSize: p.GetValue(evalBatch) is > 0 and var eb ? eb : dev.Kind == DeviceKind.Cpu ? 1 : 8);
        trainer.GenerationEvaluator = generationEval;
        if (!p.GetValue(resume))
        {
            AnsiConsole.MarkupLineInterpolated($"answering {nGenerate} evaluation prompts before training (BLEU-4, ROUGE)…");
            generationBefore = generationEval.Evaluate(glm);
            answersBefore = generationEval.LastAnswers;
        }
    }

    using var cts = new CancellationTokenSource();
    Console.CancelKeyPress += (_, e) =>
    {
        if (cts.IsCancellationRequested) return; // a second Ctrl+C kills the process
        e.Cancel = true;
        cts.Cancel();
    };
    TrainingResult result = null!;
    AnsiConsole.Progress()
        .AutoClear(false)
        .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
        .Start(ctx =>
        {
            var task = ctx.AddTask("evaluating before training", maxValue: trainer.TotalSteps);
            trainer.Progress = r =>
            {
                task.Value = r.Step;
                task.Description = $"step {r.Step}/{r.TotalSteps}  loss {r.SmoothedLoss:F3}"
                    + (r.LastEval is { Step: > 0 } e ? $"  eval {e.Loss:F3} @{e.Step}" : "")
                    + $"  lr {r.LearningRate:G2}  {r.TokensPerSecond:N0} tok/s  ETA {r.Remaining:mm\\:ss}  mem {r.PeakMemoryBytes / 1048576.0:N0} MiB"
                    + (cts.IsCancellationRequested ? "  (stopping: saving a checkpoint)" : "");
            };
            result = trainer.Run(p.GetValue(resume), cts.Token);
            task.StopTask();
        });

    // ---- summary
    if (result.ResumedFrom is not null) AnsiConsole.MarkupLineInterpolated($"resumed from {result.ResumedFrom}");
    var before = result.Evals.FirstOrDefault(e => e.Step == 0);
    var after = result.Evals.LastOrDefault();
    if (result.Cancelled)
    {
        AnsiConsole.MarkupLineInterpolated($"[yellow]stopped at step {result.StepsDone}/{result.TotalSteps}[/]; checkpoint {result.CheckpointDir}");
        AnsiConsole.MarkupLineInterpolated($"continue with: dotnet run --project samples/Train -- {string.Join(' ', args)} --resume");
        return 130;
    }
    var table = new Table().AddColumns("", "value");
    if (before.Step == 0 && result.Evals.Count > 0) table.AddRow("eval loss before", $"{before.Loss:F4}");
    if (after.Step == result.TotalSteps) table.AddRow("eval loss after", $"{after.Loss:F4}");
    table.AddRow("train loss (last 20 steps)", $"{result.History.TakeLast(20).Average(h => h.Loss):F4}");
    table.AddRow("steps", $"{result.StepsDone}");
    table.AddRow("time", $"{result.Elapsed.TotalSeconds:F0} s training, {total.Elapsed.TotalSeconds:F0} s in all");
    table.AddRow("tokens/s", $"{result.Tokens / Math.Max(1e-9, result.Elapsed.TotalSeconds):N0}");
    table.AddRow("peak memory", $"{BackendRegistry.For(dev).Memory.PeakBytes / 1048576.0:N0} MiB");
    if (result.Generation is { } g)
        foreach (var (k, v) in g)
            table.AddRow($"{k} (×100, {nGenerate} answers)", generationBefore is { } gb && gb.TryGetValue(k, out var vb) ? $"{vb:F2} → {v:F2}" : $"{v:F2}");
    if (options.SaveBest && result.Evals.Count > 0)
    {
        var best = result.Evals.MinBy(e => e.Loss);
        table.AddRow("best eval loss", $"{best.Loss:F4} at step {best.Step} → {trainer.BestDir}");
    }
    table.AddRow("output", outDir);
    AnsiConsole.Write(table);
    if (generationEval is { LastAnswers.Count: > 0 })
        for (int i = 0; i < Math.Min(2, generationEval.LastAnswers.Count); i++)
        {
            // Plain writes: the console renderer re-wraps CJK text in markup.
            Console.WriteLine($"问：{evalExamples[i].Prompt}");
            if (answersBefore.Count > i) Console.WriteLine($"答（训练前）：{answersBefore[i]}");
            Console.WriteLine($"答（训练后）：{generationEval.LastAnswers[i]}");
            Console.WriteLine($"参考：{evalExamples[i].Response}");
            Console.WriteLine();
        }
    if (trainingMethod == TrainingMethod.Full)
        File.Copy(tokPath, Path.Combine(outDir, "tokenizer.model"), overwrite: true); // the folder is then a complete --model

    string chatModel = trainingMethod == TrainingMethod.Full ? outDir : Path.GetFullPath(modelDescription);
    string chat = trainingMethod switch
    {
        TrainingMethod.Lora => $"dotnet run --project samples/Chat -- --model \"{chatModel}\" --adapter \"{outDir}\"",
        TrainingMethod.PTuning => $"dotnet run --project samples/Chat -- --model \"{chatModel}\" --adapter \"{Path.Combine(outDir, ModelExport.PrefixFileName)}\"",
        _ => $"dotnet run --project samples/Chat -- --model \"{chatModel}\"",
    };
    AnsiConsole.MarkupLineInterpolated($"loss curve: {Path.Combine(outDir, "loss.png")}, per step: {Path.Combine(outDir, "loss.csv")}");
    if (random && trainingMethod != TrainingMethod.Full)
    {
        // An adapter over a random init that was never saved has no base to load it onto.
        AnsiConsole.MarkupLine("[grey](the base was a random init that is not saved, so there is nothing to chat with)[/]");
    }
    else
    {
        AnsiConsole.MarkupLine("talk to the result:");
        Console.WriteLine("  " + chat);
    }
    if (before.Step == 0 && after.Step == result.TotalSteps && !(after.Loss < before.Loss))
    {
        AnsiConsole.MarkupLine("[red]the evaluation loss did not improve[/]");
        return 2;
    }
    return 0;
}

static GlmConfig GlmConfigFor(string dir)
{
    string file = Path.Combine(dir, "config.json");
    if (!File.Exists(file)) throw new FileNotFoundException($"{dir}: no config.json (is --model a ChatGLM folder?)", file);
    return GlmConfig.FromJson(file);
}

static GlmConfig RandomConfig(string name, ChatGlmTokenizer tok)
{
    var (hidden, layers, heads) = name.ToLowerInvariant() switch
    {
        "tiny" => (128, 2, 4),
        "base" => (256, 3, 8),
        "small" => (256, 4, 8),
        "6b" => (4096, 28, 32),
        _ => throw new ArgumentException($"--config {name}: must be tiny, base, small or 6b"),
    };
    return new GlmConfig(tok.VocabSize, hidden, layers, heads, 4 * hidden, MaxSequenceLength: 2048,
        BosTokenId: tok.SopId, EosTokenId: tok.EopId, MaskTokenId: tok.MaskId, GMaskTokenId: tok.GMaskId,
        PadTokenId: tok.PadId >= 0 ? tok.PadId : 0, TorchDType: "float32").Validated($"--config {name}");
}
