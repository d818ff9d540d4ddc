using System.Text.Json;

namespace DoctorGlm.Engine.IO;

/// <summary>
/// A checkpoint split over several files and described by an index json (<c>pytorch_model.bin.index.json</c> or
/// <c>model.safetensors.index.json</c>) whose <c>weight_map</c> maps each tensor name to the file that holds it.
/// </summary>
/// <remarks>
/// Opening checks the whole index up front: every shard must exist next to the index and every mapped name must be
/// in its shard, so a broken set fails before any weight is loaded. <c>metadata.total_size</c> is ignored (the
/// ChatGLM hub index is stale). Tensors stored in a shard but absent from the index are not exposed, as in HF.
/// </remarks>
public sealed class ShardedTensorSource : ITensorSource
{
    private readonly Dictionary<string, ITensorSource> _byName;
    private readonly List<ITensorSource> _shards;

    private ShardedTensorSource(string indexPath, Dictionary<string, ITensorSource> byName, List<ITensorSource> shards)
    {
        Description = indexPath;
        _byName = byName;
        _shards = shards;
    }

    /// <inheritdoc />
    public string Description { get; }

    /// <summary>The opened shard files.</summary>
    public IReadOnlyList<ITensorSource> Shards => _shards;

    /// <inheritdoc />
    public IReadOnlyCollection<TensorInfo> Tensors => _byName.Select(kv => kv.Value.Info(kv.Key)).ToArray();

    /// <inheritdoc />
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <inheritdoc />
    public TensorInfo Info(string name) => Shard(name).Info(name);

    /// <inheritdoc />
    public void ReadInto(string name, Tensor destination) => Shard(name).ReadInto(name, destination);

    private ITensorSource Shard(string name) => _byName.TryGetValue(name, out var s) ? s
        : throw new KeyNotFoundException($"{Description}: no tensor named '{name}' in the weight_map ({_byName.Count} entries)");

    /// <summary>Opens an index json and all the shards it names (each shard's format is detected from its content).</summary>
    public static ShardedTensorSource Open(string indexPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        Dictionary<string, string> map;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{indexPath}: no 'weight_map' object");
            map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new InvalidDataException($"{indexPath}: weight_map entry '{p.Name}' is not a file name");
                map[p.Name] = p.Value.GetString()!;
            }
        }
        catch (JsonException e) { throw new InvalidDataException($"{indexPath}: not valid JSON: {e.Message}", e); }
        if (map.Count == 0) throw new InvalidDataException($"{indexPath}: weight_map is empty");

        var opened = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        try
        {
            var byName = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
            foreach (var (key, file) in map)
            {
                if (!opened.TryGetValue(file, out var shard))
                {
                    // Shards live next to the index: a path that climbs out of the folder is a malformed (or hostile) index.
                    if (file.Length == 0 || Path.IsPathRooted(file) || file.Split('/', '\\').Contains(".."))
                        throw new InvalidDataException($"{indexPath}: '{key}' maps to '{file}', which is not a file name inside the index's folder");
                    string shardPath = Path.Combine(dir, file);
                    if (!File.Exists(shardPath))
                        throw new InvalidDataException($"{indexPath}: shard '{file}' (holding '{key}') does not exist at {shardPath}");
                    // Say which entry needed the shard: a truncated or corrupt file's own error can name no tensor.
                    try { shard = CheckpointReader.OpenFile(shardPath); }
                    catch (InvalidDataException e) { throw new InvalidDataException($"{indexPath}: shard '{file}' (holding '{key}') cannot be read: {e.Message}", e); }
                    opened[file] = shard;
                }
                if (!shard.Contains(key))
                    throw new InvalidDataException($"{indexPath}: '{key}' is mapped to {shard.Description}, which has no such tensor");
                byName[key] = shard;
            }
            return new ShardedTensorSource(indexPath, byName, opened.Values.ToList());
        }
        catch
        {
            foreach (var s in opened.Values) s.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}
