using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// One row of a ChatGLM INT8/INT4 weight (spec §10) de-quantized to fp32: w[c] = q[c]·scale, exact in fp32. This is
/// what a prompt pass or a training step over a quantized base does for every block linear before its GEMM (the
/// 6B model's 5.6 billion weights per forward), so the rows are vectorised: INT8 widened by <c>vpmovsxbd</c>, INT4's
/// nibbles turned into floats by one <c>vpermps</c> from the table of the 16 two's-complement values and put back in
/// column order (the high nibble is the even column) by <c>vpermt2ps</c>. The scalar tails, and the whole row
/// without AVX-512, compute the same products one at a time.
/// </summary>
internal static unsafe class CpuDequantize
{
    /// <summary>row[c] = q[c]·s for c &lt; n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Int8Row(sbyte* q, float s, float* row, int n)
    {
        int c = 0;
        if (Avx512F.IsSupported)
        {
            var vs = Vector512.Create(s);
            for (; c + 16 <= n; c += 16)
                (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + c))) * vs).Store(row + c);
        }
        for (; c < n; c++) row[c] = q[c] * s;
    }

    /// <summary>row[2k] = hi(q[k])·s, row[2k + 1] = lo(q[k])·s for 2k &lt; n (n even), the nibbles signed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Int4Row(sbyte* q, float s, float* row, int n)
    {
        int k = 0, bytes = n / 2;
        if (Avx512F.IsSupported)
        {
            var table = Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, -8f, -7f, -6f, -5f, -4f, -3f, -2f, -1f);
            // Interleave hi[0..16) and lo[0..16) (indices 16.. pick from the second operand): hi0 lo0 hi1 lo1 …
            var first = Vector512.Create(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            var second = Vector512.Create(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            var vs = Vector512.Create(s);
            for (; k + 16 <= bytes; k += 16)
            {
                var b = Avx512F.ConvertToVector512Int32(Vector128.Load((byte*)q + k));
                var hi = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(b, 4)); // vpermps reads the low 4 bits
                var lo = Avx512F.PermuteVar16x32(table, b);
                (Avx512F.PermuteVar16x32x2(hi, first, lo) * vs).Store(row + 2 * k);
                (Avx512F.PermuteVar16x32x2(hi, second, lo) * vs).Store(row + 2 * k + 16);
            }
        }
        for (; k < bytes; k++)
        {
            sbyte b = q[k];
            row[2 * k] = (b >> 4) * s;                   // arithmetic shifts sign-extend the 4-bit values
            row[2 * k + 1] = ((sbyte)(b << 4) >> 4) * s;
        }
    }
}
