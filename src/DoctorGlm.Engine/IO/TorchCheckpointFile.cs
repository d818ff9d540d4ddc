using System.IO.Compression;

namespace DoctorGlm.Engine.IO;

/// <summary>
/// Reader for <c>torch.save</c> zip checkpoints (<c>pytorch_model.bin</c>, DoctorGLM's <c>*.pt</c>): a zip holding
/// <c>&lt;archive&gt;/data.pkl</c> (the pickled state dict), one entry <c>&lt;archive&gt;/data/&lt;key&gt;</c> per storage, and
/// optionally <c>&lt;archive&gt;/byteorder</c>.
/// </summary>
/// <remarks>
/// <para>The pickle is interpreted by a restricted unpickler that only models what torch writes for state dicts
/// (see <c>TorchPickle</c>): a checkpoint that asks for any other global is refused, never executed.</para>
/// <para>Nested dicts are flattened with "." (DoctorGLM's int8 files nest the state dict under <c>module</c>);
/// non-tensor values (counters, strings) are skipped. Tensors must be contiguous views of their storage; several
/// tensors may share one storage at different offsets. Reads stream from the zip entry (stored or deflated) straight
/// into the destination.</para>
/// </remarks>
public sealed class TorchCheckpointFile : ITensorSource
{
    private sealed record Entry(TensorInfo Info, StoredType Stored, TorchTensorRef Ref, ZipArchiveEntry Zip);

    private readonly FileStream _stream;
    private readonly ZipArchive _zip;
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private bool _disposed;

