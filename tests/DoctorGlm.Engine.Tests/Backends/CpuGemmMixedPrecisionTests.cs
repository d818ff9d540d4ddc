using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Backends;

/// <summary>
/// GEMM with bf16/fp16 operands (frozen weights kept in 16 bits). The CPU converts them exactly while packing,
/// so the reference is the double-precision product of the 16-bit values read back as floats, with the same
/// fp32 tolerance as <see cref="CpuGemmTests"/>: any packing, conversion or stride bug (wrong element, wrong
/// byte width) shows up as an error of the order of the sum itself.
/// </summary>
public unsafe class CpuGemmMixedPrecisionTests
{
    private const double Tol = 1e-5;

    public static TheoryData<string, string, bool, bool, int, int, int> Cases()
    {
        var data = new TheoryData<string, string, bool, bool, int, int, int>();
        (int, int, int)[] shapes =
        [
            (1, 37, 129),      // one row: the dot-product path when B is stored n×k (x·Wᵀ, decoding)
            (4, 65, 1100),     // the largest dot-product case, k longer than its 512-element conversion chunk
            (5, 33, 17),       // just above it: packed path (a 16-bit B with AVX-512: still dot products, rows in pairs)
            (8, 65, 1100),     // the largest dot-product case for a 16-bit B with AVX-512
            (9, 33, 17),       // just above it: packed path for every type
            (67, 531, 300),    // several column blocks and rank-kc updates, parallel
        ];
        foreach (var (ta, tb) in new[] { ("F32", "BF16"), ("F32", "F16"), ("BF16", "F32"), ("F16", "BF16"), ("BF16", "BF16") })
            foreach (var (m, n, k) in shapes)
                for (int t = 0; t < 4; t++)
                    data.Add(ta, tb, (t & 1) != 0, (t & 2) != 0, m, n, k);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoubleReferenceOfTheStoredValues(string typeA, string typeB, bool transA, bool transB, int m, int n, int k)
    {
        var da = Enum.Parse<DType>(typeA);
        var db = Enum.Parse<DType>(typeB);
        var rng = new Random(m * 7919 + n * 104729 + k * 31 + (transA ? 17 : 0) + (transB ? 13 : 0) + (int)da * 3 + (int)db * 5);
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        const int batch = 2;
        long lda = aCols + 3, ldb = bCols + 1, ldc = n + 2;
        long strideA = aRows * lda + 5, strideB = bRows * ldb + 7, strideC = m * ldc + 3;
        var (a, aValues) = Stored(rng, da, strideA * batch);
        var (b, bValues) = Stored(rng, db, strideB * batch);
        var c = new float[strideC * batch];
        for (int i = 0; i < c.Length; i++) c[i] = (float)(rng.NextDouble() * 2 - 1);
        var c0 = (float[])c.Clone();
        const float alpha = 1.25f, beta = -0.5f;

        fixed (byte* pa = a, pb = b)
        fixed (float* pc = c)
            CpuGemm.GemmBatched(GemmKernel.Auto, transA, transB, m, n, k, alpha, new GemmOperand(pa, da), lda, strideA,
                new GemmOperand(pb, db), ldb, strideB, beta, pc, ldc, strideC, batch);

        double tolK = Tol * Math.Sqrt(k);
        for (int bi = 0; bi < batch; bi++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double sum = 0, mag = 0;
                    for (int p = 0; p < k; p++)
                    {
                        double av = aValues[bi * strideA + (transA ? p * lda + i : i * lda + p)];
                        double bv = bValues[bi * strideB + (transB ? j * ldb + p : p * ldb + j)];
                        sum += av * bv;
                        mag += Math.Abs(av * bv);
                    }
                    long ci = bi * strideC + i * ldc + j;
                    double want = alpha * sum + beta * c0[ci];
                    double tol = tolK * (Math.Abs(alpha) * mag + Math.Abs(beta * c0[ci])) + 1e-30;
                    Assert.True(Math.Abs(c[ci] - want) <= tol, $"C[{bi}][{i},{j}] = {c[ci]}, want {want} (tol {tol:g3})");
                }
        // Padding and gaps of C untouched.
        for (long i = 0; i < c.Length; i++)
        {
            long off = i % strideC;
            if (!(off < m * ldc && off % ldc < n)) Assert.Equal(c0[i], c[i]);
        }
    }

    [Fact]
    public void RejectsNonFloatOperands()
    {
        var ex = Assert.Throws<ArgumentException>(CallWithIntB);
        Assert.Contains("operand B is I32", ex.Message);

        static void CallWithIntB()
        {
            var a = new float[4];
            var b = new int[4];
            var c = new float[4];
            fixed (float* pa = a, pc = c)
            fixed (int* pb = b)
                CpuGemm.GemmBatched(GemmKernel.Auto, false, false, 2, 2, 2, 1f, pa, 2, 0, new GemmOperand(pb, DType.I32), 2, 0, 0f, pc, 2, 0, 1);
        }
    }

    /// <summary>Random values stored in <paramref name="type"/>, and the exact values they hold.</summary>
    private static (byte[] Bytes, double[] Values) Stored(Random rng, DType type, long count)
    {
        var bytes = new byte[count * type.SizeOf()];
        var values = new double[count];
        for (long i = 0; i < count; i++)
        {
            float f = (float)(rng.NextDouble() * 2 - 1);
            switch (type)
            {
                case DType.F32: BitConverter.TryWriteBytes(bytes.AsSpan((int)(i * 4)), f); values[i] = f; break;
                case DType.BF16:
                    {
                        ushort u = HalfConvert.FloatToBf16(f);
                        BitConverter.TryWriteBytes(bytes.AsSpan((int)(i * 2)), u);
                        values[i] = HalfConvert.Bf16ToFloat(u);
                        break;
                    }
                default:
                    {
                        ushort u = HalfConvert.FloatToF16(f);
                        BitConverter.TryWriteBytes(bytes.AsSpan((int)(i * 2)), u);
                        values[i] = HalfConvert.F16ToFloat(u);
                        break;
                    }
            }
        }
        return (bytes, values);
    }

    /// <summary>
    /// A 16-bit C (a 16-bit activation written by the GEMM): each element is the fp32 result rounded once — bit for bit
    /// what an F32 C rounded afterwards holds — at C's offset, row stride and batch stride, nothing else written; a
    /// 16-bit C cannot be accumulated into (beta ≠ 0), nor can C be an integer tensor.
    /// </summary>
    [Theory]
    [InlineData("BF16", false, true)]
    [InlineData("F16", true, false)]
    public void SixteenBitCIsTheRoundedFp32Result(string typeC, bool transA, bool transB)
    {
        var dc = Enum.Parse<DType>(typeC);
        var be = CpuBackend.Instance;
        int m = 19, n = 45, k = 70, batch = 2, ldc = 50, strideC = m * ldc + 3, offset = 4;
        var rng = new Random(5);
        float[] R(int len) => Enumerable.Range(0, len).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        using var scope = TensorScope.Begin();
        var a = Tensor.FromArray(R(batch * m * k), new Shape(batch * m * k), DType.BF16);
        var b = Tensor.FromArray(R(batch * k * n), new Shape(batch * k * n), DType.F32);
        int cLen = offset + batch * strideC;
        var c = Tensor.Full(new Shape(cLen), 7.5f, dc);
        var f = Tensor.Full(new Shape(cLen), 7.5f, DType.F32);
        be.Gemm(transA, transB, m, n, k, 0.5f, a, 0, transA ? m : k, m * k, b, 0, transB ? k : n, k * n, 0f, c, offset, ldc, strideC, batch);
        be.Gemm(transA, transB, m, n, k, 0.5f, a, 0, transA ? m : k, m * k, b, 0, transB ? k : n, k * n, 0f, f, offset, ldc, strideC, batch);
        var got = c.ToFloatArray();
        var want = f.ToFloatArray();
        int written = 0;
        for (int i = 0; i < cLen; i++)
        {
            float expect = Harness.OpInput.RoundTo(dc, want[i]);
            Assert.True(BitConverter.SingleToInt32Bits(got[i]) == BitConverter.SingleToInt32Bits(expect), $"C[{i}] = {got[i]:R}, the rounded fp32 result is {expect:R}");
            if (want[i] != 7.5f) written++;
        }
        Assert.Equal(batch * m * n, written); // every element of C written, the gaps between rows left alone
        var e = Assert.Throws<ArgumentException>(() => be.Gemm(false, false, m, n, k, 1f, a, 0, k, 0, b, 0, n, 0, 1f, c, 0, n, 0, 1));
        Assert.Contains("beta", e.Message);
        var ints = Tensor.Zeros(new Shape(m * n), DType.I32);
        Assert.Throws<ArgumentException>(() => be.Gemm(false, false, m, n, k, 1f, a, 0, k, 0, b, 0, n, 0, 0f, ints, 0, n, 0, 1));
    }

    /// <summary>
    /// On the dot-product path (m ≤ 8 for B stored n×k in 16 bits, with AVX-512) A's rows go in pairs, each B element widened once for
    /// both: every row of C must be bit for bit the one its row of A gives alone.
    /// </summary>
    [Theory]
    [InlineData("BF16", 3)]
    [InlineData("BF16", 4)]
    [InlineData("F16", 3)]
    [InlineData("BF16", 7)]
    [InlineData("F16", 8)]
    public void Paired_rows_on_the_dot_path_give_bit_for_bit_their_single_row_results(string weightType, int m)
    {
        var rng = new RandomGenerator((ulong)(m * 7 + weightType.Length));
        using var scope = TensorScope.Begin();
        const int n = 43, k = 1100;
        var w = rng.Normal(new Shape(n, k), 0.2f).To(Enum.Parse<DType>(weightType));
        var x = rng.Normal(new Shape(m, k));
        var all = Ops.Linear(x, w).ToFloatArray();
        for (int r = 0; r < m; r++)
            Assert.Equal(Ops.Linear(x.Narrow(0, r, 1).Contiguous(), w).ToFloatArray(), all.AsSpan(r * n, n).ToArray());
    }
}
