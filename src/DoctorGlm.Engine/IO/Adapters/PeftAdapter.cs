using System.Text.Json;
using System.Text.RegularExpressions;
using static DoctorGlm.Engine.IO.Adapters.AdapterLoading;

namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>
/// HF PEFT <c>adapter_config.json</c> for LoRA (spec §9.2). Unknown fields are ignored on read; <see cref="EnableLora"/> and
/// <see cref="MergeWeights"/> only exist in PEFT ≤ 0.2.0 (MergedLinear); <see cref="LayersToTransform"/> from 0.4.
/// </summary>
public sealed record PeftLoraConfig
{
    /// <summary>r.</summary>
    public int R { get; init; } = 8;
    /// <summary>lora_alpha (s = alpha / r).</summary>
    public float LoraAlpha { get; init; } = 8;
    /// <summary>lora_dropout.</summary>
    public float LoraDropout { get; init; }
    /// <summary>target_modules (a single regex string is read as a one-element list).</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["query_key_value"];
    /// <summary>peft_type: "LORA".</summary>
    public string PeftType { get; init; } = "LORA";
    /// <summary>task_type, e.g. "CAUSAL_LM".</summary>
    public string? TaskType { get; init; } = "CAUSAL_LM";
    /// <summary>bias: only "none" is supported (no bias tensors in the file).</summary>
    public string Bias { get; init; } = "none";
    /// <summary>fan_in_fan_out as written; PEFT resets it to false for nn.Linear (ChatGLM's qkv), and so does this reader.</summary>
    public bool FanInFanOut { get; init; }
    /// <summary>inference_mode.</summary>
    public bool InferenceMode { get; init; } = true;
    /// <summary>base_model_name_or_path.</summary>
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>modules_to_save (not supported when non-empty: those would be full extra weights).</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    /// <summary>init_lora_weights.</summary>
    public bool InitLoraWeights { get; init; } = true;
    /// <summary>PEFT ≤ 0.2.0 enable_lora (null = plain LoRA over all rows).</summary>
    public IReadOnlyList<bool>? EnableLora { get; init; }
    /// <summary>PEFT ≤ 0.2.0 merge_weights.</summary>
    public bool MergeWeights { get; init; }
    /// <summary>layers_to_transform (null = all layers).</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>revision.</summary>
    public string? Revision { get; init; }
}

/// <summary>
/// Reads and writes HF PEFT LoRA adapters for ChatGLM's <c>attention.query_key_value</c>: <c>adapter_config.json</c> plus
/// <c>adapter_model.safetensors</c> (written; read preferred) or <c>adapter_model.bin</c> (read). Keys are exactly
/// <c>base_model.model.transformer.layers.{i}.attention.query_key_value.lora_A.weight</c> [r, in] and <c>….lora_B.weight</c>
/// [out, r]; PEFT ≤ 0.2.0's MergedLinear form (enable_lora, lora_A [r·g, in], lora_B Conv1d [out', r, 1]) is read too.
/// </summary>
public static partial class PeftAdapter
{
    /// <summary>The config file name.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>The weights file this writer produces (PEFT ≥ 0.7's default).</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>The saved key of layer <paramref name="layer"/>'s lora_A.</summary>
    public static string KeyA(int layer) => $"base_model.model.transformer.layers.{layer}.attention.query_key_value.lora_A.weight";

    /// <summary>The saved key of layer <paramref name="layer"/>'s lora_B.</summary>
    public static string KeyB(int layer) => $"base_model.model.transformer.layers.{layer}.attention.query_key_value.lora_B.weight";

    [GeneratedRegex(@"^base_model\.model\.transformer\.layers\.(\d+)\.attention\.query_key_value\.lora_(A|B)\.weight$", RegexOptions.CultureInvariant)]
    private static partial Regex KeyPattern();

    /// <summary>Reads <c>adapter_config.json</c> (a file, or the folder holding it). Unknown fields are ignored.</summary>
    public static PeftLoraConfig ReadConfig(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, ConfigFileName) : path;
        using var doc = ReadJson(file);
        var o = doc.RootElement;
        if (o.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{file}: not a JSON object");
        return new PeftLoraConfig
        {
            R = Int(file, o, "r"),
            LoraAlpha = Float(file, o, "lora_alpha", 8),
            LoraDropout = Float(file, o, "lora_dropout", 0),
            TargetModules = Strings(file, o, "target_modules") ?? throw new InvalidDataException($"{file}: 'target_modules' is missing"),
            PeftType = String(file, o, "peft_type") ?? "LORA",
            TaskType = String(file, o, "task_type"),
            Bias = String(file, o, "bias") ?? "none",
            FanInFanOut = Bool(file, o, "fan_in_fan_out", false),
            InferenceMode = Bool(file, o, "inference_mode", false),
            BaseModelNameOrPath = String(file, o, "base_model_name_or_path"),
            ModulesToSave = Strings(file, o, "modules_to_save"),
            // Later PEFT versions also allow a string ("gaussian", "pissa", …): anything but false means "initialised".
            InitLoraWeights = o.TryGetProperty("init_lora_weights", out var iw) ? iw.ValueKind != JsonValueKind.False : true,
            EnableLora = Bools(file, o, "enable_lora"),
            MergeWeights = Bool(file, o, "merge_weights", false),
            LayersToTransform = Ints(file, o, "layers_to_transform"),
            Revision = String(file, o, "revision"),
        };
    }

