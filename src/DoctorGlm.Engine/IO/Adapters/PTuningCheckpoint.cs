using System.Text.Json;
using static DoctorGlm.Engine.IO.Adapters.AdapterLoading;

namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>
/// A P-Tuning v2 prefix encoder (spec §8) as plain data. Without projection, <see cref="Embedding"/> is E_p [N, 2·L·H];
/// with projection it is [N, H] followed by trans.0 (H→H), tanh, trans.2 (H→2·L·H). Owns its tensors.
/// </summary>
public sealed class PrefixEncoderData : IDisposable
{
    internal PrefixEncoderData(Tensor embedding, Tensor? t0w, Tensor? t0b, Tensor? t2w, Tensor? t2b, string source)
    {
        Embedding = embedding;
        Trans0Weight = t0w;
        Trans0Bias = t0b;
        Trans2Weight = t2w;
        Trans2Bias = t2b;
        Source = source;
    }

    /// <summary>N = pre_seq_len.</summary>
    public int PreSeqLen => Embedding.Shape[0];

    /// <summary>True for the embedding → Linear → tanh → Linear form.</summary>
    public bool PrefixProjection => Trans0Weight is not null;

    /// <summary>2·L·H, the width of the per-token key/value prefix.</summary>
    public int Width => PrefixProjection ? Trans2Weight!.Shape[0] : Embedding.Shape[1];

    /// <summary><c>embedding.weight</c>: [N, 2·L·H], or [N, H] with projection.</summary>
    public Tensor Embedding { get; }

    /// <summary><c>trans.0.weight</c> [H, H] (projection only).</summary>
    public Tensor? Trans0Weight { get; }

    /// <summary><c>trans.0.bias</c> [H] (projection only).</summary>
    public Tensor? Trans0Bias { get; }

    /// <summary><c>trans.2.weight</c> [2·L·H, H] (projection only).</summary>
    public Tensor? Trans2Weight { get; }

    /// <summary><c>trans.2.bias</c> [2·L·H] (projection only).</summary>
    public Tensor? Trans2Bias { get; }

    /// <summary>Where it was loaded from.</summary>
    public string Source { get; }

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        Embedding.Dispose();
        Trans0Weight?.Dispose();
        Trans0Bias?.Dispose();
        Trans2Weight?.Dispose();
        Trans2Bias?.Dispose();
    }
}

/// <summary>
/// Reads and writes P-Tuning v2 checkpoints: the Trainer's <c>pytorch_model.bin</c> holding only
/// <c>transformer.prefix_encoder.embedding.weight</c> [N, 2·L·H] (or, with prefix_projection, <c>embedding.weight</c> [N, H],
/// <c>trans.0.weight/bias</c>, <c>trans.2.weight/bias</c>). Keys may also be stored without the
/// <c>transformer.prefix_encoder.</c> prefix (the prefix encoder's own state dict, as DoctorGLM's notebook loads it).
/// </summary>
public static class PTuningCheckpoint
{
    /// <summary>The prefix of every key in a Trainer-saved checkpoint.</summary>
    public const string Prefix = "transformer.prefix_encoder.";

    private static readonly string[] Parts = ["embedding.weight", "trans.0.weight", "trans.0.bias", "trans.2.weight", "trans.2.bias"];

