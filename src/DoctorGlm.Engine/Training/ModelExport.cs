using System.Globalization;
using System.Text.Json;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.IO.Adapters;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Training;

/// <summary>
/// Writes what a run trained, in the formats the loaders read back: a PEFT LoRA folder (<see cref="PeftAdapter.Load"/>),
/// DoctorGLM's deep_training folder for the grouped form (<see cref="DoctorGlmAdapter.Load"/>), the P-Tuning prefix
/// (<see cref="PTuningCheckpoint.Load"/>), or a full model as <c>model.safetensors</c> + <c>config.json</c>
/// (<see cref="CheckpointReader.Open"/> + <see cref="GlmConfig.FromJson"/>). Weights are converted to
/// <c>dtype</c> on the way out; the model's own fp32 tensors are not touched.
/// </summary>
public static class ModelExport
{
    /// <summary>File name of the P-Tuning prefix encoder.</summary>
    public const string PrefixFileName = "prefix_encoder.safetensors";

    /// <summary>File name of a full model's weights.</summary>
    public const string ModelFileName = "model.safetensors";

    /// <summary>File name of a full model's configuration.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>A copy of <paramref name="lora"/>'s weights as <see cref="LoraAdapterData"/> (the caller disposes it).</summary>
    public static LoraAdapterData ToAdapterData(GlmLora lora, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(lora);
        var layers = new Dictionary<int, LoraLayer>();
        using (TensorScope.Unscoped())
            for (int i = 0; i < lora.Layers.Count; i++)
                layers[i] = new LoraLayer(Copy(lora.Layers[i].A, dtype), Copy(lora.Layers[i].B, dtype));
        return new LoraAdapterData(lora.Settings.Rank, lora.Settings.Alpha, lora.Groups, layers, lora.Settings.Dropout, "trained adapter");
    }

    /// <summary>
    /// Saves a LoRA adapter into <paramref name="folder"/>: PEFT ≥ 0.3 form (<c>adapter_config.json</c> +
    /// <c>adapter_model.safetensors</c>, keys <c>base_model.model.transformer.layers.{i}.attention.query_key_value.lora_{A,B}.weight</c>),
    /// or, for the grouped enable_lora form that PEFT ≥ 0.3 cannot express, DoctorGLM's deep_training form
    /// (keys without <c>.weight</c>, config with <c>enable_lora</c>).
    /// </summary>
    public static void SaveLora(string folder, GlmLora lora, DType dtype = DType.F32, string? baseModelNameOrPath = null)
    {
        using var data = ToAdapterData(lora, dtype);
        if (!data.Grouped)
        {
            PeftAdapter.Save(folder, data, baseModelNameOrPath);
            return;
        }
        Directory.CreateDirectory(folder);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (i, l) in data.Layers.OrderBy(kv => kv.Key))
        {
            tensors.Add(new($"model.transformer.transformer.layers.{i}.attention.query_key_value.lora_A", l.A));
            tensors.Add(new($"model.transformer.transformer.layers.{i}.attention.query_key_value.lora_B", l.B));
        }
        SafeTensorsFile.Save(Path.Combine(folder, PeftAdapter.WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(folder, PeftAdapter.ConfigFileName), Json(w =>
        {
            w.WriteNumber("r", data.Rank);
            w.WriteNumber("lora_alpha", data.Alpha);
            w.WriteNumber("lora_dropout", data.Dropout);
            w.WriteStartArray("target_modules"); w.WriteStringValue("query_key_value"); w.WriteEndArray();
            w.WriteStartArray("enable_lora"); foreach (bool b in data.EnableLora) w.WriteBooleanValue(b); w.WriteEndArray();
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("merge_weights", false);
            w.WriteString("bias", "none");
            w.WriteNull("modules_to_save");
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("with_lora", true);
            w.WriteString("target_dtype", dtype == DType.F32 ? "32" : "16");
            w.WriteNull("lora_model_name_or_path");
        }));
    }

    /// <summary>Saves the P-Tuning prefix encoder as <paramref name="folder"/>/<see cref="PrefixFileName"/> with the HF Trainer's keys (<c>transformer.prefix_encoder.*</c>).</summary>
    public static void SavePrefix(string folder, GlmPrefixEncoder prefix, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        Directory.CreateDirectory(folder);
        SaveConverted(Path.Combine(folder, PrefixFileName), prefix.NamedParameters(), dtype);
    }

    /// <summary>Saves the model as <paramref name="folder"/>/<see cref="ModelFileName"/> (HF keys) and <see cref="ConfigFileName"/>, every float tensor as <paramref name="dtype"/> (<see cref="GlmModel.SavePretrained"/>).</summary>
    public static void SaveFull(string folder, GlmModel model, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.SavePretrained(folder, dtype);
    }

    /// <summary>Writes <paramref name="config"/> as a Hugging Face ChatGLM <c>config.json</c> (<see cref="GlmConfig.Save"/>).</summary>
    public static void WriteConfig(string path, GlmConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Save(path);
    }

    /// <summary>HF's torch_dtype name of a float dtype.</summary>
    public static string DTypeName(DType dtype) => dtype switch
    {
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => throw new ArgumentException($"{dtype} is not a float type", nameof(dtype)),
    };

    private static void SaveConverted(string file, IEnumerable<KeyValuePair<string, Tensor>> tensors, DType dtype) =>
        SafeTensorsFile.Save(file, tensors, new Dictionary<string, string> { ["format"] = "pt" }, (_, t) => t.DType.IsFloat() ? dtype : t.DType);

    private static Tensor Copy(Tensor t, DType dtype)
    {
        var c = Tensor.Empty(t.Shape, dtype, t.Device);
        t.Backend.Copy(t, c);
        return c;
    }

    private static string Json(Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }

    internal static string Invariant(double v) => v.ToString("R", CultureInfo.InvariantCulture);
}
