using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// Dot products of an fp32 vector with a weight row stored narrower (bf16, INT8, packed INT4), the inner loops of
/// decoding (batch-1 matrix-vector products). Each widens the weights to fp32 in registers as the row streams, so
/// the row is read once at memory speed and never written out in fp32; four independent accumulators with fused
/// multiply-adds keep the loop ahead of the loads. The scalar tails compute the same products one at a time.
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
            sum = Vector256.Sum((a0 + a1) + (a2 + a3));
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
            sum = Vector256.Sum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++)
        {
            sbyte b = q[i];
            sum += (b >> 4) * xEven[i] + ((sbyte)(b << 4) >> 4) * xOdd[i];
        }
        return sum;
    }
}