    private TorchCheckpointFile(string path, FileStream stream, ZipArchive zip)
    {
        Path = path;
        _stream = stream;
        _zip = zip;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <inheritdoc />
    public string Description => Path;

    /// <inheritdoc />
    public IReadOnlyCollection<TensorInfo> Tensors => _entries.Values.Select(e => e.Info).ToArray();

    /// <inheritdoc />
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <inheritdoc />
    public TensorInfo Info(string name) => Get(name).Info;

    private Entry Get(string name) => _entries.TryGetValue(name, out var e) ? e
        : throw new KeyNotFoundException($"{Path}: no tensor named '{name}' (it has {_entries.Count}: {string.Join(", ", _entries.Keys.Take(8))}{(_entries.Count > 8 ? ", …" : "")})");

    /// <summary>Opens a checkpoint: reads and checks the pickle and the zip directory (tensor data is read on demand).</summary>
    public static TorchCheckpointFile Open(string path)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        ZipArchive? zip = null;
        try
        {
            Span<byte> magic = stackalloc byte[4];
            int got = fs.Read(magic);
            fs.Position = 0;
            if (got >= 2 && magic[0] == 0x80 && magic[1] <= 5 || got >= 1 && magic[0] == 0x8a)
                throw new InvalidDataException($"{path}: a legacy (pre-1.6, non-zip) torch.save file; re-save it with torch ≥ 1.6 (the default zip format)");
            if (got < 4 || magic[0] != (byte)'P' || magic[1] != (byte)'K')
                throw new InvalidDataException($"{path}: not a torch.save zip archive (no zip signature)");
            try { zip = new ZipArchive(fs, ZipArchiveMode.Read, leaveOpen: true); }
            catch (InvalidDataException e) { throw new InvalidDataException($"{path}: corrupt or truncated zip archive: {e.Message}", e); }

            var pkls = zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length).ToList();
            if (pkls.Count != 1)
                throw new InvalidDataException($"{path}: expected one '<archive>/data.pkl' entry, found {pkls.Count} (not a torch.save checkpoint?)");
            string prefix = pkls[0].FullName[..^"data.pkl".Length];

            var order = zip.GetEntry(prefix + "byteorder");
            if (order is not null)
            {
                string bo = ReadText(path, order).Trim();
                if (bo != "little") throw new InvalidDataException($"{path}: byteorder is '{bo}'; only little-endian checkpoints are supported");
            }

            byte[] pkl = ReadAll(path, pkls[0]);
            object root = TorchPickle.Load(pkl, path);
            if (root is not PyDict dict)
                throw new InvalidDataException($"{path}: the pickled object is not a dict (not a state dict?)");

            var f = new TorchCheckpointFile(path, fs, zip);
            f.Flatten(dict, "", prefix);
            return f;
        }
        catch
        {
            zip?.Dispose();
            fs.Dispose();
            throw;
        }
    }

    private void Flatten(PyDict dict, string prefix, string archive)
    {
        foreach (var (k, v) in dict.Items)
        {
            string name = prefix + (k is bool b ? (b ? "True" : "False") : Convert.ToString(k, System.Globalization.CultureInfo.InvariantCulture));
            switch (v)
            {
                case PyDict inner: Flatten(inner, name + ".", archive); break;
                case TorchTensorRef t: Add(name, t, archive); break;
                default: break; // counters, strings, lists: not tensors, nothing to load
            }
        }
    }

    private void Add(string name, TorchTensorRef t, string archive)
    {
        string where = $"{Path}: tensor '{name}'";
        if (_entries.ContainsKey(name)) throw new InvalidDataException($"{where} appears twice after flattening nested dicts");
        if (t.Size.Length != t.Stride.Length) throw new InvalidDataException($"{where} has {t.Size.Length} sizes but {t.Stride.Length} strides");
        var dims = new int[t.Size.Length];
        long numel = 1, extent = 0;
        for (int i = 0; i < dims.Length; i++)
        {
            if (t.Size[i] is < 0 or > int.MaxValue) throw new InvalidDataException($"{where} has dimension {i} of size {t.Size[i]}");
            if (t.Stride[i] < 0) throw new InvalidDataException($"{where} has a negative stride");
            dims[i] = (int)t.Size[i];
            numel = checked(numel * dims[i]);
            extent = checked(extent + (dims[i] - 1) * t.Stride[i]);
        }
        var s = t.Storage;
        if (numel > 0 && (t.Offset < 0 || checked(t.Offset + extent + 1) > s.Numel))
            throw new InvalidDataException($"{where} (offset {t.Offset}, size {Shape.Format(dims)}) reaches past the end of its storage '{s.Key}' of {s.Numel} elements");
        string entryName = archive + "data/" + s.Key;
        var zipEntry = _zip.GetEntry(entryName) ?? throw new InvalidDataException($"{where}: its storage entry '{entryName}' is missing from the archive");
        long need = checked(s.Numel * s.Type.Size());
        if (zipEntry.Length < need)
            throw new InvalidDataException($"{where}: storage '{s.Key}' is {s.TypeName}[{s.Numel}] ({need} bytes) but its entry holds {zipEntry.Length} bytes (truncated?)");
        _entries[name] = new Entry(new TensorInfo(name, s.Type.Loaded(), new Shape(dims), Path), s.Type, t, zipEntry);
    }

    /// <inheritdoc />
    public void ReadInto(string name, Tensor destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var e = Get(name);
        string where = $"{Path}: tensor '{name}'";
        if (destination.Shape != e.Info.Shape)
            throw new InvalidDataException($"{where} is {e.Stored} {e.Info.Shape} but the destination is {destination.Shape}");
        if (!e.Stored.CanReadInto(destination.DType))
            throw new InvalidDataException($"{where} is {e.Ref.Storage.TypeName}; it cannot be loaded into a {destination.DType} tensor");
        if (!IsContiguous(e.Ref))
            throw new InvalidDataException($"{where} is not contiguous in its storage (strides [{string.Join(", ", e.Ref.Stride)}] for size {e.Info.Shape}); save it with .contiguous()");
        if (destination.NumElements == 0) return;
        using var fill = new TensorFiller(e.Stored, destination, where);
        lock (_zip)
        {
            try
            {
                using var s = e.Zip.Open();
                Skip(s, e.Ref.Offset * e.Stored.Size());
                fill.Write(s, destination.NumElements);
            }
            catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or IOException && ex is not FileNotFoundException)
            {
                throw new InvalidDataException($"{where}: reading storage '{e.Ref.Storage.Key}' failed (truncated or corrupt file?): {ex.Message}", ex);
            }
        }
    }

    private static bool IsContiguous(TorchTensorRef t)
    {
        long expect = 1;
        for (int i = t.Size.Length - 1; i >= 0; i--)
        {
            if (t.Size[i] != 1 && t.Stride[i] != expect) return false;
            expect *= t.Size[i];
        }
        return true;
    }

    private static void Skip(Stream s, long bytes)
    {
        if (bytes == 0) return;
        if (s.CanSeek) { s.Seek(bytes, SeekOrigin.Current); return; }
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 16);
        try
        {
            while (bytes > 0)
            {
                int k = (int)Math.Min(bytes, buf.Length);
                s.ReadExactly(buf, 0, k);
                bytes -= k;
            }
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
    }

    private static byte[] ReadAll(string path, ZipArchiveEntry e)
    {
        if (e.Length > 1L << 30) throw new InvalidDataException($"{path}: '{e.FullName}' is {e.Length} bytes, too large for a pickle");
        var buf = new byte[e.Length];
        try
        {
            using var s = e.Open();
            s.ReadExactly(buf);
        }
        catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or IOException)
        {
            throw new InvalidDataException($"{path}: cannot read '{e.FullName}' (truncated or corrupt?): {ex.Message}", ex);
        }
        return buf;
    }

    private static string ReadText(string path, ZipArchiveEntry e) => System.Text.Encoding.ASCII.GetString(ReadAll(path, e));

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _zip.Dispose();
        _stream.Dispose();
    }
}