    /// <summary>Writes <paramref name="config"/> as PEFT would (snake_case fields, nulls included).</summary>
    public static void WriteConfig(string file, PeftLoraConfig config)
    {
        using var fs = new FileStream(file, FileMode.Create, FileAccess.Write);
        using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        WriteStringOrNull(w, "base_model_name_or_path", config.BaseModelNameOrPath);
        w.WriteString("bias", config.Bias);
        if (config.EnableLora is null) w.WriteNull("enable_lora");
        else { w.WriteStartArray("enable_lora"); foreach (var b in config.EnableLora) w.WriteBooleanValue(b); w.WriteEndArray(); }
        w.WriteBoolean("fan_in_fan_out", config.FanInFanOut);
        w.WriteBoolean("inference_mode", config.InferenceMode);
        w.WriteBoolean("init_lora_weights", config.InitLoraWeights);
        if (config.LayersToTransform is null) w.WriteNull("layers_to_transform");
        else { w.WriteStartArray("layers_to_transform"); foreach (var l in config.LayersToTransform) w.WriteNumberValue(l); w.WriteEndArray(); }
        w.WriteNumber("lora_alpha", config.LoraAlpha);
        w.WriteNumber("lora_dropout", config.LoraDropout);
        w.WriteBoolean("merge_weights", config.MergeWeights);
        WriteStrings(w, "modules_to_save", config.ModulesToSave);
        w.WriteString("peft_type", config.PeftType);
        w.WriteNumber("r", config.R);
        WriteStringOrNull(w, "revision", config.Revision);
        WriteStrings(w, "target_modules", config.TargetModules);
        WriteStringOrNull(w, "task_type", config.TaskType);
        w.WriteEndObject();
    }

    private static void WriteStringOrNull(Utf8JsonWriter w, string name, string? v)
    {
        if (v is null) w.WriteNull(name); else w.WriteString(name, v);
    }

    private static void WriteStrings(Utf8JsonWriter w, string name, IReadOnlyList<string>? v)
    {
        if (v is null) { w.WriteNull(name); return; }
        w.WriteStartArray(name);
        foreach (var s in v) w.WriteStringValue(s);
        w.WriteEndArray();
    }

    /// <summary>
    /// Loads a PEFT adapter folder. Every key must be a query_key_value lora_A/lora_B key in PEFT's exact form (anything else,
    /// a missing partner, a layer outside [0, NumLayers) or a shape that disagrees with r, enable_lora or the model throws
    /// <see cref="InvalidDataException"/> naming the file and key). Returns all layers or nothing.
    /// </summary>
    /// <param name="folder">The folder with adapter_config.json and adapter_model.safetensors / .bin.</param>
    /// <param name="expect">The base model's dimensions, when known.</param>
    /// <param name="dtype">Convert the weights to this float type (default: as stored).</param>
    /// <param name="device">Where to put them (default: CPU).</param>
    public static LoraAdapterData Load(string folder, AdapterExpectations? expect = null, DType? dtype = null, Device? device = null)
    {
        var config = ReadConfig(folder);
        string cfgFile = Path.Combine(folder, ConfigFileName);
        if (!string.Equals(config.PeftType, "LORA", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"{cfgFile}: peft_type is '{config.PeftType}', not LORA");
        CheckLoraScope(cfgFile, config.Bias, config.ModulesToSave, config.TargetModules);
        CheckModelConfig(folder, expect);

        string weights = WeightsFile(folder);
        using var src = CheckpointReader.OpenFile(weights);
        var keys = LayerKeys(src, weights, KeyPattern(), $"'{KeyA(0).Replace(".0.", ".{i}.")}' and '….lora_B.weight' (a PEFT query_key_value adapter)");
        return Build(src, weights, keys, config.R, config.LoraAlpha, config.LoraDropout, config.EnableLora?.ToArray(), expect, dtype, device,
            config.LayersToTransform?.ToArray());
    }

    /// <summary>
    /// Saves <paramref name="adapter"/> as a PEFT ≥ 0.3 adapter folder: <c>adapter_config.json</c> and
    /// <c>adapter_model.safetensors</c> with PEFT's exact key names (written atomically). Grouped (MergedLinear) adapters
    /// are refused: PEFT ≥ 0.3 has no enable_lora, and a file it would misread is worse than none.
    /// </summary>
    /// <param name="folder">Created if needed.</param>
    /// <param name="adapter">The weights (any float dtype; stored as they are).</param>
    /// <param name="baseModelNameOrPath">base_model_name_or_path to record.</param>
    public static void Save(string folder, LoraAdapterData adapter, string? baseModelNameOrPath = "THUDM/chatglm-6b")
    {
        if (adapter.Grouped)
            throw new InvalidOperationException($"{adapter.Source}: a grouped (enable_lora [{string.Join(", ", adapter.EnableLora)}]) adapter cannot be saved in the PEFT ≥ 0.3 format");
        Directory.CreateDirectory(folder);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (layer, l) in adapter.Layers.OrderBy(kv => kv.Key))
        {
            tensors.Add(new(KeyA(layer), l.A));
            tensors.Add(new(KeyB(layer), l.B));
        }
        SafeTensorsFile.Save(Path.Combine(folder, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        WriteConfig(Path.Combine(folder, ConfigFileName), new PeftLoraConfig
        {
            R = adapter.Rank,
            LoraAlpha = adapter.Alpha,
            LoraDropout = adapter.Dropout,
            BaseModelNameOrPath = baseModelNameOrPath,
        });
    }
}
