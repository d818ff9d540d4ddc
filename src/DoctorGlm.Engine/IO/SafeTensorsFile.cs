using System.Buffers.Binary;
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
/// Every inconsistency — truncated file, offsets outside the data, a size that does not match dtype × shape,
/// overlapping tensors — throws <see cref="InvalidDataException"/> naming the file and the key.
/// </summary>
public sealed class SafeTensorsFile : ITensorSource
{
    private readonly FileStream _stream;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorsEntry> _entries = new(StringComparer.Ordinal);

    private SafeTensorsFile(string path, FileStream stream, long dataStart, Dictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
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

    private TensorInfo ToInfo(SafeTensorsEntry e) => new(e.Name, ToDType(e.DTypeName) ?? DType.F32, new Shape(e.Shape), Path);

    private static DType? ToDType(string name) => name switch
    {
        "F32" => DType.F32, "F16" => DType.F16, "BF16" => DType.BF16, "I32" => DType.I32, "U8" or "BOOL" => DType.U8, "I8" => DType.I8, _ => null,
    };

    /// <inheritdoc />
    public void ReadInto(string name, Tensor destination)
    {
        var e = this[name];
        if (!destination.Shape.Dims.SequenceEqual(e.Shape))
            throw new InvalidDataException($"{Path}: tensor '{name}' is {e.DTypeName} {Shape.Format(e.Shape)} but the destination is {destination.Shape}");
        var stored = ToDType(e.DTypeName);
        if (stored == destination.DType)
        {
            var bytes = new byte[e.End - e.Begin];
            ReadBytes(name, bytes);
            destination.Backend.CopyFromHost(bytes, destination);
            return;
        }
        if (stored is not null && stored.Value.IsFloat() && destination.DType.IsFloat() || e.DTypeName == "F64" && destination.DType.IsFloat())
        {
            using var _ = TensorScope.Unscoped();
            using var tmp = Load(name, destination.Device);
            destination.Backend.Copy(tmp, destination);
            return;
        }
        throw new InvalidDataException($"{Path}: tensor '{name}' is {e.DTypeName}; it cannot be loaded into a {destination.DType} tensor");
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
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "U8" or "I8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => -1,
    };

    /// <summary>Opens and validates a file's header (the data is read on demand).</summary>
    public static SafeTensorsFile Open(string path)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            Span<byte> lenBytes = stackalloc byte[8];
            if (fs.Length < 8 || fs.Read(lenBytes) != 8) throw new InvalidDataException($"{path}: truncated: shorter than the 8-byte header length");
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLen > 100_000_000 || (long)headerLen > fs.Length - 8)
                throw new InvalidDataException($"{path}: header length {headerLen} does not fit in a file of {fs.Length} bytes");
            var header = new byte[headerLen];
            fs.ReadExactly(header);
            long dataStart = 8 + (long)headerLen;
            long dataLen = fs.Length - dataStart;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(header); }
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
                var f = new SafeTensorsFile(path, fs, dataStart, meta);
                foreach (var e in list) f._entries[e.Name] = e;
                var sorted = list.OrderBy(e => e.Begin).ToList();
                for (int i = 1; i < sorted.Count; i++)
                    if (sorted[i].Begin < sorted[i - 1].End && sorted[i].End > sorted[i].Begin)
                        throw new InvalidDataException($"{path}: tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap");
                return f;
            }
        }
        catch { fs.Dispose(); throw; }
    }

    private static SafeTensorsEntry ParseEntry(string path, JsonProperty prop, long dataLen)
    {
        string key = prop.Name;
        try
        {
            var v = prop.Value;
            string dtype = v.GetProperty("dtype").GetString() ?? "";
            int esize = ElementSize(dtype);
            if (esize < 0) throw new InvalidDataException($"{path}: tensor '{key}' has unknown dtype '{dtype}'");
            var shape = v.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
            if (shape.Any(d => d < 0)) throw new InvalidDataException($"{path}: tensor '{key}' has a negative dimension");
            var offs = v.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
            if (offs.Length != 2) throw new InvalidDataException($"{path}: tensor '{key}' data_offsets must have two entries");
            long numel = 1;
            foreach (int d in shape) numel *= d;
            if (offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen)
                throw new InvalidDataException($"{path}: tensor '{key}' data_offsets [{offs[0]}, {offs[1]}) lie outside the {dataLen} data bytes (truncated file?)");
            if (offs[1] - offs[0] != numel * esize)
                throw new InvalidDataException($"{path}: tensor '{key}' holds {offs[1] - offs[0]} bytes but {dtype} {Shape.Format(shape)} needs {numel * esize}");
            return new SafeTensorsEntry(key, dtype, shape, offs[0], offs[1]);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: tensor '{key}' has a malformed header entry: {e.Message}", e);
        }
    }

    /// <summary>Reads the raw bytes of <paramref name="name"/> into <paramref name="destination"/>.</summary>
    public void ReadBytes(string name, Span<byte> destination)
    {
        var e = this[name];
        if (destination.Length != e.End - e.Begin) throw new ArgumentException($"{Path}: '{name}' has {e.End - e.Begin} bytes, destination {destination.Length}");
        lock (_stream)
        {
            _stream.Position = _dataStart + e.Begin;
            _stream.ReadExactly(destination);
        }
    }

    /// <summary>Loads <paramref name="name"/> as a tensor (F32/F16/BF16/I32/U8/I8 as stored; F64 converted to F32; I64 and BOOL to I32/U8).</summary>
    public Tensor Load(string name, Device? device = null)
    {
        var e = this[name];
        var bytes = new byte[e.End - e.Begin];
        ReadBytes(name, bytes);
        var shape = new Shape(e.Shape);
        switch (e.DTypeName)
        {
            case "F32": return Tensor.FromBytes(bytes, shape, DType.F32, device);
            case "F16": return Tensor.FromBytes(bytes, shape, DType.F16, device);
            case "BF16": return Tensor.FromBytes(bytes, shape, DType.BF16, device);
            case "I32": return Tensor.FromBytes(bytes, shape, DType.I32, device);
            case "U8": case "BOOL": return Tensor.FromBytes(bytes, shape, DType.U8, device);
            case "I8": return Tensor.FromBytes(bytes, shape, DType.I8, device);
            case "F64": return Tensor.FromArray(ReadDoubles(name).Select(d => (float)d).ToArray(), shape, DType.F32, device);
            case "I64":
            {
                var ints = new int[bytes.Length / 8];
                for (int i = 0; i < ints.Length; i++)
                {
                    long v = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(i * 8));
                    ints[i] = v is >= int.MinValue and <= int.MaxValue ? (int)v : throw new InvalidDataException($"{Path}: '{name}' element {i} = {v} does not fit in I32");
                }
                return Tensor.FromArray(ints, shape, device);
            }
            default: throw new InvalidDataException($"{Path}: tensor '{name}' has dtype {e.DTypeName}, which this engine does not load");
        }
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

    /// <inheritdoc />
    public void Dispose() => _stream.Dispose();

    /// <summary>
    /// Writes tensors (in the given order) and metadata to <paramref name="path"/> atomically: the file is written
    /// under a temporary name, flushed, and renamed over the target, so a crash never leaves a half-written file.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.ToList();
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
            foreach (var (name, t) in items)
            {
                long n = t.NumElements * t.DType.SizeOf();
                w.WriteStartObject(name);
                w.WriteString("dtype", t.DType.SafeTensorsName());
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
                foreach (var (_, t) in items) fs.Write(t.ToBytes());
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
}
