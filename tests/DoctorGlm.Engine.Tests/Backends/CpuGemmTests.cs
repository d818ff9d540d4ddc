using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Backends;

public unsafe class CpuGemmTests
{
    // Tolerance: every element of C is checked against a double-precision triple loop with
    //   |c − ref| ≤ 1e-5 · sqrt(max(k,1)) · (|alpha| · Σ_p |op(A)_ip|·|op(B)_pj| + |beta|·|C0_ij|) + 1e-30.
    // fp32 has a unit roundoff of ~6e-8; a blocked sum of k products grows its error roughly like
    // sqrt(k) · u · Σ|a||b| for random data, so 1e-5·sqrt(k) leaves ample headroom while still catching
    // any indexing or packing bug (which gives errors of order Σ|a||b| itself).
    private const double Tol = 1e-5;

    private static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (3, 5, 7), (17, 33, 65), (67, 129, 31), (128, 256, 64), (255, 1, 300), (1, 513, 129),
    ];

    // Kernels are passed to theories by name because GemmKernel is internal (public test methods
    // cannot take it). "Portable" forces the Vector<float> fallback even on AVX-512 hardware.
    private static IEnumerable<string> Kernels()
    {
        yield return nameof(GemmKernel.Auto);
        yield return nameof(GemmKernel.Portable);
        if (Avx2.IsSupported && Fma.IsSupported) yield return nameof(GemmKernel.Avx2);
        if (Avx512F.IsSupported) yield return nameof(GemmKernel.Avx512);
    }

    private static GemmKernel K(string name) => Enum.Parse<GemmKernel>(name);

    /// <summary>
    /// Test data as an operand of <paramref name="type"/>: the values rounded to it (F32: as they are) and the
    /// stored bits, pinned for the duration of the test.
    /// </summary>
    private static (float[] Values, GemmOperand Operand, GCHandle Pin) Operand(float[] v, DType type)
    {
        var values = v.Select(x => Harness.OpInput.RoundTo(type, x)).ToArray();
        object bits = type == DType.F32 ? values
            : values.Select(x => type == DType.BF16 ? HalfConvert.FloatToBf16(x) : HalfConvert.FloatToF16(x)).ToArray();
        var pin = GCHandle.Alloc(bits, GCHandleType.Pinned);
        return (values, new GemmOperand((void*)pin.AddrOfPinnedObject(), type), pin);
    }

    [Theory]
    [InlineData(24, 19, 12, "F32")] // two full 12-row panels, 8 + 8 + 3 columns: the transposing path and its tail
    [InlineData(29, 8, 12, "F32")]  // a ragged last panel (5 rows) takes the scalar path, zero-padded
    [InlineData(13, 21, 6, "F32")]  // the AVX2 kernel's 6-row panels
    [InlineData(24, 19, 12, "BF16")] // bf16 activations: the same transposing path, widened as loaded
    [InlineData(29, 8, 12, "BF16")]
    [InlineData(24, 19, 12, "F16")]  // fp16: the scalar path
    public void PackA_lays_out_row_major_A_as_column_panels(int mc, int kc, int mr, string type)
    {
        const int lda = 40, i0 = 3, p0 = 5;
        var (a, operand, pin) = Operand(Enumerable.Range(0, (i0 + mc) * lda).Select(i => (float)(i * 0.37 - 11)).ToArray(), Enum.Parse<DType>(type));
        int panels = (mc + mr - 1) / mr;
        var packed = new float[panels * mr * kc];
        try
        {
            fixed (float* pd = packed)
                CpuGemm.PackA(false, operand, lda, i0, p0, mc, kc, mr, pd);
        }
        finally { pin.Free(); }
        for (int ir = 0; ir < panels; ir++)
            for (int p = 0; p < kc; p++)
                for (int r = 0; r < mr; r++)
                {
                    int row = ir * mr + r;
                    float want = row < mc ? a[(i0 + row) * lda + p0 + p] : 0f;
                    Assert.True(packed[(ir * mr * kc) + p * mr + r] == want, $"panel {ir}, column {p}, row {r}: {packed[(ir * mr * kc) + p * mr + r]} != {want}");
                }
    }

    [Theory]
    [InlineData(69, 19, 32, "F32")] // two full 32-column panels (8×8 transposes and their 3-step tail), a ragged 5-column one
    [InlineData(16, 8, 16, "F32")]  // the AVX2 kernel's 16-column panels, one exact block
    [InlineData(7, 20, 16, "F32")]  // a single ragged panel only: the scalar path, zero-padded
    [InlineData(69, 19, 32, "BF16")] // bf16 weights: the same transposing path, widened as loaded
    [InlineData(16, 8, 16, "BF16")]
    [InlineData(69, 19, 32, "F16")]  // fp16: the scalar path
    public void PackB_lays_out_transposed_B_as_row_panels(int nc, int kc, int nr, string type)
    {
        const int ldb = 37, j0 = 2, p0 = 4; // B stored n×k (transB): op(B)[p, j] = B[j, p]
        var (b, operand, pin) = Operand(Enumerable.Range(0, (j0 + nc) * ldb).Select(i => (float)(i * 0.29 - 7)).ToArray(), Enum.Parse<DType>(type));
        int panels = (nc + nr - 1) / nr;
        var packed = new float[panels * nr * kc];
        try
        {
            fixed (float* pd = packed)
                CpuGemm.PackB(true, operand, ldb, p0, j0, kc, nc, nr, pd);
        }
        finally { pin.Free(); }
        for (int jr = 0; jr < panels; jr++)
            for (int p = 0; p < kc; p++)
                for (int j = 0; j < nr; j++)
                {
                    int col = jr * nr + j;
                    float want = col < nc ? b[(j0 + col) * ldb + p0 + p] : 0f;
                    float got = packed[jr * nr * kc + p * nr + j];
                    Assert.True(got == want, $"panel {jr}, step {p}, column {j}: {got} != {want}");
                }
    }

    public static TheoryData<string, bool, bool, int, int, int> Cases()
    {
        var data = new TheoryData<string, bool, bool, int, int, int>();
        foreach (var kernel in Kernels())
            foreach (var (m, n, k) in Shapes)
                for (int t = 0; t < 4; t++)
                    data.Add(kernel, (t & 1) != 0, (t & 2) != 0, m, n, k);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoubleReference_Beta0_PoisonedC(string kernel, bool transA, bool transB, int m, int n, int k)
        => Check(kernel, transA, transB, m, n, k, alpha: 1.5f, beta: 0f, pad: 3, seed: Seed(m, n, k, transA, transB, 0));

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoubleReference_BetaNonZero(string kernel, bool transA, bool transB, int m, int n, int k)
        => Check(kernel, transA, transB, m, n, k, alpha: -0.75f, beta: 0.5f, pad: 5, seed: Seed(m, n, k, transA, transB, 1));

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoubleReference_TightStrides_Alpha1Beta1(string kernel, bool transA, bool transB, int m, int n, int k)
        => Check(kernel, transA, transB, m, n, k, alpha: 1f, beta: 1f, pad: 0, seed: Seed(m, n, k, transA, transB, 2));

    public static TheoryData<string, bool, bool> LargeCases()
    {
        var data = new TheoryData<string, bool, bool>();
        foreach (var kernel in Kernels())
            for (int t = 0; t < 4; t++)
                data.Add(kernel, (t & 1) != 0, (t & 2) != 0);
        return data;
    }

    /// <summary>
    /// Larger than every block size (k > KC, n > NC, m > MC) and above the parallel threshold, so several
    /// rank-kc updates accumulate into C and the multi-threaded path with several macro tasks runs.
    /// </summary>
    [Theory]
    [MemberData(nameof(LargeCases))]
    public void MatchesDoubleReference_MultiBlockParallel(string kernel, bool transA, bool transB)
        => Check(kernel, transA, transB, 301, 531, 517, alpha: 0.5f, beta: -1.25f, pad: 7, seed: Seed(301, 531, 517, transA, transB, 3));

    [Theory]
    [InlineData(0f)]
    [InlineData(2f)]
    public void KZero_ScalesCByBeta(float beta)
    {
        const int m = 5, n = 7;
        var c = new float[m * n];
        var rng = new Random(11);
        for (int i = 0; i < c.Length; i++) c[i] = beta == 0f ? float.NaN : (float)rng.NextDouble();
        var expected = c.Select(v => beta == 0f ? 0f : v * beta).ToArray();
        var a = new float[1];
        var b = new float[1];
        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.Sgemm(false, false, m, n, 0, 1f, pa, 1, pb, n, beta, pc, n);
        Assert.Equal(expected, c);
    }

    [Fact]
    public void AlphaZero_Beta0_WritesZerosWithoutReadingC()
    {
        const int m = 4, n = 3, k = 2;
        var a = Enumerable.Repeat(float.NaN, m * k).ToArray(); // BLAS: alpha == 0 does not read A or B
        var b = new float[k * n];
        var c = Enumerable.Repeat(float.NaN, m * n).ToArray();
        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.Sgemm(false, false, m, n, k, 0f, pa, k, pb, n, 0f, pc, n);
        Assert.All(c, v => Assert.Equal(0f, v));
    }

    public static TheoryData<string, bool, bool, int, int, int, int> BatchedCases()
    {
        var data = new TheoryData<string, bool, bool, int, int, int, int>();
        foreach (var kernel in Kernels())
            for (int t = 0; t < 4; t++)
            {
                data.Add(kernel, (t & 1) != 0, (t & 2) != 0, 17, 33, 65, 3);   // small: sequential path
                data.Add(kernel, (t & 1) != 0, (t & 2) != 0, 64, 80, 96, 5);   // above threshold: tasks across batches
            }
        data.Add(nameof(GemmKernel.Auto), false, true, 1, 1, 1, 4);
        data.Add(nameof(GemmKernel.Auto), true, false, 200, 600, 300, 2);              // several column/row tasks per batch
        return data;
    }

    [Theory]
    [MemberData(nameof(BatchedCases))]
    public void Batched_MatchesPerBatchReference(string kernel, bool transA, bool transB, int m, int n, int k, int batch)
    {
        var rng = new Random(Seed(m, n, k, transA, transB, 100 + batch));
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        long lda = aCols + 2, ldb = bCols + 1, ldc = n + 3;
        // Strides larger than one matrix, leaving gaps that must stay untouched.
        long strideA = aRows * lda + 5, strideB = bRows * ldb + 7, strideC = m * ldc + 11;
        var a = RandomArray(rng, (int)(strideA * batch));
        var b = RandomArray(rng, (int)(strideB * batch));
        var c = RandomArray(rng, (int)(strideC * batch));
        var c0 = (float[])c.Clone();
        const float alpha = 1.25f, beta = -0.5f;
        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.SgemmBatched(K(kernel), transA, transB, m, n, k, alpha, pa, lda, strideA, pb, ldb, strideB, beta, pc, ldc, strideC, batch);

        for (int bi = 0; bi < batch; bi++)
            Verify(transA, transB, m, n, k, alpha, beta,
                a.AsSpan((int)(bi * strideA)), lda, b.AsSpan((int)(bi * strideB)), ldb,
                c0.AsSpan((int)(bi * strideC)), c.AsSpan((int)(bi * strideC)), ldc);

        // Everything outside the m×n windows of C is untouched.
        for (int i = 0; i < c.Length; i++)
        {
            long off = i % strideC;
            bool inside = i / strideC < batch && off < m * ldc && off % ldc < n;
            if (!inside) Assert.Equal(c0[i], c[i]);
        }
    }

    // ---- helpers ----

    // Deterministic per case (HashCode.Combine is randomised per process, so it is not used here).
    private static int Seed(int m, int n, int k, bool ta, bool tb, int salt)
        => m * 7919 + n * 104729 + k * 31 + (ta ? 17 : 0) + (tb ? 13 : 0) + salt * 1000003;

    private static float[] RandomArray(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    private static void Check(string kernel, bool transA, bool transB, int m, int n, int k, float alpha, float beta, int pad, int seed)
    {
        var rng = new Random(seed);
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        long lda = aCols + pad, ldb = bCols + pad, ldc = n + pad;
        var a = RandomArray(rng, (int)(aRows * lda));
        var b = RandomArray(rng, (int)(bRows * ldb));
        var c = beta == 0f ? Enumerable.Repeat(float.NaN, (int)(m * ldc)).ToArray() : RandomArray(rng, (int)(m * ldc));
        if (beta == 0f)
        {
            // Poison only the m×n window; padding keeps a recognisable value so we can see it is untouched.
            for (int i = 0; i < c.Length; i++) if (i % ldc >= n) c[i] = 42f;
        }
        var c0 = (float[])c.Clone();

        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.Sgemm(K(kernel), transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);

        Verify(transA, transB, m, n, k, alpha, beta, a, lda, b, ldb, c0, c, ldc);
        for (int i = 0; i < c.Length; i++)
            if (i % ldc >= n) Assert.Equal(c0[i], c[i]); // padding columns untouched
    }

    private static void Verify(bool transA, bool transB, int m, int n, int k, float alpha, float beta,
        ReadOnlySpan<float> a, long lda, ReadOnlySpan<float> b, long ldb, ReadOnlySpan<float> c0, ReadOnlySpan<float> c, long ldc)
    {
        double tolK = Tol * Math.Sqrt(Math.Max(k, 1));
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double av = transA ? a[(int)(p * lda + i)] : a[(int)(i * lda + p)];
                    double bv = transB ? b[(int)(j * ldb + p)] : b[(int)(p * ldb + j)];
                    sum += av * bv;
                    mag += Math.Abs(av * bv);
                }
                double old = beta == 0f ? 0 : c0[(int)(i * ldc + j)];
                double expected = alpha * sum + beta * old;
                double scale = Math.Abs(alpha) * mag + Math.Abs(beta) * Math.Abs(old);
                float actual = c[(int)(i * ldc + j)];
                Assert.False(float.IsNaN(actual), $"NaN at ({i},{j})");
                double err = Math.Abs(actual - expected);
                if (err > tolK * scale + 1e-30)
                    Assert.Fail($"C[{i},{j}] = {actual}, expected {expected} (err {err:E3} > {tolK * scale:E3}); m={m} n={n} k={k} tA={transA} tB={transB}");
            }
    }
}
