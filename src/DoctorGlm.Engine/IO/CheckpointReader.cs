namespace DoctorGlm.Engine.IO;

/// <summary>
/// Opens any checkpoint the engine reads — a safetensors file, a <c>torch.save</c> zip (<c>.bin</c>/<c>.pt</c>), a
/// sharded index json, or a folder holding one of these — as an <see cref="ITensorSource"/>.
/// </summary>
public static class CheckpointReader
{
    /// <summary>Folder entries tried in order (safetensors first: memory-mapped, no pickle).</summary>
    private static readonly string[] FolderCandidates =
        ["model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"];

    /// <summary>
    /// Opens <paramref name="path"/>. A file's format is detected from its content (zip signature → torch.save,
    /// JSON header → safetensors, <c>*.index.json</c> → shards), not trusted from its extension. A folder is
    /// resolved to, in order: <c>model.safetensors.index.json</c>, <c>model.safetensors</c>,
    /// <c>pytorch_model.bin.index.json</c>, <c>pytorch_model.bin</c>, else its only <c>*.safetensors</c> file, else
    /// its only <c>*.bin</c>/<c>*.pt</c>/<c>*.pth</c> file.
    /// </summary>
    public static ITensorSource Open(string path)
    {
        if (Directory.Exists(path))
        {
            foreach (var c in FolderCandidates)
            {
                string p = Path.Combine(path, c);
                if (File.Exists(p)) return OpenFile(p);
            }
            var st = Directory.GetFiles(path, "*.safetensors");
            if (st.Length == 1) return OpenFile(st[0]);
            var pt = Directory.GetFiles(path).Where(f => f.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".pt", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".pth", StringComparison.OrdinalIgnoreCase)).ToArray();
            if (st.Length == 0 && pt.Length == 1) return OpenFile(pt[0]);
            throw new FileNotFoundException($"{path}: no checkpoint found (looked for {string.Join(", ", FolderCandidates)}, then a single *.safetensors or *.bin/*.pt; found {st.Length} safetensors and {pt.Length} bin/pt files)", path);
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file or folder", path);
        return OpenFile(path);
    }

    /// <summary>Opens one file, detecting its format from its first bytes.</summary>
    internal static ITensorSource OpenFile(string path)
    {
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return ShardedTensorSource.Open(path);
        Span<byte> head = stackalloc byte[9];
        int n;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)) n = fs.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (n >= 2 && head[0] == (byte)'P' && head[1] == (byte)'K') return TorchCheckpointFile.Open(path);
        // Safetensors before the legacy pickle: its first byte is the header length's low byte, which may be 0x80 or
        // 0x8a too (a legacy pickle's ninth byte is part of its magic number, never '{').
        if (n == 9 && head[8] == (byte)'{') return SafeTensorsFile.Open(path);
        if (n >= 1 && head[0] is 0x80 or 0x8a) return TorchCheckpointFile.Open(path); // legacy pickle: refused there with a clear message
        if (n < 9) throw new InvalidDataException($"{path}: {n} bytes is too short to be a checkpoint (truncated?)");
        throw new InvalidDataException($"{path}: not a safetensors file, torch.save zip or index json (unrecognised first bytes)");
    }

    /// <summary>
    /// A view of <paramref name="source"/> whose names have the given leading prefixes removed, repeatedly and in any
    /// order (e.g. <c>"module."</c> and <c>"_forward_module."</c>, which DoctorGLM's quantized <c>.pt</c> files carry, spec
    /// §2). Names without a prefix are kept. Two stored names that become equal throw. Disposing the view disposes
    /// <paramref name="source"/>.
    /// </summary>
    public static ITensorSource WithoutPrefixes(ITensorSource source, params string[] prefixes)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var info in source.Tensors)
        {
            string n = info.Name;
            for (bool again = true; again;)
            {
                again = false;
                foreach (var p in prefixes)
                    if (p.Length > 0 && n.StartsWith(p, StringComparison.Ordinal) && n.Length > p.Length) { n = n[p.Length..]; again = true; }
            }
            if (!map.TryAdd(n, info.Name))
                throw new InvalidDataException($"{source.Description}: '{info.Name}' and '{map[n]}' both become '{n}' once the prefixes {string.Join(", ", prefixes)} are removed");
        }
        return new RenamedTensorSource(source, map);
    }

    private sealed class RenamedTensorSource(ITensorSource inner, Dictionary<string, string> map) : ITensorSource
    {
        public string Description => inner.Description;
        public IReadOnlyCollection<TensorInfo> Tensors => map.Select(kv => inner.Info(kv.Value) with { Name = kv.Key }).ToArray();
        public bool Contains(string name) => map.ContainsKey(name);
        public TensorInfo Info(string name) => inner.Info(Stored(name)) with { Name = name };
        public void ReadInto(string name, Tensor destination) => inner.ReadInto(Stored(name), destination);
        private string Stored(string name) => map.TryGetValue(name, out var s) ? s
            : throw new KeyNotFoundException($"{inner.Description}: no tensor named '{name}' (after removing prefixes)");
        public void Dispose() => inner.Dispose();
    }
}
