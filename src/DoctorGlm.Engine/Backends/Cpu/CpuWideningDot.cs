using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// Dot products of an fp32 vector with a weight row stored narrower (bf16, INT8, packed INT4), the inner loops of
/// decoding (batch-1 matrix-vector products). Each widens the weights to fp32 in registers as the row streams, so
/// the row is read once at memory speed and never written out in fp32; four independent accumulators with fused
/// multiply-adds keep the loop ahead of the loads. With AVX-512 the integer rows take a 512-bit loop first (INT4's
/// nibbles become floats through a 16-entry table in one permute), then the 256-bit loop and the scalar tail finish
/// the row; every path computes exact products of the same integers, only the order of the sum differs.
/// </summary>
internal static unsafe class CpuWideningDot
{
    /// <summary>Σ w[p]·x[p] with w in bf16, widened in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Bf16(ushort* w, float* x, int k)
    {
        int p = 0;
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (; p + 32 <= k; p += 32)
            {
                var (w0, w1) = Vector256.Widen(Vector256.Load(w + p));
                var (w2, w3) = Vector256.Widen(Vector256.Load(w + p + 16));
                a0 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w0, 16).AsSingle(), Vector256.Load(x + p), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w1, 16).AsSingle(), Vector256.Load(x + p + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w2, 16).AsSingle(), Vector256.Load(x + p + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w3, 16).AsSingle(), Vector256.Load(x + p + 24), a3);
            }
            sum = Vector256.Sum((a0 + a1) + (a2 + a3));
        }
        for (; p < k; p++) sum += HalfConvert.Bf16ToFloat(w[p]) * x[p];
        return sum;
    }

    /// <summary>Σ q[i]·x[i] over n int8 weights, widened to fp32 in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Int8(sbyte* q, float* x, int n)
    {
        int i = 0;
        float sum = 0f;
        if (Avx512F.IsSupported && n >= 64)
        {
            // vpmovsxbd widens 16 bytes to 16 int32 straight from memory: 3 instructions per 16 weights.
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (; i + 64 <= n; i += 64)
            {
                a0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i))), Vector512.Load(x + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i + 16))), Vector512.Load(x + i + 16), a1);
                a2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i + 32))), Vector512.Load(x + i + 32), a2);
                a3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i + 48))), Vector512.Load(x + i + 48), a3);
            }
            sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (; i + 32 <= n; i += 32)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(q + i));
                var (w0, w1) = Vector256.Widen(lo);
                var (w2, w3) = Vector256.Widen(hi);
                a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(w0), Vector256.Load(x + i), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(w1), Vector256.Load(x + i + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(w2), Vector256.Load(x + i + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(w3), Vector256.Load(x + i + 24), a3);
            }
            sum += Vector256.Sum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) sum += q[i] * x[i];
        return sum;
    }

    /// <summary>
    /// Σ over n packed bytes of hi(q[i])·xEven[i] + lo(q[i])·xOdd[i], where a byte holds column 2i in its high nibble
    /// and column 2i + 1 in its low one, both signed (spec §10).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Int4(sbyte* q, float* xEven, float* xOdd, int n)
    {
        int i = 0;
        float sum = 0f;
        if (Avx512F.IsSupported && n >= 32)
        {
            // Each byte zero-extended to an int32 lane (vpmovzxbd); vpermps reads only an index's low 4 bits, so the
            // lane itself picks the low nibble's value and the lane shifted right by 4 the high one's, from a table of
            // the 16 two's-complement nibbles: no sign extension, no int → float conversion.
            var table = Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, -8f, -7f, -6f, -5f, -4f, -3f, -2f, -1f);
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (; i + 32 <= n; i += 32)
            {
                var b0 = Avx512F.ConvertToVector512Int32(Vector128.Load((byte*)q + i));
                var b1 = Avx512F.ConvertToVector512Int32(Vector128.Load((byte*)q + i + 16));
                a0 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b0, 4)), Vector512.Load(xEven + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b0), Vector512.Load(xOdd + i), a1);
                a2 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b1, 4)), Vector512.Load(xEven + i + 16), a2);
                a3 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b1), Vector512.Load(xOdd + i + 16), a3);
            }
            sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (; i + 16 <= n; i += 16)
            {
                // 16 bytes → 16 high and 16 low nibbles, sign-extended by arithmetic shifts on 16-bit lanes.
                var b = Vector256.WidenLower(Vector128.Load(q + i).ToVector256Unsafe());
                var hi = Vector256.ShiftRightArithmetic(b, 4);
                var lo = Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(b, 12), 12);
                var (h0, h1) = Vector256.Widen(hi);
                var (l0, l1) = Vector256.Widen(lo);
                a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(h0), Vector256.Load(xEven + i), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(h1), Vector256.Load(xEven + i + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(l0), Vector256.Load(xOdd + i), a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(l1), Vector256.Load(xOdd + i + 8), a3);
            }
            sum += Vector256.Sum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++)
        {
            sbyte b = q[i];
            sum += (b >> 4) * xEven[i] + ((sbyte)(b << 4) >> 4) * xOdd[i];
        }
        return sum;
    }

    /// <summary>
    /// <see cref="Int8"/> for the four rows q + r·<paramref name="stride"/> (r = 0..3) against one x, into sums[0..3]:
    /// each chunk of x is loaded once for four rows. A row of 16384 weights has 64 KB of x, more than L1 holds, and
    /// one row at a time reads x from L2 four bytes per weight byte — the matrix-vector product then runs at L2's
    /// pace, not memory's (ChatGLM's dense_4h_to_h, 4096 × 16384).
    /// </summary>
    public static void Int8Rows4(sbyte* q, long stride, float* x, int n, float* sums) => Rows4<sbyte, Int8Widener>(q, stride, x, n, sums);

    /// <summary><see cref="Bf16"/> for the four rows w + r·<paramref name="stride"/> against one x (see <see cref="Int8Rows4"/>).</summary>
    public static void Bf16Rows4(ushort* w, long stride, float* x, int k, float* sums) => Rows4<ushort, Bf16Widener>(w, stride, x, k, sums);

    /// <summary><see cref="Bf16Rows4"/> for fp16 weights (THUDM's checkpoint type, <c>--dtype fp16</c>).</summary>
    public static void F16Rows4(ushort* w, long stride, float* x, int k, float* sums) => Rows4<ushort, F16Widener>(w, stride, x, k, sums);

    /// <summary>Σ w[p]·x[p] with w in fp16, widened exactly in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float F16(ushort* w, float* x, int k)
    {
        int p = 0;
        float sum = 0f;
        if (Avx512F.IsSupported)
        {
            var a0 = Vector512<float>.Zero; var a1 = a0;
            for (; p + 32 <= k; p += 32)
            {
                a0 = Avx512F.FusedMultiplyAdd(F16Widener.Widen16(w + p), Vector512.Load(x + p), a0);
                a1 = Avx512F.FusedMultiplyAdd(F16Widener.Widen16(w + p + 16), Vector512.Load(x + p + 16), a1);
            }
            sum = Vector512.Sum(a0 + a1);
        }
        for (; p < k; p++) sum += HalfConvert.F16ToFloat(w[p]) * x[p];
        return sum;
    }

    /// <summary>How a weight type of <see cref="Rows4{T, TWiden}"/> becomes fp32: 16 elements at a time, and a whole (short) row's dot product.</summary>
    private interface IWidener<T> where T : unmanaged
    {
        /// <summary>w[0..16) as fp32 (exact).</summary>
        static abstract Vector512<float> Widen16(T* w);

        /// <summary>Σ w[p]·x[p] over n elements, one row (the tail after the 512-bit loop).</summary>
        static abstract float Dot(T* w, float* x, int n);
    }

    private readonly struct Int8Widener : IWidener<sbyte>
    {
        // vpmovsxbd widens 16 bytes to 16 int32 straight from memory.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen16(sbyte* w) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(w)));

        public static float Dot(sbyte* w, float* x, int n) => Int8(w, x, n);
    }

    private readonly struct Bf16Widener : IWidener<ushort>
    {
        // bf16 → fp32 is a shift of the zero-extended bits (vpmovzxwd, vpslld).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen16(ushort* w) => Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(w)), 16).AsSingle();

        public static float Dot(ushort* w, float* x, int n) => Bf16(w, x, n);
    }

    internal readonly struct F16Widener : IWidener<ushort>
    {
        /// <summary>Sixteen fp16 weights as fp32, exactly (<see cref="CpuFloatConvert.F16BitsToSingle(Vector512{uint})"/>).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen16(ushort* w) =>
            CpuFloatConvert.F16BitsToSingle(Avx512F.ConvertToVector512Int32(Vector256.Load(w)).AsUInt32());

        public static float Dot(ushort* w, float* x, int n) => F16(w, x, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4<T, TWiden>(T* w, long stride, float* x, int n, float* sums) where T : unmanaged where TWiden : IWidener<T>
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            T* w1 = w + stride, w2 = w1 + stride, w3 = w2 + stride;
            // Two accumulators per row: eight independent FMA chains cover the FMA latency.
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            for (; i + 32 <= n; i += 32)
            {
                var x0 = Vector512.Load(x + i);
                var x1 = Vector512.Load(x + i + 16);
                a0 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w + i), x0, a0);
                a1 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w + i + 16), x1, a1);
                a2 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w1 + i), x0, a2);
                a3 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w1 + i + 16), x1, a3);
                a4 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w2 + i), x0, a4);
                a5 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w2 + i + 16), x1, a5);
                a6 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w3 + i), x0, a6);
                a7 = Avx512F.FusedMultiplyAdd(TWiden.Widen16(w3 + i + 16), x1, a7);
            }
            sums[0] = Vector512.Sum(a0 + a1); sums[1] = Vector512.Sum(a2 + a3);
            sums[2] = Vector512.Sum(a4 + a5); sums[3] = Vector512.Sum(a6 + a7);
        }
        else sums[0] = sums[1] = sums[2] = sums[3] = 0f;
        for (int r = 0; r < 4; r++) sums[r] += TWiden.Dot(w + r * stride + i, x + i, n - i);
    }

    /// <summary>
    /// <see cref="Rows4{T, TWiden}"/> against two input rows at once (a batch being decoded): each weight is widened
    /// once for both, which is what bounds a batch on the CPU. Per input row the accumulators, their order and the
    /// final sums are those of <see cref="Rows4{T, TWiden}"/>, so the results are bit for bit the same.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4x2<T, TWiden>(T* w, long stride, float* x, float* y, int n, float* sx, float* sy) where T : unmanaged where TWiden : IWidener<T>
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            T* w1 = w + stride, w2 = w1 + stride, w3 = w2 + stride;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            var b0 = a0; var b1 = a0; var b2 = a0; var b3 = a0; var b4 = a0; var b5 = a0; var b6 = a0; var b7 = a0;
            for (; i + 32 <= n; i += 32)
            {
                var x0 = Vector512.Load(x + i);
                var x1 = Vector512.Load(x + i + 16);
                var y0 = Vector512.Load(y + i);
                var y1 = Vector512.Load(y + i + 16);
                var v0 = TWiden.Widen16(w + i); var v1 = TWiden.Widen16(w + i + 16);
                var v2 = TWiden.Widen16(w1 + i); var v3 = TWiden.Widen16(w1 + i + 16);
                var v4 = TWiden.Widen16(w2 + i); var v5 = TWiden.Widen16(w2 + i + 16);
                var v6 = TWiden.Widen16(w3 + i); var v7 = TWiden.Widen16(w3 + i + 16);
                a0 = Avx512F.FusedMultiplyAdd(v0, x0, a0); b0 = Avx512F.FusedMultiplyAdd(v0, y0, b0);
                a1 = Avx512F.FusedMultiplyAdd(v1, x1, a1); b1 = Avx512F.FusedMultiplyAdd(v1, y1, b1);
                a2 = Avx512F.FusedMultiplyAdd(v2, x0, a2); b2 = Avx512F.FusedMultiplyAdd(v2, y0, b2);
                a3 = Avx512F.FusedMultiplyAdd(v3, x1, a3); b3 = Avx512F.FusedMultiplyAdd(v3, y1, b3);
                a4 = Avx512F.FusedMultiplyAdd(v4, x0, a4); b4 = Avx512F.FusedMultiplyAdd(v4, y0, b4);
                a5 = Avx512F.FusedMultiplyAdd(v5, x1, a5); b5 = Avx512F.FusedMultiplyAdd(v5, y1, b5);
                a6 = Avx512F.FusedMultiplyAdd(v6, x0, a6); b6 = Avx512F.FusedMultiplyAdd(v6, y0, b6);
                a7 = Avx512F.FusedMultiplyAdd(v7, x1, a7); b7 = Avx512F.FusedMultiplyAdd(v7, y1, b7);
            }
            sx[0] = Vector512.Sum(a0 + a1); sx[1] = Vector512.Sum(a2 + a3); sx[2] = Vector512.Sum(a4 + a5); sx[3] = Vector512.Sum(a6 + a7);
            sy[0] = Vector512.Sum(b0 + b1); sy[1] = Vector512.Sum(b2 + b3); sy[2] = Vector512.Sum(b4 + b5); sy[3] = Vector512.Sum(b6 + b7);
        }
        else sx[0] = sx[1] = sx[2] = sx[3] = sy[0] = sy[1] = sy[2] = sy[3] = 0f;
        for (int r = 0; r < 4; r++)
        {
            sx[r] += TWiden.Dot(w + r * stride + i, x + i, n - i);
            sy[r] += TWiden.Dot(w + r * stride + i, y + i, n - i);
        }
    }

    /// <summary><see cref="Int8Rows4"/> against two input rows, each weight widened once (bit for bit the single-row sums).</summary>
    public static void Int8Rows4x2(sbyte* q, long stride, float* x, float* y, int n, float* sx, float* sy) => Rows4x2<sbyte, Int8Widener>(q, stride, x, y, n, sx, sy);

    /// <summary><see cref="Bf16Rows4"/> against two input rows, each weight widened once (bit for bit the single-row sums).</summary>
    public static void Bf16Rows4x2(ushort* w, long stride, float* x, float* y, int k, float* sx, float* sy) => Rows4x2<ushort, Bf16Widener>(w, stride, x, y, k, sx, sy);

    /// <summary><see cref="F16Rows4"/> against two input rows, each weight widened once (bit for bit the single-row sums).</summary>
    public static void F16Rows4x2(ushort* w, long stride, float* x, float* y, int k, float* sx, float* sy) => Rows4x2<ushort, F16Widener>(w, stride, x, y, k, sx, sy);

    /// <summary>
    /// <see cref="Int4Rows4"/> against two input rows (x: <paramref name="xEven"/>/<paramref name="xOdd"/>, y:
    /// <paramref name="yEven"/>/<paramref name="yOdd"/>): the nibbles, whose unpacking bounds INT4 decoding, are
    /// unpacked once for both; per input row the sums are bit for bit those of <see cref="Int4Rows4"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Int4Rows4x2(sbyte* q, long stride, float* xEven, float* xOdd, float* yEven, float* yOdd, int n, float* sx, float* sy)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var table = Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, -8f, -7f, -6f, -5f, -4f, -3f, -2f, -1f);
            byte* q0 = (byte*)q, q1 = q0 + stride, q2 = q1 + stride, q3 = q2 + stride;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            var b0 = a0; var b1 = a0; var b2 = a0; var b3 = a0; var b4 = a0; var b5 = a0; var b6 = a0; var b7 = a0;
            for (; i + 16 <= n; i += 16)
            {
                var xe = Vector512.Load(xEven + i);
                var xo = Vector512.Load(xOdd + i);
                var ye = Vector512.Load(yEven + i);
                var yo = Vector512.Load(yOdd + i);
                var c0 = Avx512F.ConvertToVector512Int32(Vector128.Load(q0 + i));
                var c1 = Avx512F.ConvertToVector512Int32(Vector128.Load(q1 + i));
                var c2 = Avx512F.ConvertToVector512Int32(Vector128.Load(q2 + i));
                var c3 = Avx512F.ConvertToVector512Int32(Vector128.Load(q3 + i));
                var h0 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(c0, 4)); var l0 = Avx512F.PermuteVar16x32(table, c0);
                var h1 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(c1, 4)); var l1 = Avx512F.PermuteVar16x32(table, c1);
                var h2 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(c2, 4)); var l2 = Avx512F.PermuteVar16x32(table, c2);
                var h3 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(c3, 4)); var l3 = Avx512F.PermuteVar16x32(table, c3);
                a0 = Avx512F.FusedMultiplyAdd(h0, xe, a0); b0 = Avx512F.FusedMultiplyAdd(h0, ye, b0);
                a1 = Avx512F.FusedMultiplyAdd(l0, xo, a1); b1 = Avx512F.FusedMultiplyAdd(l0, yo, b1);
                a2 = Avx512F.FusedMultiplyAdd(h1, xe, a2); b2 = Avx512F.FusedMultiplyAdd(h1, ye, b2);
                a3 = Avx512F.FusedMultiplyAdd(l1, xo, a3); b3 = Avx512F.FusedMultiplyAdd(l1, yo, b3);
                a4 = Avx512F.FusedMultiplyAdd(h2, xe, a4); b4 = Avx512F.FusedMultiplyAdd(h2, ye, b4);
                a5 = Avx512F.FusedMultiplyAdd(l2, xo, a5); b5 = Avx512F.FusedMultiplyAdd(l2, yo, b5);
                a6 = Avx512F.FusedMultiplyAdd(h3, xe, a6); b6 = Avx512F.FusedMultiplyAdd(h3, ye, b6);
                a7 = Avx512F.FusedMultiplyAdd(l3, xo, a7); b7 = Avx512F.FusedMultiplyAdd(l3, yo, b7);
            }
            sx[0] = Vector512.Sum(a0 + a1); sx[1] = Vector512.Sum(a2 + a3); sx[2] = Vector512.Sum(a4 + a5); sx[3] = Vector512.Sum(a6 + a7);
            sy[0] = Vector512.Sum(b0 + b1); sy[1] = Vector512.Sum(b2 + b3); sy[2] = Vector512.Sum(b4 + b5); sy[3] = Vector512.Sum(b6 + b7);
        }
        else sx[0] = sx[1] = sx[2] = sx[3] = sy[0] = sy[1] = sy[2] = sy[3] = 0f;
        for (int r = 0; r < 4; r++)
        {
            sx[r] += Int4(q + r * stride + i, xEven + i, xOdd + i, n - i);
            sy[r] += Int4(q + r * stride + i, yEven + i, yOdd + i, n - i);
        }
    }

    /// <summary><see cref="Int4"/> for the four rows q + r·<paramref name="stride"/> against one x (see <see cref="Int8Rows4"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Int4Rows4(sbyte* q, long stride, float* xEven, float* xOdd, int n, float* sums)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var table = Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, -8f, -7f, -6f, -5f, -4f, -3f, -2f, -1f);
            byte* q0 = (byte*)q, q1 = q0 + stride, q2 = q1 + stride, q3 = q2 + stride;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            for (; i + 16 <= n; i += 16)
            {
                var xe = Vector512.Load(xEven + i);
                var xo = Vector512.Load(xOdd + i);
                var b0 = Avx512F.ConvertToVector512Int32(Vector128.Load(q0 + i));
                var b1 = Avx512F.ConvertToVector512Int32(Vector128.Load(q1 + i));
                var b2 = Avx512F.ConvertToVector512Int32(Vector128.Load(q2 + i));
                var b3 = Avx512F.ConvertToVector512Int32(Vector128.Load(q3 + i));
                a0 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b0, 4)), xe, a0);
                a1 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b0), xo, a1);
                a2 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b1, 4)), xe, a2);
                a3 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b1), xo, a3);
                a4 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b2, 4)), xe, a4);
                a5 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b2), xo, a5);
                a6 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b3, 4)), xe, a6);
                a7 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, b3), xo, a7);
            }
            sums[0] = Vector512.Sum(a0 + a1); sums[1] = Vector512.Sum(a2 + a3);
            sums[2] = Vector512.Sum(a4 + a5); sums[3] = Vector512.Sum(a6 + a7);
        }
        else sums[0] = sums[1] = sums[2] = sums[3] = 0f;
        for (int r = 0; r < 4; r++) sums[r] += Int4(q + r * stride + i, xEven + i, xOdd + i, n - i);
    }
}
