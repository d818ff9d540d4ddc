using System.Text.Json;
using static DoctorGlm.Engine.IO.Adapters.AdapterLoading;

namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>The on-disk flavour of a LoRA adapter folder.</summary>
public enum LoraAdapterFormat
{
    /// <summary>HF PEFT (<c>peft_type</c> in adapter_config.json; keys <c>base_model.model.….lora_A.weight</c>), read by <see cref="PeftAdapter"/>.</summary>
    Peft,

    /// <summary>DoctorGLM's deep_training 0.1.0 format (spec §9.1), read by <see cref="DoctorGlmAdapter"/>.</summary>
    DoctorGlm,
}

/// <summary>Reads a LoRA adapter folder of either format, telling them apart by their config and keys.</summary>
public static class LoraAdapters
{
    // Fields only deep_training's LoraArguments writes (PEFT has none of them).
    private static readonly string[] DeepTrainingFields = ["with_lora", "target_dtype", "lora_model_name_or_path"];

    /// <summary>
    /// Detects the format of <paramref name="folder"/>: <c>peft_type</c> in adapter_config.json → PEFT (≤ 0.2.0's
    /// MergedLinear form included); otherwise a deep_training field (<c>with_lora</c>, <c>target_dtype</c>,
    /// <c>lora_model_name_or_path</c>) or a non-null <c>enable_lora</c> → DoctorGLM; otherwise the weight keys decide
    /// (<c>base_model.model.</c> → PEFT, any other <c>…layers.{i}.attention.query_key_value.lora_A/B</c> → DoctorGLM).
    /// Throws naming the folder and the missing file, or the file that fits neither.
    /// </summary>
    public static LoraAdapterFormat Detect(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"{folder}: no such folder (expected a LoRA adapter folder with adapter_config.json and adapter_model.safetensors / .bin)");
        string cfg = Path.Combine(folder, PeftAdapter.ConfigFileName);
        if (!File.Exists(cfg))
            throw new FileNotFoundException($"{folder}: no {PeftAdapter.ConfigFileName} (a LoRA adapter folder holds it next to adapter_model.safetensors / .bin)", cfg);
        using (var doc = ReadJson(cfg))
        {
            var o = doc.RootElement;
            if (o.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{cfg}: not a JSON object");
            if (o.TryGetProperty("peft_type", out _)) return LoraAdapterFormat.Peft;
            if (DeepTrainingFields.Any(f => o.TryGetProperty(f, out _))) return LoraAdapterFormat.DoctorGlm;
            if (o.TryGetProperty("enable_lora", out var e) && e.ValueKind != JsonValueKind.Null) return LoraAdapterFormat.DoctorGlm;
        }
        string weights = WeightsFile(folder);
        using var src = CheckpointReader.OpenFile(weights);
        foreach (var t in src.Tensors)
        {
            if (!SuffixPattern().IsMatch(t.Name)) continue;
            return t.Name.StartsWith("base_model.model.", StringComparison.Ordinal) ? LoraAdapterFormat.Peft : LoraAdapterFormat.DoctorGlm;
        }
        throw new InvalidDataException($"{cfg}: neither a PEFT config (no peft_type) nor a deep_training one (no with_lora / enable_lora), and {weights} holds no '…layers.{{i}}.attention.query_key_value.lora_A/lora_B' key");
    }

    /// <summary>
    /// Loads <paramref name="folder"/> with <see cref="PeftAdapter.Load"/> or <see cref="DoctorGlmAdapter.Load"/> as
    /// <see cref="Detect"/> decides (same arguments, same all-or-nothing validation).
    /// </summary>
    public static LoraAdapterData Load(string folder, AdapterExpectations? expect = null, DType? dtype = null, Device? device = null) =>
        Detect(folder) switch
        {
            LoraAdapterFormat.Peft => PeftAdapter.Load(folder, expect, dtype, device),
            _ => DoctorGlmAdapter.Load(folder, expect, dtype, device),
        };
}
