using System.CommandLine;
using DoctorGlm.Engine;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;
using DoctorGlm.Engine.Training;
using Spectre.Console;

namespace DoctorGlm.Samples.Chat;

/// <summary>
/// The Chat sample: loads a ChatGLM model folder and either answers one <c>--prompt</c> or runs an interactive,
/// streaming conversation (<c>/clear</c>, <c>/history</c>, <c>/exit</c>).
/// </summary>
public static class ChatApp
{
    /// <summary>Where the Train sample's default run leaves its result (a LoRA adapter whose adapter_config.json names
    /// its base model folder, or a full model), relative to the folder it was run from.</summary>
    public const string TrainOutput = "out/train";

    /// <summary>Runs the app with <paramref name="args"/>, writing to <paramref name="output"/> and reading
    /// interactive input from <paramref name="input"/>. Returns the process exit code.</summary>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="output">Where answers and messages go.</param>
    /// <param name="input">Interactive input (none: end of input).</param>
    /// <param name="searchRoots">Folders from which the default model (<see cref="TrainOutput"/>) is looked up,
    /// upwards; null = the working directory and the app's folder.</param>
    public static int Run(string[] args, TextWriter output, TextReader? input = null, IReadOnlyList<string>? searchRoots = null) =>
        RunAsync(args, output, input ?? TextReader.Null, searchRoots: searchRoots).GetAwaiter().GetResult();

