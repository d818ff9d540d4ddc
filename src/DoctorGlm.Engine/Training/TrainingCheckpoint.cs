using System.Globalization;
using System.Text.Json;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Optim;

namespace DoctorGlm.Engine.Training;

/// <summary>An evaluation result recorded during a run.</summary>
/// <param name="Step">Optimizer steps done when it was measured (0 = before training).</param>
/// <param name="Loss">Token-weighted mean cross-entropy on the evaluation set.</param>
public readonly record struct EvalRecord(int Step, double Loss);

/// <summary>What a checkpoint records besides the tensors: enough to continue a run bit-identically.</summary>
/// <param name="Step">Optimizer steps done (also the learning-rate schedule's position and, with the seed, the data position).</param>
/// <param name="TotalSteps">The run's planned optimizer steps.</param>
/// <param name="Method">lora, ptuning or full (a resume with another method is refused).</param>
/// <param name="DataSeed">Seed of the data order (each epoch's permutation is a function of it and the epoch).</param>
/// <param name="TrainSamples">Training sequences (a resume on other data is refused).</param>
/// <param name="BatchSize">Micro-batch size.</param>
/// <param name="GradientAccumulation">Micro-batches per step.</param>
/// <param name="Rng">The dropout generator's (seed, counter).</param>
/// <param name="History">Every completed step's record, in order.</param>
/// <param name="Evals">Evaluations so far.</param>
/// <param name="WeightDType">Storage type of the frozen base's weights ("float32", "bfloat16", "float16"; "int4+bfloat16"
/// for a base whose block linears are quantized): a resume with another is refused, since it would not continue the
/// same computation. Checkpoints written before it existed read as fp32.</param>
public sealed record TrainerState(
    int Step, int TotalSteps, string Method, ulong DataSeed, int TrainSamples, int BatchSize, int GradientAccumulation,
    (ulong Seed, ulong Counter) Rng, IReadOnlyList<StepRecord> History, IReadOnlyList<EvalRecord> Evals, string WeightDType = "float32");

