using DoctorGlm.Engine.IO.Adapters;

namespace DoctorGlm.Engine.Models.ChatGlm;

// LoRA adapters and P-Tuning prefix encoders from and to files: the IO/Adapters readers do the parsing and
// validation; this joins their plain data to the model's GlmLora / GlmPrefixEncoder without copying.
public sealed partial class GlmModel
{
    /// <summary>What adapters are validated against: this model's layers, hidden size and vocabulary.</summary>
    public AdapterExpectations AdapterExpectations => new(Config.NumLayers, Config.HiddenSize, Config.VocabSize);

    /// <summary>
    /// Loads a LoRA adapter folder and attaches it (freezing the base). The format is detected by
    /// <see cref="LoraAdapters.Detect"/>: HF PEFT (adapter_config.json with <c>peft_type</c>; ≥ 0.3 or 0.2.0's
    /// MergedLinear form) or DoctorGLM's deep_training one (<c>with_lora</c> / <c>enable_lora</c>, keys
    /// <c>model.transformer.transformer.layers.{i}…lora_A</c>). Shapes, layer indices and a config.json next to the
    /// adapter are checked against this model; the weights are converted to fp32 on the model's device. The adapter must
    /// cover every layer (PEFT's layers_to_transform subsets are refused). Nothing is attached on failure.
    /// </summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="trainable">Whether A and B require gradients (to continue training); PEFT's default is false.</param>
    public GlmLora LoadLoraAdapter(string folder, bool trainable = false)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ThrowIfDisposed();
        if (Lora is not null) throw new InvalidOperationException("GlmModel.LoadLoraAdapter: an adapter is already attached; detach it first");
        var data = LoraAdapters.Load(folder, AdapterExpectations, DType.F32, Device);
        GlmLora lora;
        try
        {
            var missing = Enumerable.Range(0, Config.NumLayers).Where(i => !data.Layers.ContainsKey(i)).ToArray();
            if (missing.Length > 0)
                throw new NotSupportedException($"{data.Source}: the adapter has no weights for layer(s) {string.Join(", ", missing)}; GlmModel attaches LoRA to every layer");
            var settings = new LoraSettings(data.Rank, data.Alpha, data.Dropout, data.Grouped ? data.EnableLora.ToArray() : null);
            var layers = Enumerable.Range(0, Config.NumLayers).Select(i => (data.Layers[i].A, data.Layers[i].B)).ToArray();
            foreach (var (a, b) in layers) a.RequiresGrad = b.RequiresGrad = trainable;
            lora = new GlmLora(settings, layers); // takes the tensors: `data` is not disposed from here on
        }
        catch
        {
            data.Dispose();
            throw;
        }
        try { return AttachLora(lora); }
        catch
        {
            lora.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the attached LoRA adapter as a PEFT ≥ 0.3 folder (<see cref="PeftAdapter.Save"/>: adapter_config.json and
    /// adapter_model.safetensors with PEFT's exact keys), merged or not (A and B are kept intact while merged).
    /// A grouped adapter (DoctorGLM's enable_lora [T, F, T]) has no PEFT ≥ 0.3 form of its own, so it is written as the
    /// equivalent plain LoRA: rank r·g and lora_alpha alpha·g (same scaling alpha / r), lora_A unchanged [r·g, H] and
    /// lora_B [3H, r·g] block-diagonal — enabled block k's rows hold its B in columns [k·r, (k+1)·r), disabled blocks'
    /// rows are zero. Any PEFT loads it and computes the same update; reloaded here it is a full-form adapter (its zero
    /// blocks would train if training continued).
    /// </summary>
    /// <param name="folder">Created if needed; existing adapter files are replaced.</param>
    /// <param name="baseModelNameOrPath">base_model_name_or_path to record.</param>
    public void SaveLoraAdapter(string folder, string? baseModelNameOrPath = "THUDM/chatglm-6b")
    {
        ArgumentNullException.ThrowIfNull(folder);
        ThrowIfDisposed();
        var lora = Lora ?? throw new InvalidOperationException("GlmModel.SaveLoraAdapter: no LoRA adapter is attached");
        var groups = lora.Groups;
        int g = groups.EnabledCount, rank = lora.Settings.Rank;
        var expanded = new List<Tensor>();
        try
        {
            var layers = new Dictionary<int, LoraLayer>();
            for (int i = 0; i < lora.Layers.Count; i++)
            {
                var (a, b) = lora.Layers[i];
                if (groups.Count == 1) { layers[i] = new LoraLayer(a, b); continue; }
                var full = ExpandGroupedB(b, groups, rank);
                expanded.Add(full);
                layers[i] = new LoraLayer(a, full);
            }
            // Not disposed: it only borrows the adapter's tensors (and the expanded ones, freed below).
            var data = groups.Count == 1
                ? new LoraAdapterData(rank, lora.Settings.Alpha, LoraGroups.Full, layers, lora.Settings.Dropout, "GlmModel.SaveLoraAdapter")
                : new LoraAdapterData(rank * g, lora.Settings.Alpha * g, LoraGroups.Full, layers, lora.Settings.Dropout, "GlmModel.SaveLoraAdapter");
            PeftAdapter.Save(folder, data, baseModelNameOrPath);
        }
        finally
        {
            foreach (var t in expanded) t.Dispose();
        }
    }

    /// <summary>B [block·g, r] of a grouped adapter as the block-diagonal [block·G, r·g] of the equivalent plain LoRA.</summary>
    private static Tensor ExpandGroupedB(Tensor b, LoraGroups groups, int rank)
    {
        int g = groups.EnabledCount, block = b.Shape[0] / g;
        var src = b.ToFloatArray();
        var dst = new float[block * groups.Count * rank * g];
        int cols = rank * g;
        for (int k = 0; k < g; k++)
        {
            int rowBase = groups.EnabledBlocks[k] * block;
            for (int i = 0; i < block; i++)
                for (int j = 0; j < rank; j++)
                    dst[(rowBase + i) * cols + k * rank + j] = src[(k * block + i) * rank + j];
        }
        using (TensorScope.Unscoped()) return Tensor.FromArray(dst, new Shape(block * groups.Count, cols), b.DType, b.Device);
    }

    /// <summary>
    /// Loads a P-Tuning v2 checkpoint (<see cref="PTuningCheckpoint.Load"/>: the Trainer's folder or its
    /// pytorch_model.bin, or a file <see cref="SavePrefixEncoder"/> wrote; keys with or without
    /// <c>transformer.prefix_encoder.</c>) and attaches it (freezing the base). The width 2·L·H, the folder's config.json and,
    /// when this model's config sets <c>pre_seq_len</c>, the prefix length and <c>prefix_projection</c> are checked.
    /// Nothing is attached on failure.
    /// </summary>
    /// <param name="path">A checkpoint folder or file.</param>
    /// <param name="trainable">Whether the encoder's tensors require gradients (to continue training).</param>
    public GlmPrefixEncoder LoadPrefixEncoder(string path, bool trainable = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        ThrowIfDisposed();
        if (Prefix is not null) throw new InvalidOperationException("GlmModel.LoadPrefixEncoder: a prefix encoder is already attached; detach it first");
        var data = PTuningCheckpoint.Load(path, AdapterExpectations, DType.F32, Device);
        GlmPrefixEncoder encoder;
        try
        {
            if (Config.PreSeqLen is int n && (n != data.PreSeqLen || Config.PrefixProjection != data.PrefixProjection))
                throw new InvalidDataException($"{data.Source}: a prefix of {data.PreSeqLen} tokens (prefix_projection {data.PrefixProjection.ToString().ToLowerInvariant()}), but the model config says pre_seq_len {n}, prefix_projection {Config.PrefixProjection.ToString().ToLowerInvariant()}");
            encoder = GlmPrefixEncoder.Adopt(Config, data); // takes the tensors
        }
        catch
        {
            data.Dispose();
            throw;
        }
        foreach (var (_, t) in encoder.NamedParameters()) t.RequiresGrad = trainable;
        try { return AttachPrefixEncoder(encoder); }
        catch
        {
            encoder.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the attached prefix encoder with <see cref="PTuningCheckpoint.Save"/> (safetensors, the Trainer's
    /// <c>transformer.prefix_encoder.*</c> keys, written atomically). <paramref name="path"/> is the file to write, or an
    /// existing folder, which receives <c>model.safetensors</c> (what <see cref="LoadPrefixEncoder"/> then finds there).
    /// </summary>
    public void SavePrefixEncoder(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        ThrowIfDisposed();
        var prefix = Prefix ?? throw new InvalidOperationException("GlmModel.SavePrefixEncoder: no prefix encoder is attached");
        string file = Directory.Exists(path) ? Path.Combine(path, "model.safetensors") : path;
        PTuningCheckpoint.Save(file, prefix.AsData(file)); // a view of the encoder's tensors: not disposed
    }
}