    /// <summary>Asynchronous <see cref="Run"/>.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextReader input, CancellationToken cancellationToken = default,
        IReadOnlyList<string>? searchRoots = null)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(input);
        var model = new Option<DirectoryInfo?>("--model", "-m") { Description = $"HF model folder (config.json, model.safetensors / pytorch_model*.bin, ice_text.model); default: {TrainOutput}" };
        var tokenizer = new Option<FileInfo?>("--tokenizer") { Description = "SentencePiece tokenizer (default: MODEL/ice_text.model, else MODEL/tokenizer.model)" };
        var prompt = new Option<string?>("--prompt", "-p") { Description = "answer this one question and exit" };
        var greedy = new Option<bool>("--greedy") { Description = "arg-max decoding instead of sampling" };
        var maxLength = new Option<int>("--max-length") { Description = "total tokens, prompt included", DefaultValueFactory = _ => 2048 };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling threshold", DefaultValueFactory = _ => 0.7f };
        var temperature = new Option<float>("--temperature") { Description = "sampling temperature", DefaultValueFactory = _ => 0.95f };
        var topK = new Option<int>("--top-k") { Description = "keep the k best tokens (0: off)", DefaultValueFactory = _ => 50 };
        var penalty = new Option<float>("--repetition-penalty") { Description = "CTRL repetition penalty (1: off; DoctorGLM used 10)", DefaultValueFactory = _ => 1f };
        var seed = new Option<ulong?>("--seed") { Description = "sampling seed (default: random)" };
        var device = new Option<string>("--device") { Description = "cpu, cuda, cuda:N or auto", DefaultValueFactory = _ => "cpu" };
        var adapter = new Option<string?>("--adapter") { Description = "LoRA adapter folder (HF PEFT or DoctorGLM's deep_training format, detected) or P-Tuning v2 checkpoint (pytorch_model.bin / .safetensors, or its folder)" };
        var quantize = new Option<int?>("--quantize") { Description = "8 or 4: ChatGLM's weight-only INT8/INT4 quantization of the block linears, one weight at a time while loading (a LoRA adapter is merged first)" };
        var save = new Option<DirectoryInfo?>("--save") { Description = "write the model as loaded (LoRA adapter merged, --quantize applied) to this folder as a Hugging Face folder with its tokenizer, and exit; --model DIR then loads it directly" };
        var questions = new Option<FileInfo?>("--questions") { Description = "answer every non-empty line of this UTF-8 file (one question each, no history), decoded together in batches, and exit; one JSON line {\"question\", \"answer\"} per question, in order" };
        var answers = new Option<FileInfo?>("--answers") { Description = "with --questions: write the JSON lines to this file (atomically, when all are answered) instead of the output" };
        var batch = new Option<int>("--batch") { Description = "with --questions: most questions decoded together; a waiting one takes a row as soon as an answer ends (each answer is the one the question gets alone)", DefaultValueFactory = _ => 8 };
        var merge = new Option<bool>("--merge") { Description = "fold the LoRA adapter into the weights (faster decoding; same answers)" };
        var dtype = new Option<string>("--dtype") { Description = "auto, fp32, bf16 or fp16: storage type of the weight matrices (16 bits halve their memory; computation stays fp32 on the CPU, tensor cores on the GPU); auto: fp32, but bf16 beside INT8/INT4 block linears (--quantize or a pre-quantized model), as THUDM's quantized checkpoints keep the embedding in 16 bits", DefaultValueFactory = _ => "auto" };

        var root = new RootCommand("DoctorGlm.Chat — chat with a ChatGLM model (spec §7 generation, streamed).")
        {
            model, tokenizer, prompt, greedy, maxLength, topP, temperature, topK, penalty, seed, device, dtype, adapter, merge, quantize, save,
            questions, answers, batch,
        };
        int exit = 0;
        root.SetAction(async (parse, ct) =>
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(output),
                Ansi = ReferenceEquals(output, Console.Out) ? AnsiSupport.Detect : AnsiSupport.No,
                ColorSystem = ReferenceEquals(output, Console.Out) ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
                Interactive = InteractionSupport.No,
            });
            // A redirected writer has no width; Spectre would otherwise wrap markup lines at 80 columns.
            if (!ReferenceEquals(output, Console.Out) || Console.IsOutputRedirected) console.Profile.Width = 4096;
            var options = new GenerationOptions
            {
                DoSample = !parse.GetValue(greedy),
                MaxLength = parse.GetValue(maxLength),
                TopP = parse.GetValue(topP),
                Temperature = parse.GetValue(temperature),
                TopK = parse.GetValue(topK),
                RepetitionPenalty = parse.GetValue(penalty),
                Seed = parse.GetValue(seed),
            };
            exit = await ExecuteAsync(console, output, input, searchRoots, parse.GetValue(model), parse.GetValue(tokenizer), parse.GetValue(prompt),
                parse.GetValue(device)!, parse.GetValue(dtype)!, parse.GetValue(adapter), parse.GetValue(merge), parse.GetValue(quantize), parse.GetValue(save), options,
                new BatchJob(parse.GetValue(questions), parse.GetValue(answers), parse.GetValue(batch)), ct).ConfigureAwait(false);
            return exit;
        });
        var result = root.Parse(args);
        int code = await result.InvokeAsync(new InvocationConfiguration { Output = output, Error = output }, cancellationToken).ConfigureAwait(false);
        return code != 0 ? code : exit;
    }

    private static async Task<int> ExecuteAsync(IAnsiConsole console, TextWriter output, TextReader input, IReadOnlyList<string>? searchRoots, DirectoryInfo? modelDir, FileInfo? tokenizerFile,
        string? prompt, string deviceSpec, string dtypeName, string? adapterPath, bool merge, int? quantize, DirectoryInfo? saveDir, GenerationOptions options,
        BatchJob job, CancellationToken ct)
    {
        DType weightDType;
        (int Line, string Text)[]? questionLines = null;
        try
        {
            options.Validate();
            weightDType = TrainerOptions.ParseWeightDType(dtypeName, quantize ?? 0, modelFolder: null); // checked here, resolved below
            if (job.Batch < 1) throw new ArgumentException($"--batch {job.Batch}: must be at least 1");
            if (job.Answers is not null && job.Questions is null) throw new ArgumentException("--answers needs --questions");
            if (job.Questions is not null)
            {
                if (prompt is not null) throw new ArgumentException("--questions and --prompt exclude each other");
                if (!job.Questions.Exists) throw new ArgumentException($"--questions {job.Questions.FullName}: the file does not exist");
                questionLines = [.. File.ReadAllLines(job.Questions.FullName).Select((l, i) => (Line: i + 1, Text: l.Trim())).Where(q => q.Text.Length > 0)];
                if (questionLines.Length == 0) throw new ArgumentException($"--questions {job.Questions.FullName}: the file holds no question");
            }
        }
        catch (ArgumentException e) { console.MarkupLineInterpolated($"[red]error:[/] {e.Message}"); return 2; }

        string? dir = modelDir?.FullName ?? FindTrainOutput(searchRoots ?? [Directory.GetCurrentDirectory(), AppContext.BaseDirectory]);
        if (dir is null)
        {
            console.MarkupLine($"[red]No --model given and no {TrainOutput} folder found.[/]");
            console.MarkupLine($"Train a model first with [bold]dotnet run --project samples/Train[/] (it writes {TrainOutput}), " +
                               "or pass [bold]--model DIR[/] with an HF ChatGLM folder: config.json, model.safetensors or pytorch_model*.bin, ice_text.model.");
            return 1;
        }
        if (!Directory.Exists(dir)) { console.MarkupLineInterpolated($"[red]error:[/] model folder {dir} does not exist"); return 1; }
        if (modelDir is null && !File.Exists(Path.Combine(dir, "config.json")))
        {
            // The Train sample's default output is a LoRA adapter: its adapter_config.json names the base model folder.
            string? baseDir = BaseModelOf(dir);
            if (baseDir is null)
            {
                console.MarkupLineInterpolated($"[red]error:[/] {dir} holds an adapter whose base model folder is unknown; pass --model BASE --adapter {dir}");
                return 1;
            }
            adapterPath ??= dir;
            dir = baseDir;
            console.MarkupLineInterpolated($"[grey]model {dir} with the adapter trained in {adapterPath}[/]");
        }
        string? tokPath = tokenizerFile?.FullName ?? ChatGlmTokenizer.FindModelFile(dir);
        if (tokPath is null || !File.Exists(tokPath))
        {
            console.MarkupLineInterpolated($"[red]error:[/] no tokenizer: {(tokPath ?? Path.Combine(dir, "ice_text.model"))} not found (pass --tokenizer FILE)");
            return 1;
        }

        weightDType = TrainerOptions.ParseWeightDType(dtypeName, quantize ?? 0, dir); // auto: bf16 beside a pre-quantized folder's linears too

        Device device;
        GlmModel model;
        ChatGlmTokenizer tok;
        try
        {
            device = DeviceSelector.Resolve(deviceSpec, out string? note);
            if (note is not null) console.MarkupLineInterpolated($"[grey]{note}[/]");
            if (quantize is not null and not (8 or 4)) throw new ArgumentException($"--quantize {quantize}: use 8 or 4");
            if (merge && adapterPath is null) throw new ArgumentException("--merge needs --adapter");
            if (saveDir is not null && adapterPath is not null && !IsLoraAdapter(adapterPath))
                throw new ArgumentException($"--save writes the base model, and a P-Tuning prefix is not part of it: save without --adapter and keep passing --adapter {adapterPath}");
            merge |= saveDir is not null; // a saved model carries its LoRA adapter merged
            if (quantize is int bits)
            {
                // Quantized (and a LoRA adapter merged) one weight at a time as the checkpoint is read: ChatGLM-6B's
                // fp16 checkpoint never exists in memory as a whole, only the INT8/INT4 model does.
                string? lora = adapterPath is not null && IsLoraAdapter(adapterPath) ? adapterPath : null;
                model = Load(output, dir, new GlmLoadOptions { WeightDType = weightDType, QuantizeBits = bits, MergeLoraAdapter = lora }, device);
                if (lora is not null) console.MarkupLineInterpolated($"[grey]LoRA adapter {lora}: merged while loading[/]");
                console.MarkupLineInterpolated($"[grey]weights quantized to INT{bits} while loading[/]");
            }
            else model = Load(output, dir, new GlmLoadOptions { WeightDType = weightDType }, device);
            try
            {
                tok = ChatGlmTokenizer.Load(tokPath, model.Config.NumImageTokens);
                if (adapterPath is not null && !(quantize is not null && IsLoraAdapter(adapterPath))) AttachAdapter(console, model, adapterPath, merge);
            }
            catch { model.Dispose(); throw; }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or InvalidOperationException or ArgumentException or NotSupportedException)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
            return 1;
        }

        using (model)
        {
            if (saveDir is not null) return Save(console, model, tokPath, saveDir.FullName);
            GlmChat chat;
            try { chat = new GlmChat(model, tok); }
            catch (ArgumentException e) { console.MarkupLineInterpolated($"[red]error:[/] {e.Message}"); return 1; }
            console.MarkupLineInterpolated($"[grey]ChatGLM: {model.Config.NumLayers} layers, hidden {model.Config.HiddenSize}, vocabulary {model.Config.VocabSize}, {model.Config.ParameterCount:N0} parameters ({model.BaseParameterBytes / 1048576.0:N1} MiB of {model.WeightDType} weights{(model.IsQuantized ? $", block linears in INT{model.QuantizationBits}" : "")}) on {device}; {(options.DoSample ? $"sampling (T {options.Temperature}, top-k {options.TopK}, top-p {options.TopP})" : "greedy")}, max length {options.MaxLength}[/]");
            var session = new ChatSession(chat, options);
            if (prompt is not null) return await AnswerAsync(session, prompt, output, console, ct).ConfigureAwait(false) ? 0 : 1;
            if (questionLines is not null) return AnswerAll(console, output, chat, questionLines, job, options, ct);

            console.MarkupLine("Type a question. Commands: [bold]/clear[/] forget the conversation, [bold]/history[/] show it, [bold]/exit[/] quit.");
            while (!ct.IsCancellationRequested)
            {
                console.Markup("[bold green]用户:[/] ");
                string? line = await input.ReadLineAsync(ct).ConfigureAwait(false);
                if (line is null) { console.WriteLine(); break; }
                line = line.Trim();
                if (line.Length == 0) continue;
                switch (line)
                {
                    case "/exit" or "/quit":
                        return 0;
                    case "/clear":
                        session.Clear();
                        console.MarkupLine("[grey](conversation cleared)[/]");
                        continue;
                    case "/history":
                        if (session.History.Count == 0) console.MarkupLine("[grey](no history)[/]");
                        for (int i = 0; i < session.History.Count; i++)
                        {
                            console.MarkupLineInterpolated($"[grey][[Round {i}]][/] [green]问：[/]{session.History[i].Query}");
                            console.MarkupLineInterpolated($"          [blue]答：[/]{session.History[i].Response}");
                        }
                        continue;
                }
                if (line.StartsWith('/')) { console.MarkupLineInterpolated($"[yellow]unknown command {line}[/] (/clear, /history, /exit)"); continue; }
                await AnswerAsync(session, line, output, console, ct).ConfigureAwait(false);
            }
            return 0;
        }
    }

    /// <summary>The existing folder named by base_model_name_or_path in an adapter folder's adapter_config.json, if any.</summary>
    private static string? BaseModelOf(string adapterDir)
    {
        string file = Path.Combine(adapterDir, "adapter_config.json");
        if (!File.Exists(file)) return null;
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
        return doc.RootElement.TryGetProperty("base_model_name_or_path", out var b) && b.ValueKind == System.Text.Json.JsonValueKind.String
               && Directory.Exists(b.GetString()) && File.Exists(Path.Combine(b.GetString()!, "config.json"))
            ? b.GetString() : null;
    }

    /// <summary>
    /// Loads the model folder, with a progress bar (GB read of the checkpoint) when the output is a live terminal:
    /// ChatGLM-6B takes tens of seconds, longer when quantized while loading.
    /// </summary>
    private static GlmModel Load(TextWriter output, string dir, GlmLoadOptions options, Device device)
    {
        if (!ReferenceEquals(output, Console.Out) || Console.IsOutputRedirected) return GlmModel.FromPretrained(dir, options, device);
        return AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))}", maxValue: 1);
                // Progress<T> reports on the thread pool, possibly out of order: the bar only moves forward.
                var progress = new Progress<GlmLoadProgress>(p =>
                {
                    task.MaxValue = Math.Max(1, p.TotalBytes);
                    task.Value = Math.Max(task.Value, p.Bytes);
                    task.Description = $"loading {p.Bytes / 1048576.0:N0} of {p.TotalBytes / 1048576.0:N0} MiB{(options.QuantizeBits != 0 ? $", quantizing to INT{options.QuantizeBits}" : "")}";
                });
                return GlmModel.FromPretrained(dir, options with { Progress = progress }, device);
            });
    }

    /// <summary>--save: the model as loaded, and its tokenizer under the same file name, into <paramref name="dir"/>.</summary>
    private static int Save(IAnsiConsole console, GlmModel model, string tokenizerPath, string dir)
    {
        try
        {
            model.SavePretrained(dir);
            File.Copy(tokenizerPath, Path.Combine(dir, Path.GetFileName(tokenizerPath)), overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            console.MarkupLineInterpolated($"[red]error:[/] cannot save to {dir}: {e.Message}");
            return 1;
        }
        long bytes = new DirectoryInfo(dir).EnumerateFiles().Sum(f => f.Length);
        console.MarkupLineInterpolated($"saved {dir} ({bytes / 1048576.0:N1} MiB{(model.IsQuantized ? $", INT{model.QuantizationBits}" : "")}); chat with it: [bold]--model {dir}[/]");
        return 0;
    }

    /// <summary>A LoRA adapter folder (PEFT or DoctorGLM's), as opposed to a P-Tuning checkpoint.</summary>
    private static bool IsLoraAdapter(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, "adapter_config.json"));

    /// <summary>Attaches a LoRA adapter (folder with adapter_config.json) or a P-Tuning v2 prefix (file or folder).</summary>
    private static void AttachAdapter(IAnsiConsole console, GlmModel model, string path, bool merge)
    {
        if (IsLoraAdapter(path))
        {
            var lora = model.LoadLoraAdapter(path);
            if (merge) model.MergeLora();
            console.MarkupLineInterpolated($"[grey]LoRA adapter {path}: rank {lora.Settings.Rank}, alpha {lora.Settings.Alpha}{(lora.Settings.EnableLora is null ? "" : ", grouped (DoctorGLM)")}{(merge ? ", merged" : "")}[/]");
            return;
        }
        if (merge && Directory.Exists(path)) throw new ArgumentException($"--merge applies to LoRA adapters; {path} has no adapter_config.json");
        var prefix = model.LoadPrefixEncoder(path);
        console.MarkupLineInterpolated($"[grey]P-Tuning v2 prefix {path}: {prefix.Length} virtual tokens[/]");
    }

    /// <summary>What <c>--questions</c> asks: the file, where the answers go, and how many questions share a batch.</summary>
    private sealed record BatchJob(FileInfo? Questions, FileInfo? Answers, int Batch);

    /// <summary>
    /// <c>--questions</c>: every question answered on its own (no history), up to <see cref="BatchJob.Batch"/> at a
    /// time through <see cref="GlmBatchScheduler"/>, each answer a JSON line {question, answer} in the file's order,
    /// with a progress bar on a live terminal.
    /// </summary>
    private static int AnswerAll(IAnsiConsole console, TextWriter output, GlmChat chat, (int Line, string Text)[] numbered, BatchJob job, GenerationOptions options, CancellationToken ct)
    {
        // A question too long for MaxLength is refused before anything is decoded, naming its line.
        foreach (var (line, text) in numbered)
        {
            int tokens = chat.EncodePrompt(text).Length;
            if (tokens >= options.MaxLength)
            {
                console.MarkupLineInterpolated($"[red]error:[/] {job.Questions!.FullName}:{line}: the question is {tokens} tokens, not fewer than --max-length {options.MaxLength}");
                return 2;
            }
        }
        var questions = numbered.Select(q => q.Text).ToArray();
        var json = new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        var lines = new List<string>(questions.Length);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        void Answer(Action<int>? advance)
        {
            // Continuous batching: every question is queued at once and a new one takes a row as soon as an answer
            // ends, so the batch stays full (a fixed chunk would wait for its longest answer).
            var scheduler = new GlmBatchScheduler(chat, job.Batch);
            try
            {
                var pending = questions.Select(q => scheduler.ChatAsync(q, null, options, ct)).ToArray();
                for (int i = 0; i < questions.Length; i++)
                {
                    string answer = pending[i].GetAwaiter().GetResult(); // in order; later ones keep decoding meanwhile
                    string line = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["question"] = questions[i], ["answer"] = answer }, json);
                    lines.Add(line);
                    if (job.Answers is null) output.WriteLine(line);
                    advance?.Invoke(1);
                }
            }
            finally { scheduler.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
        }
        try
        {
            if (job.Answers is not null && !Console.IsOutputRedirected && ReferenceEquals(output, Console.Out))
                AnsiConsole.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask("answering", maxValue: questions.Length);
                    Answer(n => task.Increment(n));
                });
            else Answer(null);
        }
        catch (OperationCanceledException)
        {
            console.MarkupLineInterpolated($"[yellow]stopped after {lines.Count} of {questions.Length} answers[/]");
            return 1;
        }
        if (job.Answers is not null)
        {
            DoctorGlm.Engine.IO.AtomicFile.WriteAllText(job.Answers.FullName, string.Join("\n", lines) + "\n");
            console.MarkupLineInterpolated($"[grey]{lines.Count} answers in {clock.Elapsed.TotalSeconds:F1} s (batches of {job.Batch}) written to {job.Answers.FullName}[/]");
        }
        return 0;
    }

    /// <summary>Streams one answer; deltas go to the raw writer so Spectre's line wrapping does not cut them.</summary>
    private static async Task<bool> AnswerAsync(ChatSession session, string query, TextWriter output, IAnsiConsole console, CancellationToken ct)
    {
        console.Markup("[bold blue]ChatGLM:[/] ");
        try
        {
            await foreach (var delta in session.AskStreaming(query, ct).ConfigureAwait(false))
            {
                await output.WriteAsync(delta).ConfigureAwait(false);
                await output.FlushAsync(ct).ConfigureAwait(false);
            }
            await output.WriteLineAsync().ConfigureAwait(false);
            return true;
        }
        catch (ArgumentException e)
        {
            // e.g. the conversation outgrew --max-length: say so and keep the session usable.
            await output.WriteLineAsync().ConfigureAwait(false);
            console.MarkupLineInterpolated($"[red]error:[/] {e.Message} (use /clear or a larger --max-length)");
            return false;
        }
    }

    /// <summary>The Train sample's output folder, looked up from the working directory and the app's folder upwards.</summary>
    private static string? FindTrainOutput(IReadOnlyList<string> roots)
    {
        foreach (var start in roots)
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, TrainOutput.Replace('/', Path.DirectorySeparatorChar));
                if (File.Exists(Path.Combine(p, "config.json")) || File.Exists(Path.Combine(p, "adapter_config.json"))) return p;
            }
        return null;
    }
}
