using System.Buffers;
using System.Runtime.CompilerServices;

namespace DoctorGlm.Engine.IO;

/// <summary>Element types as they appear on disk (a superset of <see cref="DType"/>: checkpoints also hold f64, i64, i16 and bool).</summary>
internal enum StoredType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool }

/// <summary>Sizes, the engine dtype each stored type loads as, and conversion of raw little-endian bytes into tensors.</summary>
internal static unsafe class StoredTypes
{
    public static int Size(this StoredType t) => t switch
    {
        StoredType.F64 or StoredType.I64 => 8,
        StoredType.F32 or StoredType.I32 => 4,
        StoredType.F16 or StoredType.BF16 or StoredType.I16 => 2,
        _ => 1,
    };

    /// <summary>The engine dtype a stored tensor is described as (f64 → F32, i64/i16 → I32, bool → U8).</summary>
    public static DType Loaded(this StoredType t) => t switch
    {
        StoredType.F64 or StoredType.F32 => DType.F32,
        StoredType.F16 => DType.F16,
        StoredType.BF16 => DType.BF16,
        StoredType.I64 or StoredType.I32 or StoredType.I16 => DType.I32,
        StoredType.I8 => DType.I8,
        _ => DType.U8,
    };

    public static bool IsFloat(this StoredType t) => t is StoredType.F64 or StoredType.F32 or StoredType.F16 or StoredType.BF16;

    /// <summary>
    /// Floats convert to any float dtype (round to nearest even); integers only to the dtype they load as, which is
    /// exact (i64 values outside the i32 range are refused when read). Nothing converts between ints and floats:
    /// a checkpoint that stores ints where floats are expected is a wrong file, not a conversion.
    /// </summary>
    public static bool CanReadInto(this StoredType t, DType d) => t.IsFloat() ? d.IsFloat() : t.Loaded() == d;

    public static StoredType FromSafeTensors(string name) => name switch
    {
        "F64" => StoredType.F64, "F32" => StoredType.F32, "F16" => StoredType.F16, "BF16" => StoredType.BF16,
        "I64" => StoredType.I64, "I32" => StoredType.I32, "I16" => StoredType.I16, "I8" => StoredType.I8,
        "U8" => StoredType.U8, "BOOL" => StoredType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unsupported safetensors dtype"),
    };

    /// <summary>True when the bytes need no conversion for <paramref name="d"/> (a plain copy).</summary>
    public static bool SameBytes(this StoredType t, DType d) => t.Size() == d.SizeOf() && t.Loaded() == d && t != StoredType.I16;

