// samples/Train — for now: trains a tiny ChatGLM-shaped model from scratch, on the CPU, on real medical Q&A,
// character-level. It exercises the whole engine: embedding, GLM blocks (2D rotary, prefix-LM attention, the
// α-scaled LayerNorm residual, GELU MLP), tied output head, cross-entropy on the answer only, AdamW with warmup and
// cosine decay, gradient clipping. The LoRA fine-tuning job of the DoctorGLM paper replaces it once the ChatGLM
// model and tokenizer land (see the issues).
using System.Diagnostics;
using DoctorGlm.Engine;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Optim;
using DoctorGlm.Samples.Train;
using Spectre.Console;

var options = TrainOptions.Parse(args);
if (options is null) return 1;

string dataPath = Path.Combine(AppContext.BaseDirectory, "data", "cmd-excerpt.tsv");
var pairs = File.ReadLines(dataPath).Skip(1).Select((line, i) =>
{
    var cols = line.Split('\t');
    if (cols.Length != 2) throw new InvalidDataException($"{dataPath}:{i + 2}: expected 2 tab-separated columns, found {cols.Length}");
    return (Question: cols[0], Answer: cols[1]);
}).ToList();
var vocab = CharVocab.Build(pairs.SelectMany(p => new[] { p.Question, p.Answer }), minCount: 2);
var eval = pairs.Take(40).ToList();
var train = pairs.Skip(40).ToList();

var config = new TinyGlmConfig(vocab.Count, Hidden: 96, Heads: 4, Layers: 2, Inner: 384);
using var model = new TinyGlm(config, new RandomGenerator(options.Seed));
AnsiConsole.MarkupLine($"[bold]DoctorGlm.Engine[/] — tiny GLM ({config.Layers} layers, hidden {config.Hidden}, {model.ParameterCount:N0} parameters), " +
                       $"{vocab.Count} characters, {train.Count} training / {eval.Count} evaluation dialogues, device cpu");

var batcher = new Batcher(vocab, maxQuestion: 24, maxAnswer: 64);
double evalBefore = Evaluate();
AnsiConsole.MarkupLine($"evaluation loss before training: [yellow]{evalBefore:F3}[/] (uniform guess: {Math.Log(vocab.Count):F3})");

using var optimizer = new AdamW(model.Parameters, lr: options.LearningRate, weightDecay: 0.01);
var schedule = LrSchedule.CosineWithWarmup(options.LearningRate, warmupSteps: options.Steps / 20, totalSteps: options.Steps);
var losses = new List<double>();
var order = new Random((int)options.Seed);
var clock = Stopwatch.StartNew();
long tokens = 0;

AnsiConsole.Progress()
    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
    .Start(ctx =>
    {
        var task = ctx.AddTask("training", maxValue: options.Steps);
        for (int step = 0; step < options.Steps; step++)
        {
            var batch = Enumerable.Range(0, options.BatchSize).Select(_ => train[order.Next(train.Count)]).ToList();
            using var scope = TensorScope.Begin();
            var inputs = batcher.Make(batch);
            var loss = model.Loss(inputs);
            loss.Backward();
            GradientClipping.ClipByGlobalNorm(model.Parameters.Select(p => p.Param), 1f);
            schedule.Apply(optimizer, step);
            optimizer.Step();
            optimizer.ZeroGrad();
            losses.Add(loss.Item());
            tokens += inputs.TokenCount;
            double avg = losses.TakeLast(20).Average();
            task.Description = $"step {step + 1}/{options.Steps}  loss {avg:F3}  {tokens / clock.Elapsed.TotalSeconds:N0} tok/s  mem {DoctorGlm.Engine.Backends.BackendRegistry.For(Device.Cpu).Memory.PeakBytes / 1048576.0:N0} MiB";
            task.Increment(1);
        }
    });

double evalAfter = Evaluate();
AnsiConsole.WriteLine();
AnsiConsole.Write(LossCurve.Render(losses));
AnsiConsole.MarkupLine($"evaluation loss: [yellow]{evalBefore:F3}[/] → [green]{evalAfter:F3}[/] in {clock.Elapsed.TotalSeconds:F0} s ({tokens / clock.Elapsed.TotalSeconds:N0} tokens/s)");
foreach (var (q, a) in eval.Take(3))
{
    string answer = model.Greedy(batcher, q, maxNew: 40);
    // Plain writes: CJK text in markup gets re-wrapped by the console renderer.
    Console.WriteLine($"问：{q}");
    Console.WriteLine($"答：{answer}");
    Console.WriteLine($"参考：{a[..Math.Min(40, a.Length)]}…");
    Console.WriteLine();
}
if (evalAfter >= evalBefore)
{
    AnsiConsole.MarkupLine("[red]evaluation loss did not improve[/]");
    return 2;
}
return 0;

double Evaluate()
{
    using var _ = GradMode.NoGrad();
    double sum = 0;
    int n = 0;
    foreach (var chunk in eval.Chunk(options.BatchSize))
    {
        using var scope = TensorScope.Begin();
        var inputs = batcher.Make(chunk);
        sum += model.Loss(inputs).Item() * inputs.LabelCount;
        n += inputs.LabelCount;
    }
    return sum / n;
}