/// <summary>
/// Training checkpoints: a folder <c>checkpoints/checkpoint-NNNNNN</c> under the run's output holding
/// <c>trainable.safetensors</c> (every trainable parameter, fp32, under its model name), <c>optimizer.safetensors</c>
/// (<see cref="Optimizer.SaveState"/>) and <c>trainer_state.json</c> (<see cref="TrainerState"/>). The folder is
/// written under a <c>.tmp</c> name and renamed only when complete, so a crash or an error mid-save never leaves a
/// checkpoint that looks usable but is partial; older checkpoints are removed after the rename.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>Sub-folder of the output folder that holds the checkpoints.</summary>
    public const string FolderName = "checkpoints";

    private const string Prefix = "checkpoint-";
    private const string TmpSuffix = ".tmp";
    private const string WeightsFile = "trainable.safetensors";
    private const string OptimizerFile = "optimizer.safetensors";
    private const string StateFile = "trainer_state.json";

    /// <summary>Writes a checkpoint of <paramref name="state"/> under <paramref name="outputDir"/> and returns its folder.</summary>
    public static string Save(string outputDir, IEnumerable<KeyValuePair<string, Tensor>> trainable, Optimizer optimizer, TrainerState state)
    {
        ArgumentNullException.ThrowIfNull(trainable);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(state);
        string root = Path.Combine(outputDir, FolderName);
        string final = Path.Combine(root, Prefix + state.Step.ToString("D6", CultureInfo.InvariantCulture));
        string tmp = final + TmpSuffix;
        Directory.CreateDirectory(root);
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        try
        {
            Directory.CreateDirectory(tmp);
            SafeTensorsFile.Save(Path.Combine(tmp, WeightsFile), trainable, new Dictionary<string, string> { ["format"] = "pt" });
            optimizer.SaveState(Path.Combine(tmp, OptimizerFile));
            AtomicFile.WriteAllText(Path.Combine(tmp, StateFile), StateToJson(state));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        catch
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
        // Only now that the new one is complete: drop the older ones (and stale temporaries of earlier crashes).
        foreach (var d in Directory.GetDirectories(root, Prefix + "*"))
            if (!string.Equals(Path.GetFullPath(d), Path.GetFullPath(final), StringComparison.Ordinal))
                try { Directory.Delete(d, recursive: true); } catch (IOException) { }
        return final;
    }

    /// <summary>The newest complete checkpoint folder under <paramref name="outputDir"/>, or null.</summary>
    public static string? FindLatest(string outputDir)
    {
        string root = Path.Combine(outputDir, FolderName);
        if (!Directory.Exists(root)) return null;
        return Directory.GetDirectories(root, Prefix + "*")
            .Where(d => !d.EndsWith(TmpSuffix, StringComparison.Ordinal) && File.Exists(Path.Combine(d, StateFile)))
            .Select(d => (Dir: d, Ok: int.TryParse(Path.GetFileName(d)[Prefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int s), Step: s))
            .Where(x => x.Ok).OrderByDescending(x => x.Step).Select(x => x.Dir).FirstOrDefault();
    }

    /// <summary>Reads only the <see cref="TrainerState"/> of a checkpoint folder.</summary>
    public static TrainerState ReadState(string checkpointDir) => StateFromJson(File.ReadAllText(Path.Combine(checkpointDir, StateFile)), Path.Combine(checkpointDir, StateFile));

    /// <summary>
    /// Restores a checkpoint: copies the stored weights into <paramref name="trainable"/> (the key sets and shapes must
    /// match exactly), loads the optimizer state and returns the trainer state. Errors name the file and key.
    /// </summary>
    public static TrainerState Load(string checkpointDir, IReadOnlyList<KeyValuePair<string, Tensor>> trainable, Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(trainable);
        ArgumentNullException.ThrowIfNull(optimizer);
        var state = ReadState(checkpointDir);
        string weights = Path.Combine(checkpointDir, WeightsFile);
        using (var f = SafeTensorsFile.Open(weights))
        {
            var names = trainable.Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
            foreach (var e in f.Entries)
                if (!names.Contains(e.Name)) throw new InvalidDataException($"{weights}: holds '{e.Name}', which this run does not train (another --method or model?)");
            // Validate every key before writing any, so a mismatching checkpoint leaves the model untouched.
            foreach (var (name, t) in trainable)
            {
                if (!f.Contains(name)) throw new InvalidDataException($"{weights}: trainable parameter '{name}' is missing");
                if (new Shape(f[name].Shape) != t.Shape) throw new InvalidDataException($"{weights}: '{name}' is {Shape.Format(f[name].Shape)}, the model's is {t.Shape}");
            }
            foreach (var (name, t) in trainable) f.ReadInto(name, t);
        }
        optimizer.LoadState(Path.Combine(checkpointDir, OptimizerFile));
        return state;
    }

    private static string StateToJson(TrainerState s)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("step", s.Step);
            w.WriteNumber("total_steps", s.TotalSteps);
            w.WriteString("method", s.Method);
            w.WriteString("weight_dtype", s.WeightDType);
            w.WriteNumber("data_seed", s.DataSeed);
            w.WriteNumber("train_samples", s.TrainSamples);
            w.WriteNumber("batch_size", s.BatchSize);
            w.WriteNumber("gradient_accumulation", s.GradientAccumulation);
            w.WriteNumber("rng_seed", s.Rng.Seed);
            w.WriteNumber("rng_counter", s.Rng.Counter);
            // Doubles as round-trip strings: NaN (no gradient norm) is not a JSON number.
            w.WriteStartArray("history");
            foreach (var r in s.History)
            {
                w.WriteStartArray();
                w.WriteNumberValue(r.Step);
                w.WriteStringValue(r.Loss.ToString("R", CultureInfo.InvariantCulture));
                w.WriteStringValue(r.LearningRate.ToString("R", CultureInfo.InvariantCulture));
                w.WriteStringValue(r.GradNorm.ToString("R", CultureInfo.InvariantCulture));
                w.WriteNumberValue(r.Tokens);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteStartArray("evals");
            foreach (var e in s.Evals)
            {
                w.WriteStartArray();
                w.WriteNumberValue(e.Step);
                w.WriteStringValue(e.Loss.ToString("R", CultureInfo.InvariantCulture));
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    private static TrainerState StateFromJson(string json, string file)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var o = doc.RootElement;
            static double D(JsonElement e) => double.Parse(e.GetString()!, NumberStyles.Float, CultureInfo.InvariantCulture);
            var history = o.GetProperty("history").EnumerateArray().Select(a =>
            {
                var v = a.EnumerateArray().ToArray();
                return new StepRecord(v[0].GetInt32(), D(v[1]), D(v[2]), D(v[3]), v[4].GetInt64());
            }).ToList();
            var evals = o.GetProperty("evals").EnumerateArray().Select(a =>
            {
                var v = a.EnumerateArray().ToArray();
                return new EvalRecord(v[0].GetInt32(), D(v[1]));
            }).ToList();
            return new TrainerState(o.GetProperty("step").GetInt32(), o.GetProperty("total_steps").GetInt32(), o.GetProperty("method").GetString()!,
                o.GetProperty("data_seed").GetUInt64(), o.GetProperty("train_samples").GetInt32(), o.GetProperty("batch_size").GetInt32(),
                o.GetProperty("gradient_accumulation").GetInt32(), (o.GetProperty("rng_seed").GetUInt64(), o.GetProperty("rng_counter").GetUInt64()), history, evals,
                o.TryGetProperty("weight_dtype", out var wd) ? wd.GetString()! : "float32");
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException or ArgumentNullException)
        {
            throw new InvalidDataException($"{file}: not a trainer state file: {e.Message}", e);
        }
    }
}
