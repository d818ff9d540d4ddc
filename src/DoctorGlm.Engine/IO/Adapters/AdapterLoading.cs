using System.Text.Json;
using System.Text.RegularExpressions;

namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>Shared pieces of the adapter readers: JSON field access, file lookup, and all-or-nothing tensor loading.</summary>
internal static partial class AdapterLoading
{
    /// <summary>Reads a JSON object file; unknown fields are the caller's to ignore.</summary>
    public static JsonDocument ReadJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
    }

    private static JsonElement? Field(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static int Int(string file, JsonElement o, string name, int? fallback = null)
    {
        var v = Field(o, name);
        if (v is null) return fallback ?? throw new InvalidDataException($"{file}: '{name}' is missing");
        return v.Value.ValueKind == JsonValueKind.Number && v.Value.TryGetInt32(out int i) ? i : throw new InvalidDataException($"{file}: '{name}' is not an integer");
    }

    public static float Float(string file, JsonElement o, string name, float? fallback = null)
    {
        var v = Field(o, name);
        if (v is null) return fallback ?? throw new InvalidDataException($"{file}: '{name}' is missing");
        return v.Value.ValueKind == JsonValueKind.Number ? (float)v.Value.GetDouble() : throw new InvalidDataException($"{file}: '{name}' is not a number");
    }

    public static bool Bool(string file, JsonElement o, string name, bool fallback)
    {
        var v = Field(o, name);
        if (v is null) return fallback;
        return v.Value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{file}: '{name}' is not true/false"),
        };
    }

    public static string? String(string file, JsonElement o, string name)
    {
        var v = Field(o, name);
        if (v is null) return null;
        return v.Value.ValueKind == JsonValueKind.String ? v.Value.GetString() : throw new InvalidDataException($"{file}: '{name}' is not a string");
    }

    /// <summary>A list of strings; a single string (PEFT allows a regex there) becomes a one-element list.</summary>
    public static string[]? Strings(string file, JsonElement o, string name)
    {
        var v = Field(o, name);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.String) return [v.Value.GetString()!];
        if (v.Value.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{file}: '{name}' is not a list of strings");
        return v.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new InvalidDataException($"{file}: '{name}' holds a non-string")).ToArray();
    }

    public static bool[]? Bools(string file, JsonElement o, string name)
    {
        var v = Field(o, name);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{file}: '{name}' is not a list of booleans");
        return v.Value.EnumerateArray().Select(e => e.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{file}: '{name}' holds a non-boolean"),
        }).ToArray();
    }

    public static int[]? Ints(string file, JsonElement o, string name)
    {
        var v = Field(o, name);
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.Number) return [Int(file, o, name)];
        if (v.Value.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{file}: '{name}' is not a list of integers");
        return v.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int i) ? i : throw new InvalidDataException($"{file}: '{name}' holds a non-integer")).ToArray();
    }

    /// <summary>The adapter weights file in a folder: <c>adapter_model.safetensors</c> preferred, else <c>adapter_model.bin</c>.</summary>
    /// <summary>
    /// The LoRA settings every reader refuses alike: trained biases, extra saved modules, and targets other than
    /// query_key_value (the only LoRA target ChatGLM adapters use).
    /// </summary>
    public static void CheckLoraScope(string cfgFile, string bias, IReadOnlyCollection<string>? modulesToSave, IReadOnlyCollection<string> targetModules)
    {
        if (bias != "none")
            throw new InvalidDataException($"{cfgFile}: bias '{bias}' is not supported (only 'none': no bias tensors are trained)");
        if (modulesToSave is { Count: > 0 })
            throw new InvalidDataException($"{cfgFile}: modules_to_save [{string.Join(", ", modulesToSave)}] is not supported");
        if (!targetModules.All(t => t.EndsWith("query_key_value", StringComparison.Ordinal)))
            throw new InvalidDataException($"{cfgFile}: target_modules [{string.Join(", ", targetModules)}]: only query_key_value is supported");
    }

    /// <summary>
    /// Maps (layer, is-A) to the stored key for every tensor of <paramref name="src"/>; <paramref name="pattern"/>
    /// captures the layer index (group 1) and "A"/"B" (group 2). Any other key, a bad index or a duplicate throws,
    /// naming the file and the keys.
    /// </summary>
    public static Dictionary<(int Layer, bool IsA), string> LayerKeys(ITensorSource src, string weights, Regex pattern, string expected)
    {
        var keys = new Dictionary<(int, bool), string>();
        foreach (var t in src.Tensors)
        {
            var m = pattern.Match(t.Name);
            if (!m.Success) throw new InvalidDataException($"{weights}: unexpected key '{t.Name}' (expected only {expected})");
            if (!int.TryParse(m.Groups[1].Value, out int layer)) throw new InvalidDataException($"{weights}: '{t.Name}' has layer index {m.Groups[1].Value}");
            var k = (layer, m.Groups[2].Value == "A");
            if (!keys.TryAdd(k, t.Name)) throw new InvalidDataException($"{weights}: '{t.Name}' and '{keys[k]}' are both layer {layer} lora_{m.Groups[2].Value}");
        }
        return keys;
    }

    public static string WeightsFile(string folder)
    {
        foreach (var n in new[] { "adapter_model.safetensors", "adapter_model.bin" })
        {
            string p = Path.Combine(folder, n);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"{folder}: no adapter_model.safetensors or adapter_model.bin", Path.Combine(folder, "adapter_model.bin"));
    }

    /// <summary>
    /// When the folder also holds the model's <c>config.json</c> (DoctorGLM ships one with each checkpoint), checks its
    /// vocab_size / num_layers / hidden_size against what the caller expects: an adapter trained on the 150528-row
    /// vocabulary loaded onto a 130528-row base would silently produce wrong tokens.
    /// </summary>
    public static void CheckModelConfig(string folder, AdapterExpectations? expect)
    {
        string path = Path.Combine(folder, "config.json");
        if (expect is null || !File.Exists(path)) return;
        using var doc = ReadJson(path);
        var o = doc.RootElement;
        void Check(string field, int? want)
        {
            if (want is null || !o.TryGetProperty(field, out var v) || v.ValueKind != JsonValueKind.Number) return;
            if (!v.TryGetInt32(out int got) || got != want)
                throw new InvalidDataException($"{path}: '{field}' is {v.GetRawText()} but the base model has {want} (adapter trained for another model version?)");
        }
        Check("vocab_size", expect.VocabSize);
        Check("num_layers", expect.NumLayers);
        Check("hidden_size", expect.HiddenSize);
    }

    /// <summary>Loads tensors into fresh tensors; on any failure every one loaded so far is disposed and the error rethrown.</summary>
    public static Dictionary<string, Tensor> LoadAll(ITensorSource src, IEnumerable<string> keys, DType? dtype, Device? device)
    {
        var loaded = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using (TensorScope.Unscoped())
                foreach (var k in keys)
                {
                    var info = src.Info(k);
                    var want = dtype ?? info.DType;
                    if (!want.IsFloat() || !info.DType.IsFloat())
                        throw new InvalidDataException($"{info.File}: '{k}' is {info.DType}; adapter weights must be floats");
                    var t = Tensor.Empty(info.Shape, want, device);
                    loaded[k] = t;
                    src.ReadInto(k, t);
                }
            return loaded;
        }
        catch
        {
            foreach (var t in loaded.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Matches <c>…layers.{i}.attention.query_key_value.lora_{A|B}</c>, with or without <c>.weight</c>.</summary>
    [GeneratedRegex(@"(?:^|\.)layers\.(\d+)\.attention\.query_key_value\.lora_(A|B)(\.weight)?$", RegexOptions.CultureInvariant)]
    public static partial Regex SuffixPattern();

    /// <summary>
    /// Builds a <see cref="LoraAdapterData"/> from a source whose LoRA keys are <paramref name="keys"/> (layer, A/B → key).
    /// Validates layer indices and shapes against <paramref name="expect"/>, loads everything or nothing.
    /// </summary>
    public static LoraAdapterData Build(ITensorSource src, string file, Dictionary<(int Layer, bool IsA), string> keys, int rank, float alpha, float dropout,
        bool[]? enableLora, AdapterExpectations? expect, DType? dtype, Device? device, int[]? layersToTransform = null)
    {
        if (keys.Count == 0) throw new InvalidDataException($"{file}: holds no LoRA weights for attention.query_key_value");
        var layers = keys.Keys.Select(k => k.Layer).Distinct().Order().ToArray();
        foreach (int l in layers)
        {
            if (expect?.NumLayers is int n && l >= n)
                throw new InvalidDataException($"{file}: '{keys.First(k => k.Key.Layer == l).Value}' is for layer {l}, outside the model's {n} layers [0, {n})");
            if (!keys.ContainsKey((l, true))) throw new InvalidDataException($"{file}: '{keys[(l, false)]}' has no matching lora_A for layer {l}");
            if (!keys.ContainsKey((l, false))) throw new InvalidDataException($"{file}: '{keys[(l, true)]}' has no matching lora_B for layer {l}");
        }
        if (expect?.NumLayers is int nl)
        {
            var want = layersToTransform ?? Enumerable.Range(0, nl).ToArray();
            var missing = want.Where(l => !layers.Contains(l)).ToArray();
            if (missing.Length > 0)
                throw new InvalidDataException($"{file}: no LoRA weights for layer(s) {string.Join(", ", missing.Take(8))} (expected layers {Describe(want)})");
        }
        if (rank <= 0) throw new InvalidDataException($"{file}: r = {rank} must be positive");

        // Infer the groups when the config does not say: g = lora_A rows / r; two groups over three blocks is MergedLinear [T, F, T].
        var a0 = src.Info(keys[(layers[0], true)]);
        bool[] enable;
        if (enableLora is not null) enable = enableLora;
        else if (a0.Shape.Rank == 2 && a0.Shape[0] == rank) enable = [true];
        else if (a0.Shape.Rank == 2 && a0.Shape[0] == 2 * rank) enable = [true, false, true];
        else throw new InvalidDataException($"{file}: '{a0.Name}' is {a0.Shape}; with r = {rank} that is neither PEFT LoRA [r, in] nor MergedLinear [2r, in]");
        if (enable.Length == 0 || !enable.Contains(true)) throw new InvalidDataException($"{file}: enable_lora [{string.Join(", ", enable)}] enables nothing");
        var groups = enable.Length == 1 ? LoraGroups.Full : LoraGroups.Merged(enable);
        int g = groups.EnabledCount;

        int? inF = expect?.HiddenSize;
        int? outF = expect?.HiddenSize * 3;
        foreach (var ((layer, isA), key) in keys)
        {
            var info = src.Info(key);
            var s = info.Shape;
            if (isA)
            {
                if (s.Rank != 2 || s[0] != rank * g || inF is int i && s[1] != i)
                    throw new InvalidDataException($"{info.File}: '{key}' is {s}; expected [{rank * g}, {(inF?.ToString() ?? "in")}] (r {rank} × {g} enabled group(s))");
            }
            else
            {
                bool conv = s.Rank == 3 && s[2] == 1; // PEFT ≤ 0.2.0 stores lora_B as Conv1d weight [out', r, 1]
                int? rows = outF / groups.Count * g;
                if (!(s.Rank == 2 || conv) || s[1] != rank || rows is int rw && s[0] != rw || s[0] % g != 0)
                    throw new InvalidDataException($"{info.File}: '{key}' is {s}; expected [{(rows?.ToString() ?? "out")}, {rank}]" +
                        (g < groups.Count ? $" (MergedLinear enable_lora [{string.Join(", ", enable)}]: lora_B covers {g} of {groups.Count} output blocks)" : ""));
            }
        }

        var loaded = LoadAll(src, keys.Values, dtype, device);
        try
        {
            var result = new Dictionary<int, LoraLayer>();
            foreach (int l in layers)
            {
                var a = loaded[keys[(l, true)]];
                var b = loaded[keys[(l, false)]];
                if (b.Rank == 3)
                {
                    // Conv1d [out', r, 1] → [out', r]: same bytes, a fresh tensor so the adapter owns plain 2-D weights.
                    using (TensorScope.Unscoped())
                    {
                        var b2 = Tensor.Empty(new Shape(b.Shape[0], b.Shape[1]), b.DType, b.Device);
                        using (var view = b.ViewAs(b2.Shape, b2.Shape.ContiguousStrides(), b.Offset)) b2.Backend.Copy(view, b2);
                        b.Dispose();
                        loaded[keys[(l, false)]] = b = b2;
                    }
                }
                result[l] = new LoraLayer(a, b);
            }
            return new LoraAdapterData(rank, alpha, groups, result, dropout, file);
        }
        catch (ArgumentException e)
        {
            foreach (var t in loaded.Values) t.Dispose();
            throw new InvalidDataException(e.Message, e);
        }
        catch
        {
            foreach (var t in loaded.Values) t.Dispose();
            throw;
        }
    }

    private static string Describe(int[] layers) =>
        layers.Length > 1 && layers.Zip(layers.Skip(1)).All(p => p.Second == p.First + 1) ? $"[{layers[0]}, {layers[^1] + 1})" : string.Join(", ", layers);
}