    /// <summary>
    /// Converts <paramref name="n"/> elements from <paramref name="src"/> (stored, little-endian, possibly unaligned)
    /// to <paramref name="dst"/> (dtype <paramref name="d"/>). <paramref name="where"/> names the tensor for errors.
    /// </summary>
    public static void Convert(StoredType t, byte* src, DType d, byte* dst, long n, string where, long firstIndex)
    {
        if (t.SameBytes(d)) { Buffer.MemoryCopy(src, dst, n * d.SizeOf(), n * d.SizeOf()); return; }
        if (t.IsFloat())
        {
            for (long i = 0; i < n; i++)
            {
                if (t == StoredType.F64)
                {
                    double v = BitConverter.Int64BitsToDouble(Unsafe.ReadUnaligned<long>(src + i * 8));
                    // f64 → f16/bf16 goes through f32 (double rounding), as torch's .to() does; documented, never exact anyway.
                    StoreFloat(d, dst, i, (float)v);
                }
                else StoreFloat(d, dst, i, LoadFloat(t, src, i));
            }
            return;
        }
        switch (t)
        {
            case StoredType.I64:
                for (long i = 0; i < n; i++)
                {
                    long v = Unsafe.ReadUnaligned<long>(src + i * 8);
                    if (v is < int.MinValue or > int.MaxValue)
                        throw new InvalidDataException($"{where}: element {firstIndex + i} = {v} does not fit in I32");
                    ((int*)dst)[i] = (int)v;
                }
                return;
            case StoredType.I16:
                for (long i = 0; i < n; i++) ((int*)dst)[i] = Unsafe.ReadUnaligned<short>(src + i * 2);
                return;
            case StoredType.Bool:
                for (long i = 0; i < n; i++) dst[i] = src[i] != 0 ? (byte)1 : (byte)0;
                return;
        }
        throw new InvalidOperationException($"{where}: no conversion from {t} to {d}");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadFloat(StoredType t, byte* src, long i) => t switch
    {
        StoredType.F32 => Unsafe.ReadUnaligned<float>(src + i * 4),
        StoredType.F16 => HalfConvert.F16ToFloat(Unsafe.ReadUnaligned<ushort>(src + i * 2)),
        _ => HalfConvert.Bf16ToFloat(Unsafe.ReadUnaligned<ushort>(src + i * 2)),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFloat(DType d, byte* dst, long i, float v)
    {
        switch (d)
        {
            case DType.F32: ((float*)dst)[i] = v; break;
            case DType.F16: ((ushort*)dst)[i] = HalfConvert.FloatToF16(v); break;
            default: ((ushort*)dst)[i] = HalfConvert.FloatToBf16(v); break;
        }
    }

    static StoredTypes()
    {
        // Raw copies assume a little-endian host (every platform .NET 10 ships on); fail loudly rather than load garbage.
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("checkpoint I/O needs a little-endian host");
    }
}

/// <summary>
/// Writes a stored tensor's bytes, in order, into a contiguous destination of any device, converting as it goes.
/// CPU destinations are written in place; other devices go through a bounded host staging buffer, so no buffer the
/// size of the tensor is ever allocated.
/// </summary>
internal sealed unsafe class TensorFiller : IDisposable
{
    private const int StagingBytes = 1 << 22;
    private readonly StoredType _stored;
    private readonly Tensor _dst;
    private readonly string _where;
    private readonly bool _cpu;
    private readonly int _dsize;
    private byte[]? _staging;
    private long _written; // elements

    public TensorFiller(StoredType stored, Tensor destination, string where)
    {
        destination.ThrowIfDisposed();
        if (!destination.IsContiguous) throw new ArgumentException($"{where}: the destination {destination.Describe("tensor")} is not contiguous");
        _stored = stored;
        _dst = destination;
        _where = where;
        _cpu = destination.Device.Kind == DeviceKind.Cpu;
        _dsize = destination.DType.SizeOf();
    }

    public long Remaining => _dst.NumElements - _written;

    /// <summary>Converts and writes <paramref name="n"/> stored elements starting at <paramref name="src"/>.</summary>
    public void Write(byte* src, long n)
    {
        if (n > Remaining) throw new InvalidOperationException($"{_where}: {n} elements written past the end");
        if (_cpu)
        {
            StoredTypes.Convert(_stored, src, _dst.DType, _dst.Ptr<byte>() + _written * _dsize, n, _where, _written);
            _written += n;
            return;
        }
        _staging ??= ArrayPool<byte>.Shared.Rent(StagingBytes);
        int per = StagingBytes / Math.Max(_dsize, _stored.Size());
        while (n > 0)
        {
            int k = (int)Math.Min(n, per);
            fixed (byte* s = _staging)
                StoredTypes.Convert(_stored, src, _dst.DType, s, k, _where, _written);
            using (TensorScope.Unscoped())
            using (var view = _dst.ViewAs(new Shape(k), [1], _dst.Offset + _written))
                _dst.Backend.CopyFromHost(_staging.AsSpan(0, k * _dsize), view);
            _written += k;
            src += (long)k * _stored.Size();
            n -= k;
        }
    }

    /// <summary>Reads <paramref name="n"/> stored elements from <paramref name="stream"/> (exactly; a short stream throws).</summary>
    public void Write(Stream stream, long n)
    {
        int esize = _stored.Size();
        if (_cpu && _stored.SameBytes(_dst.DType))
        {
            // Straight from the stream into the tensor's memory: no intermediate buffer at all.
            byte* p = _dst.Ptr<byte>() + _written * _dsize;
            long bytes = n * esize;
            while (bytes > 0)
            {
                int k = (int)Math.Min(bytes, 1 << 30);
                stream.ReadExactly(new Span<byte>(p, k));
                p += k;
                bytes -= k;
            }
            _written += n;
            return;
        }
        var buf = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            int per = buf.Length / esize;
            while (n > 0)
            {
                int k = (int)Math.Min(n, per);
                stream.ReadExactly(buf, 0, k * esize);
                fixed (byte* s = buf) Write(s, k);
                n -= k;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    public void Dispose()
    {
        if (_staging is not null) { ArrayPool<byte>.Shared.Return(_staging); _staging = null; }
    }
}
