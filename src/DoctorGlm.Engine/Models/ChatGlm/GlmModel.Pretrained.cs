using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Models.ChatGlm;

// Loading a Hugging Face model folder (config.json + weights) in one call.
public sealed partial class GlmModel
{
    /// <summary>The model config's file name in a Hugging Face folder.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>
    /// Loads a Hugging Face ChatGLM-6B folder: <c>config.json</c> (<see cref="GlmConfig.FromJson"/>) and the weights
    /// that <see cref="CheckpointReader.Open"/> finds there — <c>model.safetensors.index.json</c>,
    /// <c>model.safetensors</c>, <c>pytorch_model.bin.index.json</c> (the hub's 8 shards) or <c>pytorch_model.bin</c>.
    /// Every weight is checked against the config before any is read (see <see cref="LoadWeights(ITensorSource)"/>), and
    /// on any failure nothing stays allocated. Weights are converted to fp32 (the hub's fp16 6B takes ~25 GB of host
    /// memory on the CPU backend). Parameters are frozen unless <paramref name="trainable"/> (full fine-tuning).
    /// </summary>
    /// <param name="folder">The model folder (e.g. a clone of THUDM/chatglm-6b).</param>
    /// <param name="device">Where to put the weights (default: CPU).</param>
    /// <param name="trainable">Whether the base parameters require gradients.</param>
    /// <param name="weightDType">Storage type of the weight matrices (F32, BF16 or F16; see <see cref="WeightDType"/>).</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or every weights file is missing (the message lists what was looked for).</exception>
    /// <exception cref="InvalidDataException">A missing shard or tensor, a truncated file, a wrong shape: the message names the file and key.</exception>
    public static GlmModel FromPretrained(string folder, Device? device = null, bool trainable = false, DType weightDType = DType.F32) =>
        FromPretrained(folder, new GlmLoadOptions { Trainable = trainable, WeightDType = weightDType }, device);

    /// <summary>
    /// Loads a Hugging Face ChatGLM-6B folder as <see cref="FromPretrained(string, Device?, bool, DType)"/> does, stored
    /// as <paramref name="options"/> say — e.g. <c>new GlmLoadOptions { QuantizeBits = 4 }</c> quantizes each block
    /// linear as it is read, so ChatGLM-6B's fp16 checkpoint loads into about 5 GB without ever holding the fp16 or
    /// fp32 model, and <see cref="GlmLoadOptions.MergeLoraAdapter"/> folds a fine-tuned adapter in first.
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="options">Weight storage, quantization and an adapter to merge.</param>
    /// <param name="device">Where to put the weights (default: CPU).</param>
    public static GlmModel FromPretrained(string folder, GlmLoadOptions options, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"GlmModel.FromPretrained: {folder} is not a folder (expected a Hugging Face ChatGLM-6B folder with {ConfigFileName} and the weights)");
        string configPath = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(configPath))
        {
            string hint = File.Exists(Path.Combine(folder, "adapter_config.json"))
                ? "; it holds adapter_config.json, so it is a LoRA adapter: load the base model and call LoadLoraAdapter on it" : "";
            throw new FileNotFoundException($"{folder}: no {ConfigFileName} (a Hugging Face ChatGLM-6B folder holds {ConfigFileName} and pytorch_model*.bin or model*.safetensors){hint}", configPath);
        }
        var config = GlmConfig.FromJson(configPath);
        using var source = CheckpointReader.Open(folder);
        if (source.Tensors.Count > 0 && source.Tensors.All(t => t.Name.StartsWith(GlmPrefixEncoder.KeyPrefix, StringComparison.Ordinal)))
            throw new InvalidDataException($"{source.Description}: holds only a P-Tuning prefix encoder, no base weights; load the base model and call LoadPrefixEncoder on this folder");
        return Load(config, source, options, device);
    }

    /// <summary>
    /// Replaces the base weights with those of a checkpoint file or folder (opened with <see cref="CheckpointReader.Open"/>);
    /// all-or-nothing as <see cref="LoadWeights(ITensorSource)"/>: on failure the model keeps its current weights.
    /// </summary>
    public void LoadWeights(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        ThrowIfDisposed();
        using var source = CheckpointReader.Open(path);
        LoadWeights(source);
    }

    /// <summary>The weights file <see cref="SavePretrained"/> writes.</summary>
    public const string WeightsFileName = "model.safetensors";

    /// <summary>
    /// Saves the model as a Hugging Face folder that <see cref="FromPretrained(string, Device?, bool, DType)"/> (or
    /// PyTorch's ChatGLM code) loads back: <c>config.json</c> and <c>model.safetensors</c> with the HF keys. Float
    /// tensors are stored as <paramref name="dtype"/> (null: each as the model holds it, weight matrices in
    /// <see cref="WeightDType"/> and vectors in fp32), converted one at a time as they are written. A quantized model
    /// is written in THUDM's pre-quantized layout — each block linear as int8 <c>weight</c> (INT4: two values a byte)
    /// and fp16 <c>weight_scale</c>, <c>quantization_bit</c> in the config — so quantizing a 6B model once gives a
    /// 3.9 GB (INT4) folder that loads without the fp16 checkpoint. A merged LoRA adapter is saved as part of the
    /// weights; an unmerged adapter and a prefix encoder are not (they have their own savers). Both files are written
    /// atomically.
    /// </summary>
    /// <param name="folder">Created if needed; an existing config.json and model.safetensors are replaced.</param>
    /// <param name="dtype">F32, BF16 or F16 for every float tensor, or null to keep each tensor's own type.</param>
    public void SavePretrained(string folder, DType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ThrowIfDisposed();
        if (dtype is not (null or DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"GlmModel.SavePretrained: dtype {dtype} must be F32, BF16 or F16", nameof(dtype));
        var tensors = new List<KeyValuePair<string, Tensor>>();
        var scales = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in ParameterShapes(Config))
        {
            if (_params.TryGetValue(name, out var t)) tensors.Add(new(name, t));
            else if (_quantized.TryGetValue(name, out var q))
            {
                tensors.Add(new(name, q.Data));
                tensors.Add(new(name + "_scale", q.Scale));
                scales.Add(name + "_scale");
            }
            else throw new InvalidOperationException($"GlmModel.SavePretrained: the model holds no tensor '{name}'");
        }
        // The quantized data (I8) and THUDM's fp16 scales keep their types; every other tensor is a float to convert.
        DType StoredAs(string name, Tensor t) => scales.Contains(name) || !t.DType.IsFloat() ? t.DType : dtype ?? t.DType;
        Directory.CreateDirectory(folder);
        SafeTensorsFile.Save(Path.Combine(folder, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" }, StoredAs);
        var torchDType = dtype ?? WeightDType;
        (Config with
        {
            TorchDType = torchDType switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" },
            QuantizationBit = QuantizationBits,
        }).Save(Path.Combine(folder, ConfigFileName));
    }
}
