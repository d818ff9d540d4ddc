using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;

namespace DoctorGlm.Engine.IO;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">Key.</param>
/// <param name="DTypeName">The header's dtype string (F32, F16, BF16, I32, U8, I8, F64, I64, BOOL).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Byte offset of the data, relative to the end of the header.</param>
/// <param name="End">End offset (exclusive), relative to the end of the header.</param>
public sealed record SafeTensorsEntry(string Name, string DTypeName, int[] Shape, long Begin, long End);

/// <summary>
/// Reader for the safetensors format (an 8-byte little-endian header length, a JSON header, raw row-major data).
/// The file is memory-mapped: <see cref="ReadInto"/> copies (and converts) straight from the mapping into the
/// destination, so loading a model never holds a second copy of a tensor.
/// Every inconsistency — truncated file, offsets outside the data, a size that does not match dtype × shape,
/// overlapping tensors — throws <see cref="InvalidDataException"/> naming the file and the key.
/// </summary>
public sealed unsafe class SafeTensorsFile : ITensorSource
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base; // start of the mapping (null once disposed)
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorsEntry> _entries = new(StringComparer.Ordinal);

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, long dataStart, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _dataStart = dataStart;
        Metadata = metadata;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The <c>__metadata__</c> strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <inheritdoc />
    public string Description => Path;

    /// <inheritdoc />
    public IReadOnlyCollection<TensorInfo> Tensors => _entries.Values.Select(e => ToInfo(e)).ToArray();

    /// <inheritdoc />
    public TensorInfo Info(string name) => ToInfo(this[name]);

    private TensorInfo ToInfo(SafeTensorsEntry e) => new(e.Name, StoredTypes.FromSafeTensors(e.DTypeName).Loaded(), new Shape(e.Shape), Path);

    /// <inheritdoc />
    public void ReadInto(string name, Tensor destination)
    {
        var e = this[name];
        if (!destination.Shape.Dims.SequenceEqual(e.Shape))
            throw new InvalidDataException($"{Path}: tensor '{name}' is {e.DTypeName} {Shape.Format(e.Shape)} but the destination is {destination.Shape}");
        var stored = StoredTypes.FromSafeTensors(e.DTypeName);
        if (!stored.CanReadInto(destination.DType))
            throw new InvalidDataException($"{Path}: tensor '{name}' is {e.DTypeName}; it cannot be loaded into a {destination.DType} tensor");
        using var fill = new TensorFiller(stored, destination, $"{Path}: tensor '{name}'");
        fill.Write(DataPointer(e), destination.NumElements);
    }

    private byte* DataPointer(SafeTensorsEntry e)
    {
        if (_base is null) throw new ObjectDisposedException(Path, $"{Path} was closed");
        return _base + _dataStart + e.Begin;
    }

    /// <summary>Entries in header order.</summary>
    public IReadOnlyCollection<SafeTensorsEntry> Entries => _entries.Values;

    /// <summary>True when the file holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>The entry for <paramref name="name"/>.</summary>
    public SafeTensorsEntry this[string name] => _entries.TryGetValue(name, out var e) ? e
        : throw new KeyNotFoundException($"{Path}: no tensor named '{name}' (it has {_entries.Count}: {string.Join(", ", _entries.Keys.Take(8))}{(_entries.Count > 8 ? ", …" : "")})");

    internal static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "U8" or "I8" or "BOOL" => 1,
        _ => -1, // U16/U32/U64/F8 have no engine dtype: refused at open rather than misread later
    };

    /// <summary>Opens and validates a file's header (the data is mapped, not read).</summary>
    public static SafeTensorsFile Open(string path)
    {
        // The opened file's length, not FileInfo's: for a symbolic link (a Hugging Face cache links every file into
        // its blobs) FileInfo describes the link itself. Throws FileNotFoundException naming the path.
        long length;
        using (var probe = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) length = probe.Length;
        if (length < 8) throw new InvalidDataException($"{path}: truncated: {length} bytes is shorter than the 8-byte header length");
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        byte* p = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            byte* basePtr = p + view.PointerOffset;
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(basePtr, 8));
            if (headerLen > 100_000_000 || (long)headerLen > length - 8)
                throw new InvalidDataException($"{path}: header length {headerLen} does not fit in a file of {length} bytes (truncated?)");
            var header = new ReadOnlySpan<byte>(basePtr + 8, (int)headerLen);
            long dataStart = 8 + (long)headerLen;
            long dataLen = length - dataStart;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(header.ToArray()); }
            catch (JsonException e) { throw new InvalidDataException($"{path}: header is not valid JSON: {e.Message}", e); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: header is not a JSON object");
                var meta = new Dictionary<string, string>(StringComparer.Ordinal);
                var list = new List<SafeTensorsEntry>();
                foreach (var prop in doc.RootElement.EnumerateObject())
                {
                    if (prop.Name == "__metadata__")
                    {
                        if (prop.Value.ValueKind == JsonValueKind.Object)
                            foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                        continue;
                    }
                    list.Add(ParseEntry(path, prop, dataLen));
                }
                var sorted = list.OrderBy(e => e.Begin).ToList();
                for (int i = 1; i < sorted.Count; i++)
                    if (sorted[i].Begin < sorted[i - 1].End && sorted[i].End > sorted[i].Begin)
                        throw new InvalidDataException($"{path}: tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap");
                var f = new SafeTensorsFile(path, map, view, basePtr, dataStart, meta);
                foreach (var e in list)
                    if (!f._entries.TryAdd(e.Name, e)) throw new InvalidDataException($"{path}: tensor '{e.Name}' is listed twice");
                return f;
            }
        }
        catch
        {
            if (p is not null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    private static SafeTensorsEntry ParseEntry(string path, JsonProperty prop, long dataLen)
    {
        string key = prop.Name;
        try
        {
            var v = prop.Value;
            string dtype = v.GetProperty("dtype").GetString() ?? "";
            int esize = ElementSize(dtype);
            if (esize < 0) throw new InvalidDataException($"{path}: tensor '{key}' has unsupported dtype '{dtype}'");
            var shape = v.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
            if (shape.Any(d => d < 0)) throw new InvalidDataException($"{path}: tensor '{key}' has a negative dimension");
            var offs = v.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
            if (offs.Length != 2) throw new InvalidDataException($"{path}: tensor '{key}' data_offsets must have two entries");
            long numel = 1;
            foreach (int d in shape) numel = checked(numel * d);
            if (offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen)
                throw new InvalidDataException($"{path}: tensor '{key}' data_offsets [{offs[0]}, {offs[1]}) lie outside the {dataLen} data bytes (truncated file?)");
            if (offs[1] - offs[0] != numel * esize)
                throw new InvalidDataException($"{path}: tensor '{key}' holds {offs[1] - offs[0]} bytes but {dtype} {Shape.Format(shape)} needs {numel * esize}");
            return new SafeTensorsEntry(key, dtype, shape, offs[0], offs[1]);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or OverflowException)
        {
            throw new InvalidDataException($"{path}: tensor '{key}' has a malformed header entry: {e.Message}", e);
        }
    }

    /// <summary>Reads the raw bytes of <paramref name="name"/> into <paramref name="destination"/>.</summary>
    public void ReadBytes(string name, Span<byte> destination)
    {
        var e = this[name];
        if (destination.Length != e.End - e.Begin) throw new ArgumentException($"{Path}: '{name}' has {e.End - e.Begin} bytes, destination {destination.Length}");
        new ReadOnlySpan<byte>(DataPointer(e), destination.Length).CopyTo(destination);
    }

    /// <summary>Loads <paramref name="name"/> as a tensor (F32/F16/BF16/I32/U8/I8 as stored; F64 converted to F32; I64 and I16 to I32; BOOL to U8).</summary>
    public Tensor Load(string name, Device? device = null)
    {
        var info = Info(name);
        var t = Tensor.Empty(info.Shape, info.DType, device);
        try { ReadInto(name, t); }
        catch { t.Dispose(); throw; }
        return t;
    }

    /// <summary>Reads an F64 or F32 tensor as doubles (exact).</summary>
    public double[] ReadDoubles(string name)
    {
        var e = this[name];
        var bytes = new byte[e.End - e.Begin];
        ReadBytes(name, bytes);
        return e.DTypeName switch
        {
            "F64" => Enumerable.Range(0, bytes.Length / 8).Select(i => BinaryPrimitives.ReadDoubleLittleEndian(bytes.AsSpan(i * 8))).ToArray(),
            "F32" => Enumerable.Range(0, bytes.Length / 4).Select(i => (double)BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4))).ToArray(),
            _ => throw new InvalidDataException($"{Path}: tensor '{name}' is {e.DTypeName}, not F64/F32"),
        };
    }

    /// <summary>Unmaps the file; tensors already read are unaffected.</summary>
    public void Dispose()
    {
        if (_base is null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>
    /// Writes tensors (in the given order) and metadata to <paramref name="path"/> atomically: the file is written
    /// under a temporary name, flushed, and renamed over the target, so a crash never leaves a half-written file.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, tensors, metadata, storedAs: null);

    /// <summary>
    /// <see cref="Save(string, IEnumerable{KeyValuePair{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>, each
    /// tensor stored as the dtype <paramref name="storedAs"/> gives for it (name, tensor): a tensor to convert is copied
    /// to that dtype just before it is written and freed after, so saving a model in another precision needs one
    /// tensor's worth of extra memory, not a converted copy of the model.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata,
        Func<string, Tensor, DType>? storedAs)
    {
        var items = tensors.Select(kv => (kv.Key, kv.Value, Stored: storedAs?.Invoke(kv.Key, kv.Value) ?? kv.Value.DType)).ToList();
        foreach (var (name, t, stored) in items)
            if (stored != t.DType && !(stored.IsFloat() && t.DType.IsFloat()))
                throw new ArgumentException($"SafeTensorsFile.Save: tensor '{name}' is {t.DType}; only float tensors convert (to {stored})");
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t, stored) in items)
            {
                long n = t.NumElements * stored.SizeOf();
                w.WriteStartObject(name);
                w.WriteString("dtype", stored.SafeTensorsName());
                w.WriteStartArray("shape");
                foreach (int d in t.Shape.Dims) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + n);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += n;
            }
            w.WriteEndObject();
        }
        var json = buffer.WrittenSpan.ToArray();
        int pad = (8 - json.Length % 8) % 8;
        var headerBytes = new byte[json.Length + pad];
        json.CopyTo(headerBytes, 0);
        for (int i = json.Length; i < headerBytes.Length; i++) headerBytes[i] = (byte)' ';

        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, "." + System.IO.Path.GetFileName(path) + "." + Environment.ProcessId + ".tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerBytes.Length);
                fs.Write(len);
                fs.Write(headerBytes);
                foreach (var (_, t, stored) in items)
                {
                    if (stored == t.DType) { WriteTensor(fs, t); continue; }
                    using var _ = TensorScope.Unscoped();
                    using var converted = Tensor.Empty(t.Shape, stored, t.Device);
                    t.Backend.Copy(t, converted);
                    WriteTensor(fs, converted);
                }
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    private static void WriteTensor(Stream fs, Tensor t)
    {
        if (t.Device.Kind == DeviceKind.Cpu && t.IsContiguous)
        {
            // Write straight from the tensor's memory (no copy the size of the tensor).
            byte* p = t.Ptr<byte>();
            long bytes = t.NumElements * t.DType.SizeOf();
            while (bytes > 0)
            {
                int k = (int)Math.Min(bytes, 1 << 30);
                fs.Write(new ReadOnlySpan<byte>(p, k));
                p += k;
                bytes -= k;
            }
        }
        else fs.Write(t.ToBytes());
    }
}