    /// <summary>
    /// Loads a checkpoint file or folder (a folder's <c>config.json</c>, when present, supplies pre_seq_len / prefix_projection /
    /// num_layers / hidden_size / vocab_size to cross-check). Any other key, a missing part, or a shape that disagrees with
    /// 2·L·H, N or the config throws <see cref="InvalidDataException"/> naming the file and key; nothing half-loaded is returned.
    /// </summary>
    /// <param name="path">pytorch_model.bin / a safetensors file, or the folder holding it.</param>
    /// <param name="expect">The base model's dimensions, when known (L and H fix the width 2·L·H).</param>
    /// <param name="dtype">Convert to this float type (default: as stored).</param>
    /// <param name="device">Where to put it (default: CPU).</param>
    public static PrefixEncoderData Load(string path, AdapterExpectations? expect = null, DType? dtype = null, Device? device = null)
    {
        int? n = null, layers = expect?.NumLayers, hidden = expect?.HiddenSize;
        bool? projection = null;
        string? folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path));
        string cfg = Path.Combine(folder ?? ".", "config.json");
        if (File.Exists(cfg))
        {
            CheckModelConfig(folder!, expect);
            using var doc = ReadJson(cfg);
            var o = doc.RootElement;
            if (o.TryGetProperty("pre_seq_len", out var p) && p.ValueKind == JsonValueKind.Number) n = Int(cfg, o, "pre_seq_len");
            if (o.TryGetProperty("prefix_projection", out var pp) && pp.ValueKind is JsonValueKind.True or JsonValueKind.False) projection = pp.ValueKind == JsonValueKind.True;
            layers ??= o.TryGetProperty("num_layers", out var nl) && nl.ValueKind == JsonValueKind.Number ? Int(cfg, o, "num_layers") : null;
            hidden ??= o.TryGetProperty("hidden_size", out var hs) && hs.ValueKind == JsonValueKind.Number ? Int(cfg, o, "hidden_size") : null;
        }

        using var src = CheckpointReader.Open(path);
        string file = src.Description;
        var found = new Dictionary<string, string>(StringComparer.Ordinal); // part → stored key
        foreach (var t in src.Tensors)
        {
            string part = t.Name.StartsWith(Prefix, StringComparison.Ordinal) ? t.Name[Prefix.Length..] : t.Name;
            if (!Parts.Contains(part))
                throw new InvalidDataException($"{t.File}: unexpected key '{t.Name}' (a P-Tuning v2 checkpoint holds only {Prefix}embedding.weight, and trans.0/trans.2 with prefix_projection)");
            if (!found.TryAdd(part, t.Name)) throw new InvalidDataException($"{t.File}: '{t.Name}' and '{found[part]}' are the same parameter");
        }
        if (!found.ContainsKey("embedding.weight"))
            throw new InvalidDataException($"{file}: no '{Prefix}embedding.weight' (not a P-Tuning v2 checkpoint?)");
        bool proj = found.Count > 1;
        if (proj)
            foreach (var p in Parts)
                if (!found.ContainsKey(p)) throw new InvalidDataException($"{file}: prefix_projection checkpoint lacks '{Prefix}{p}'");
        if (projection is bool want && want != proj)
            throw new InvalidDataException($"{cfg}: prefix_projection is {want.ToString().ToLowerInvariant()} but {file} {(proj ? "holds" : "lacks")} the trans.0/trans.2 projection weights");

        int? width = layers * hidden * 2;
        Shape S(string part) => src.Info(found[part]).Shape;
        void Expect(string part, params int?[] dims)
        {
            var s = S(part);
            bool ok = s.Rank == dims.Length && dims.Select((d, i) => d is null || s[i] == d).All(x => x);
            if (!ok) throw new InvalidDataException($"{src.Info(found[part]).File}: '{found[part]}' is {s}; expected [{string.Join(", ", dims.Select(d => d?.ToString() ?? "?"))}]" +
                (width is null ? "" : $" (2·L·H = 2·{layers}·{hidden} = {width})"));
        }
        var e = S("embedding.weight");
        if (e.Rank != 2) Expect("embedding.weight", n, proj ? hidden : width);
        n ??= e[0];
        if (!proj) Expect("embedding.weight", n, width);
        else
        {
            hidden ??= e[1];
            Expect("embedding.weight", n, hidden);
            Expect("trans.0.weight", hidden, hidden);
            Expect("trans.0.bias", hidden);
            Expect("trans.2.weight", width, hidden);
            Expect("trans.2.bias", width ?? S("trans.2.weight")[0]);
        }

        var loaded = LoadAll(src, found.Values, dtype, device);
        Tensor? Get(string part) => found.TryGetValue(part, out var k) ? loaded[k] : null;
        return new PrefixEncoderData(Get("embedding.weight")!, Get("trans.0.weight"), Get("trans.0.bias"), Get("trans.2.weight"), Get("trans.2.bias"), file);
    }

    /// <summary>
    /// Saves <paramref name="encoder"/> as a safetensors file with the Trainer's key names
    /// (<c>transformer.prefix_encoder.embedding.weight</c>, …), written atomically.
    /// </summary>
    public static void Save(string file, PrefixEncoderData encoder)
    {
        var items = new List<KeyValuePair<string, Tensor>> { new(Prefix + "embedding.weight", encoder.Embedding) };
        if (encoder.PrefixProjection)
        {
            items.Add(new(Prefix + "trans.0.weight", encoder.Trans0Weight!));
            items.Add(new(Prefix + "trans.0.bias", encoder.Trans0Bias!));
            items.Add(new(Prefix + "trans.2.weight", encoder.Trans2Weight!));
            items.Add(new(Prefix + "trans.2.bias", encoder.Trans2Bias!));
        }
        SafeTensorsFile.Save(file, items, new Dictionary<string, string> { ["format"] = "pt" });
    }
}
