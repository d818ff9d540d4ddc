using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// Vectorised conversions between fp32 and the 16-bit storage formats over contiguous runs, with exactly the
/// results of <see cref="HalfConvert"/> (round to nearest even, NaN kept a quiet NaN). They sit on hot paths:
/// casts of whole weight matrices, and the GEMM's packing of bf16/fp16 operands.
/// </summary>
internal static unsafe class CpuFloatConvert
{
    /// <summary>d[i] = (float)s[i] for a run of <paramref name="n"/> elements of float type <paramref name="src"/>.</summary>
    public static void ToSingle(DType src, void* s, float* d, long n)
    {
        switch (src)
        {
            case DType.F32: Buffer.MemoryCopy(s, d, n * sizeof(float), n * sizeof(float)); break;
            case DType.BF16: Bf16ToSingle((ushort*)s, d, n); break;
            case DType.F16: F16ToSingle((Half*)s, d, n); break;
            default: throw new ArgumentException($"{src} is not a float type", nameof(src));
        }
    }

    /// <summary>d[i] = (dst)s[i], rounding to nearest even, for a run of <paramref name="n"/> floats.</summary>
    public static void FromSingle(float* s, DType dst, void* d, long n)
    {
        switch (dst)
        {
            case DType.F32: Buffer.MemoryCopy(s, d, n * sizeof(float), n * sizeof(float)); break;
            case DType.BF16: SingleToBf16(s, (ushort*)d, n); break;
            case DType.F16:
                for (long i = 0; i < n; i += int.MaxValue / 2)
                {
                    int len = (int)Math.Min(n - i, int.MaxValue / 2);
                    TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(s + i, len), new Span<Half>((Half*)d + i, len));
                }
                break;
            default: throw new ArgumentException($"{dst} is not a float type", nameof(dst));
        }
    }

    /// <summary>bf16 → fp32 is exact: the bf16 bits become the top half of the float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Bf16ToSingle(ushort* s, float* d, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= n; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(s + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(d + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(d + i + Vector256<uint>.Count);
            }
        }
        for (; i < n; i++) d[i] = HalfConvert.Bf16ToFloat(s[i]);
    }

    /// <summary>
    /// fp16 → fp32 in registers, exact for every bit pattern (.NET exposes no <c>vcvtph2ps</c>), of eight fp16 values
    /// zero-extended to 32 bits each: a normal's exponent and mantissa move up 13 places and the exponent is rebased by
    /// adding (127 − 15) &lt;&lt; 23; an all-ones exponent (inf, NaN) is rebased once more, to fp32's all-ones; a subnormal
    /// (or zero) is its 10-bit mantissa times 2^-24, converted from an integer — no lane multiplies an fp32 denormal
    /// (a microcode assist on some cores). The sign goes back last.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> F16BitsToSingle(Vector256<uint> u)
    {
        var m = u & Vector256.Create(0x7FFFu);
        var bits = Vector256.ShiftLeft(m, 13) + Vector256.Create(0x3800_0000u);
        bits += Vector256.Equals(m & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u)) & Vector256.Create(0x3800_0000u);
        var subnormal = Vector256.ConvertToSingle(m.AsInt32()) * Vector256.Create(0x3380_0000u).AsSingle(); // × 2^-24
        var value = Vector256.ConditionalSelect(Vector256.LessThan(m.AsInt32(), Vector256.Create(0x400)).AsUInt32(), subnormal.AsUInt32(), bits);
        return (value | Vector256.ShiftLeft(u & Vector256.Create(0x8000u), 16)).AsSingle();
    }

    /// <summary><see cref="F16BitsToSingle(Vector256{uint})"/> for sixteen values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> F16BitsToSingle(Vector512<uint> u)
    {
        var m = u & Vector512.Create(0x7FFFu);
        var bits = Vector512.ShiftLeft(m, 13) + Vector512.Create(0x3800_0000u);
        bits += Vector512.Equals(m & Vector512.Create(0x7C00u), Vector512.Create(0x7C00u)) & Vector512.Create(0x3800_0000u);
        var subnormal = Vector512.ConvertToSingle(m.AsInt32()) * Vector512.Create(0x3380_0000u).AsSingle(); // × 2^-24
        var value = Vector512.ConditionalSelect(Vector512.LessThan(m.AsInt32(), Vector512.Create(0x400)).AsUInt32(), subnormal.AsUInt32(), bits);
        return (value | Vector512.ShiftLeft(u & Vector512.Create(0x8000u), 16)).AsSingle();
    }

    /// <summary>fp16 → fp32 (exact), through TensorPrimitives' vectorised conversion.</summary>
    public static void F16ToSingle(Half* s, float* d, long n)
    {
        for (long i = 0; i < n; i += int.MaxValue / 2)
        {
            int len = (int)Math.Min(n - i, int.MaxValue / 2);
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(s + i, len), new Span<float>(d + i, len));
        }
    }

    /// <summary>fp32 → bf16 with <see cref="HalfConvert.FloatToBf16"/>'s rounding, eight lanes at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SingleToBf16(float* s, ushort* d, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var absMask = Vector256.Create(0x7FFF_FFFFu);
            var inf = Vector256.Create(0x7F80_0000u);
            var bias = Vector256.Create(0x7FFFu);
            var one = Vector256.Create(1u);
            var quiet = Vector256.Create(0x0040u);
            for (; i + 2 * Vector256<uint>.Count <= n; i += 2 * Vector256<uint>.Count)
            {
                var r0 = Round(Vector256.Load((uint*)(s + i)));
                var r1 = Round(Vector256.Load((uint*)(s + i + Vector256<uint>.Count)));
                Vector256.Narrow(r0, r1).Store(d + i);
            }

            Vector256<uint> Round(Vector256<uint> u)
            {
                var rounded = (u + bias + (Vector256.ShiftRightLogical(u, 16) & one)) >>> 16;
                var nan = Vector256.ShiftRightLogical(u, 16) | quiet;
                return Vector256.ConditionalSelect(Vector256.GreaterThan(u & absMask, inf), nan, rounded);
            }
        }
        for (; i < n; i++) d[i] = HalfConvert.FloatToBf16(s[i]);
    }
}
