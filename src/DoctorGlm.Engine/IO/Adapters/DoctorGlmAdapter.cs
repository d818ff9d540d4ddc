using System.Text.Json;
using static DoctorGlm.Engine.IO.Adapters.AdapterLoading;

namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>
/// DoctorGLM's <c>adapter_config.json</c> in the deep_training 0.1.0 format (spec §9.1) — not PEFT's.
/// </summary>
public sealed record DeepTrainingLoraConfig
{
    /// <summary>r (per enabled group).</summary>
    public int R { get; init; }
    /// <summary>lora_alpha (DoctorGLM: 16 with r 8, s = 2).</summary>
    public float LoraAlpha { get; init; }
    /// <summary>lora_dropout.</summary>
    public float LoraDropout { get; init; }
    /// <summary>target_modules.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["query_key_value"];
    /// <summary>enable_lora per output block (DoctorGLM: [true, false, true]); null = infer from the weights.</summary>
    public IReadOnlyList<bool>? EnableLora { get; init; }
    /// <summary>fan_in_fan_out as written (DoctorGLM: true). deep_training resets it to false for nn.Linear, so it is ignored.</summary>
    public bool FanInFanOutAsWritten { get; init; }
    /// <summary>Effective fan_in_fan_out: always false for ChatGLM's nn.Linear query_key_value.</summary>
    public bool FanInFanOut => false;
    /// <summary>merge_weights.</summary>
    public bool MergeWeights { get; init; }
    /// <summary>bias.</summary>
    public string Bias { get; init; } = "none";
    /// <summary>modules_to_save.</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    /// <summary>inference_mode.</summary>
    public bool InferenceMode { get; init; }
    /// <summary>with_lora.</summary>
    public bool WithLora { get; init; } = true;
    /// <summary>target_dtype ("16": the LoRA weights were fp16).</summary>
    public string? TargetDType { get; init; }
    /// <summary>lora_model_name_or_path.</summary>
    public string? LoraModelNameOrPath { get; init; }
}

/// <summary>
/// Reads DoctorGLM's LoRA adapter (deep_training 0.1.0, loralib MergedLinear on query_key_value): keys are matched by the
/// suffix <c>layers.{i}.attention.query_key_value.lora_{A|B}</c> (with or without <c>.weight</c>, whatever the wrapper
/// prefix — spec §9.1 marks the exact prefix UNSURE), and the grouped form is recognised from lora_B's rows (⅔ of 3H).
/// </summary>
public static class DoctorGlmAdapter
{
    /// <summary>Reads a deep_training <c>adapter_config.json</c> (file or folder). Unknown fields are ignored.</summary>
    public static DeepTrainingLoraConfig ReadConfig(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "adapter_config.json") : path;
        using var doc = ReadJson(file);
        var o = doc.RootElement;
        if (o.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{file}: not a JSON object");
        return new DeepTrainingLoraConfig
        {
            R = Int(file, o, "r"),
            LoraAlpha = Float(file, o, "lora_alpha"),
            LoraDropout = Float(file, o, "lora_dropout", 0),
            TargetModules = Strings(file, o, "target_modules") ?? ["query_key_value"],
            EnableLora = Bools(file, o, "enable_lora"),
            FanInFanOutAsWritten = Bool(file, o, "fan_in_fan_out", false),
            MergeWeights = Bool(file, o, "merge_weights", false),
            Bias = String(file, o, "bias") ?? "none",
            ModulesToSave = Strings(file, o, "modules_to_save"),
            InferenceMode = Bool(file, o, "inference_mode", false),
            WithLora = Bool(file, o, "with_lora", true),
            TargetDType = o.TryGetProperty("target_dtype", out var td) && td.ValueKind != JsonValueKind.Null ? (td.ValueKind == JsonValueKind.String ? td.GetString() : td.GetRawText()) : null,
            LoraModelNameOrPath = String(file, o, "lora_model_name_or_path"),
        };
    }

    /// <summary>
    /// Loads the adapter in <paramref name="folder"/> (adapter_config.json + adapter_model.bin/.safetensors). Keys that are not
    /// query_key_value LoRA weights, two keys for the same layer and part, layers outside [0, NumLayers), and shapes that
    /// disagree with r / enable_lora / the model throw <see cref="InvalidDataException"/> naming the file and key. A
    /// config.json next to it is checked against <paramref name="expect"/> (DoctorGLM's LoRA was trained on the 150528-row vocabulary).
    /// </summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="expect">The base model's dimensions, when known.</param>
    /// <param name="dtype">Convert the weights to this float type (default: as stored, fp16 for DoctorGLM).</param>
    /// <param name="device">Where to put them (default: CPU).</param>
    public static LoraAdapterData Load(string folder, AdapterExpectations? expect = null, DType? dtype = null, Device? device = null)
    {
        var config = ReadConfig(folder);
        string cfgFile = Path.Combine(folder, "adapter_config.json");
        if (!config.WithLora) throw new InvalidDataException($"{cfgFile}: with_lora is false (no LoRA weights)");
        CheckLoraScope(cfgFile, config.Bias, config.ModulesToSave, config.TargetModules);
        CheckModelConfig(folder, expect);

        string weights = WeightsFile(folder);
        using var src = CheckpointReader.OpenFile(weights);
        var keys = LayerKeys(src, weights, SuffixPattern(), "'…layers.{i}.attention.query_key_value.lora_A/lora_B'");
        return Build(src, weights, keys, config.R, config.LoraAlpha, config.LoraDropout, config.EnableLora?.ToArray(), expect, dtype, device);
    }
}
