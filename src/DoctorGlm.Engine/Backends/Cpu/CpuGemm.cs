using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>Which micro-kernel <see cref="CpuGemm"/> uses. <see cref="Auto"/> picks the widest the CPU supports.</summary>
internal enum GemmKernel
{
    /// <summary>Best available: AVX-512F, else AVX2+FMA, else portable.</summary>
    Auto = 0,
    /// <summary>12×32 register tile with 512-bit FMA (24 zmm accumulators).</summary>
    Avx512,
    /// <summary>6×16 register tile with 256-bit FMA (12 ymm accumulators).</summary>
    Avx2,
    /// <summary>4×(2·Vector&lt;float&gt;.Count) tile with <see cref="Vector{T}"/>; runs anywhere.</summary>
    Portable,
}

/// <summary>
/// A GEMM operand: its first element and its storage type (fp32, or bf16/fp16 converted to fp32 while packing).
/// </summary>
internal readonly unsafe struct GemmOperand(void* pointer, DType type)
{
    /// <summary>First element.</summary>
    public readonly void* Pointer = pointer;

    /// <summary>F32, BF16 or F16.</summary>
    public readonly DType Type = type;

    /// <summary>The operand moved by <paramref name="elements"/> elements of its type.</summary>
    public GemmOperand Offset(long elements) => new((byte*)Pointer + elements * Type.SizeOf(), Type);

    /// <summary>An fp32 operand.</summary>
    public static implicit operator GemmOperand(float* p) => new(p, DType.F32);
}

/// <summary>
/// Blocked, packed, multi-threaded single-precision GEMM in the style of GotoBLAS/BLIS.
/// </summary>
/// <remarks>
/// Loop nest for one macro task (a range of rows × a range of columns of C):
/// <code>
///   for jc in task columns, step NC      (B block kc×nc is packed once and kept in L2)
///     for pc in 0..k, step KC            (pack op(B)[pc.., jc..] into NR-wide strips)
///       for ic in task rows, step MC     (pack op(A)[ic.., pc..] into MR-high strips)
///         for ir step MR                 (A micro-panel MR×kc stays in L1)
///           for jr step NR               (B micro-panel streams from L2)
///             micro-kernel: C[MR×NR] = alpha·Σ_p a[:,p]·b[p,:] + beta·C
/// </code>
/// Packing makes both operands unit-stride in the order the micro-kernel consumes them, which is
/// why one kernel serves all four transpose combinations: the transposes live only in the pack routines.
/// Rows/columns past the edge of the matrix are packed as zeros, so the kernel always computes a full
/// MR×NR tile; edge tiles are written to a small scratch tile and merged into C element by element.
/// <para>
/// Mixed precision: A and B may each be stored as bf16 or fp16 (frozen weights kept in 16 bits). The packers
/// convert to fp32 as they copy, which costs nothing extra (packing reads every element once anyway), so the
/// arithmetic is the fp32 product of the exactly converted values. C is always fp32.
/// </para>
/// <para>
/// Few rows (m ≤ <see cref="DotRows"/>, decoding one token; m ≤ <see cref="WideDotRows"/> for a 16-bit B) with B stored n×k — y = x·Wᵀ, PyTorch's Linear —
/// skip packing: each output is a dot product of a row of A with a contiguous row of B, which reads B exactly
/// once at memory speed, where packing would read it, write it and read it again.
/// </para>
/// </remarks>
internal static unsafe class CpuGemm
{
    // ---- Block sizes -------------------------------------------------------------------------
    // Tuned for a Zen 4 core (32 KiB L1d, 1 MiB L2, shared L3) but sensible for any recent x64 core.
    // KC: depth of one rank-kc update. The A micro-panel (MR×KC floats = 12×256×4 = 12 KiB for
    //     AVX-512) must stay resident in the 32 KiB L1d while B micro-panels stream past it; the
    //     longer KC is, the more FMAs amortise each load/store of the C tile.
    // MC: rows of A packed per block: MC×KC×4 = 144 KiB sits in L2 next to the B block.
    //     Multiple of every MR (12, 6, 4).
    // NC: columns of B packed per block: KC×NC×4 = 512 KiB, about half of a 1 MiB L2, so the
    //     B block plus the A block stay in L2 for the whole ic loop. Multiple of every NR.
    internal const int KC = 256;
    internal const int MC = 144;
    internal const int NC = 512;

    // Problems with fewer multiply-adds than this run on the calling thread: Parallel.For costs
    // microseconds to fan out, which is more than the whole product takes below ~64k MACs.
    internal const long ParallelThreshold = 1L << 16;

    // Largest MR×NR of any kernel (AVX-512: 12×32); also covers Portable (4×2·16 at most).
    private const int MaxTile = 12 * 32;

    /// <summary>C = alpha·op(A)·op(B) + beta·C, row-major. See the class remarks for the algorithm.</summary>
    /// <param name="transA">If true, A is stored k×m (row stride <paramref name="lda"/>) and op(A)=Aᵀ; else m×k.</param>
    /// <param name="transB">If true, B is stored n×k (row stride <paramref name="ldb"/>) and op(B)=Bᵀ; else k×n.</param>
    /// <param name="m">Rows of op(A) and C.</param>
    /// <param name="n">Columns of op(B) and C.</param>
    /// <param name="k">Columns of op(A), rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">A's first element.</param>
    /// <param name="lda">Row stride of A as stored, in elements.</param>
    /// <param name="b">B's first element.</param>
    /// <param name="ldb">Row stride of B as stored, in elements.</param>
    /// <param name="beta">Scale of the old C; when 0, C is overwritten without being read (NaN-safe).</param>
    /// <param name="c">C's first element.</param>
    /// <param name="ldc">Row stride of C, in elements.</param>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float* a, long lda,
        float* b, long ldb, float beta, float* c, long ldc)
        => SgemmBatched(GemmKernel.Auto, transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);

    /// <summary>Same as <see cref="Sgemm(bool,bool,int,int,int,float,float*,long,float*,long,float,float*,long)"/> with a chosen kernel.</summary>
    internal static void Sgemm(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha, float* a, long lda,
        float* b, long ldb, float beta, float* c, long ldc)
        => SgemmBatched(kernel, transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);

    /// <summary>
    /// Strided batched GEMM: for each i in [0, batch), C_i = alpha·op(A_i)·op(B_i) + beta·C_i where
    /// A_i = a + i·strideA, B_i = b + i·strideB, C_i = c + i·strideC (strides in elements).
    /// </summary>
    /// <param name="transA">See <see cref="Sgemm(bool,bool,int,int,int,float,float*,long,float*,long,float,float*,long)"/>.</param>
    /// <param name="transB">See Sgemm.</param>
    /// <param name="m">Rows of each C.</param>
    /// <param name="n">Columns of each C.</param>
    /// <param name="k">Inner dimension.</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">First A.</param>
    /// <param name="lda">Row stride of each A.</param>
    /// <param name="strideA">Elements between consecutive A matrices.</param>
    /// <param name="b">First B.</param>
    /// <param name="ldb">Row stride of each B.</param>
    /// <param name="strideB">Elements between consecutive B matrices.</param>
    /// <param name="beta">Scale of the old C (0: overwrite without reading).</param>
    /// <param name="c">First C.</param>
    /// <param name="ldc">Row stride of each C.</param>
    /// <param name="strideC">Elements between consecutive C matrices.</param>
    /// <param name="batch">Number of products.</param>
    public static void SgemmBatched(bool transA, bool transB, int m, int n, int k, float alpha, float* a, long lda, long strideA,
        float* b, long ldb, long strideB, float beta, float* c, long ldc, long strideC, int batch)
        => SgemmBatched(GemmKernel.Auto, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);

    /// <summary>Batched GEMM with an explicitly chosen micro-kernel (tests force each path through this).</summary>
    internal static void SgemmBatched(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, long lda, long strideA, float* b, long ldb, long strideB, float beta, float* c, long ldc, long strideC, int batch)
        => GemmBatched(kernel, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);

    /// <summary>
    /// Batched GEMM whose A and B may be stored in fp32, bf16 or fp16 (strides and offsets in elements of each
    /// operand's own type); C is fp32.
    /// </summary>
    internal static void GemmBatched(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        GemmOperand a, long lda, long strideA, GemmOperand b, long ldb, long strideB, float beta, float* c, long ldc, long strideC, int batch)
    {
        RequireFloat(a.Type, "A");
        RequireFloat(b.Type, "B");
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        if (m == 0 || n == 0 || batch == 0) return;
        if (ldc < n) throw new ArgumentOutOfRangeException(nameof(ldc), "ldc must be at least n.");
        if (k > 0)
        {
            if (lda < (transA ? m : k)) throw new ArgumentOutOfRangeException(nameof(lda), "lda is smaller than a row of A.");
            if (ldb < (transB ? k : n)) throw new ArgumentOutOfRangeException(nameof(ldb), "ldb is smaller than a row of B.");
        }

        kernel = Resolve(kernel);

        if (k == 0 || alpha == 0f)
        {
            // Nothing to multiply: C = beta·C (BLAS semantics; beta == 0 writes zeros without reading).
            for (int bi = 0; bi < batch; bi++)
                ScaleC(c + bi * strideC, m, n, ldc, beta);
            return;
        }

        long macs = (long)m * n * k * batch;
        int threads = Environment.ProcessorCount;
        bool wideDot = m <= WideDotRows && b.Type is DType.BF16 or DType.F16 && Avx512F.IsSupported;
        if ((m <= DotRows || wideDot) && transB && !transA)
        {
            for (int bi = 0; bi < batch; bi++)
                DotProducts(m, n, k, alpha, a.Offset(bi * strideA), lda, b.Offset(bi * strideB), ldb, beta, c + bi * strideC, ldc,
                    parallel: threads > 1 && macs >= ParallelThreshold);
            return;
        }

        var job = new Job(kernel, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);

        if (threads <= 1 || macs < ParallelThreshold)
        {
            job.SetTiling(1);
            for (int t = 0; t < job.TaskCount; t++) job.RunTask(t);
            return;
        }

        job.SetTiling(threads);
        if (job.TaskCount == 1)
        {
            job.RunTask(0);
            return;
        }
        Parallel.For(0, job.TaskCount, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.RunTask);
    }

    internal static GemmKernel Resolve(GemmKernel kernel)
    {
        if (kernel == GemmKernel.Auto)
        {
            if (Avx512F.IsSupported) return GemmKernel.Avx512;
            if (Avx2.IsSupported && Fma.IsSupported) return GemmKernel.Avx2;
            return GemmKernel.Portable;
        }
        if (kernel == GemmKernel.Avx512 && !Avx512F.IsSupported) throw new PlatformNotSupportedException("AVX-512F is not supported on this CPU.");
        if (kernel == GemmKernel.Avx2 && !(Avx2.IsSupported && Fma.IsSupported)) throw new PlatformNotSupportedException("AVX2/FMA is not supported on this CPU.");
        return kernel;
    }

    /// <summary>Register-tile height of a kernel.</summary>
    internal static int TileM(GemmKernel kernel) => kernel switch
    {
        GemmKernel.Avx512 => 12,
        GemmKernel.Avx2 => 6,
        _ => 4,
    };

    /// <summary>Register-tile width of a kernel.</summary>
    internal static int TileN(GemmKernel kernel) => kernel switch
    {
        GemmKernel.Avx512 => 32,
        GemmKernel.Avx2 => 16,
        _ => 2 * Vector<float>.Count,
    };

    private static void ScaleC(float* c, int m, int n, long ldc, float beta)
    {
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + i * ldc, n);
            if (beta == 0f) row.Clear();
            else if (beta != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }

    // ---- Work decomposition --------------------------------------------------------------------

    /// <summary>One GEMM call split into independent macro tasks (batch × row chunk × column chunk).</summary>
    private sealed class Job
    {
        private readonly GemmKernel _kernel;
        private readonly bool _transA, _transB;
        private readonly int _m, _n, _k, _batch, _mr, _nr;
        private readonly float _alpha, _beta;
        private readonly GemmOperand _a, _b;
        private readonly float* _c;
        private readonly long _lda, _ldb, _ldc, _strideA, _strideB, _strideC;
        private int _rowChunk, _colChunk, _rowTasks, _colTasks;

        public Job(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha, GemmOperand a, long lda, long strideA,
            GemmOperand b, long ldb, long strideB, float beta, float* c, long ldc, long strideC, int batch)
        {
            _kernel = kernel; _transA = transA; _transB = transB; _m = m; _n = n; _k = k; _alpha = alpha; _beta = beta;
            _a = a; _b = b; _c = c; _lda = lda; _ldb = ldb; _ldc = ldc; _strideA = strideA; _strideB = strideB; _strideC = strideC;
            _batch = batch; _mr = TileM(kernel); _nr = TileN(kernel);
        }

        public int TaskCount => _batch * _rowTasks * _colTasks;

        /// <summary>
        /// Chooses chunk sizes. Column chunks are NC wide (one packed B block each). If batch × column
        /// chunks already give every thread work, each task takes all rows, so each packed B block is
        /// reused by as many rows as possible (packing B costs O(kc·nc) per task, amortised over its rows).
        /// Otherwise rows are split into about threads/(batch·colTasks) chunks, rounded to MR so that only
        /// the last chunk has an edge micro-tile.
        /// </summary>
        public void SetTiling(int threads)
        {
            _colChunk = NC;
            _colTasks = (_n + NC - 1) / NC;
            int outer = _batch * _colTasks;
            int rowTasks = outer >= threads ? 1 : (threads + outer - 1) / outer;
            int panels = (_m + _mr - 1) / _mr;
            rowTasks = Math.Clamp(rowTasks, 1, panels);
            _rowChunk = (panels + rowTasks - 1) / rowTasks * _mr;
            _rowTasks = (_m + _rowChunk - 1) / _rowChunk;
        }

        public void RunTask(int t)
        {
            int tj = t % _colTasks;
            int rest = t / _colTasks;
            int ti = rest % _rowTasks;
            int bi = rest / _rowTasks;
            int i0 = ti * _rowChunk, i1 = Math.Min(_m, i0 + _rowChunk);
            int j0 = tj * _colChunk, j1 = Math.Min(_n, j0 + _colChunk);
            Block(_a.Offset(bi * _strideA), _b.Offset(bi * _strideB), _c + bi * _strideC, i0, i1, j0, j1);
        }

        /// <summary>Computes C[i0..i1, j0..j1] (j1 − j0 ≤ NC) on the calling thread.</summary>
        // AggressiveOptimization on the driver, packers and kernels: a large GEMM calls them only a few
        // times, too few for tiered compilation to promote them from tier-0 (or OSR) code in time.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Block(GemmOperand a, GemmOperand b, float* c, int i0, int i1, int j0, int j1)
        {
            Scratch s = Scratch.Current;
            int mr = _mr, nr = _nr;
            int nc = j1 - j0;
            for (int pc = 0; pc < _k; pc += KC)
            {
                int kc = Math.Min(KC, _k - pc);
                // After the first rank-kc update C already holds beta·C + partial product: accumulate.
                float beta = pc == 0 ? _beta : 1f;
                PackB(_transB, b, _ldb, pc, j0, kc, nc, nr, s.B);
                for (int ic = i0; ic < i1; ic += MC)
                {
                    int mc = Math.Min(MC, i1 - ic);
                    PackA(_transA, a, _lda, ic, pc, mc, kc, mr, s.A);
                    for (int ir = 0; ir < mc; ir += mr)
                    {
                        int mrEff = Math.Min(mr, mc - ir);
                        float* pa = s.A + (long)ir * kc;
                        float* crow = c + (ic + ir) * _ldc + j0;
                        for (int jr = 0; jr < nc; jr += nr)
                        {
                            int nrEff = Math.Min(nr, nc - jr);
                            float* pb = s.B + (long)jr * kc;
                            float* ct = crow + jr;
                            if (mrEff == mr && nrEff == nr)
                            {
                                MicroKernel(kc, pa, pb, ct, _ldc, _alpha, beta);
                            }
                            else
                            {
                                // Edge tile: compute the full tile into scratch (alpha = 1, beta = 0, ld = nr),
                                // then merge only the valid part so nothing outside C is touched.
                                MicroKernel(kc, pa, pb, s.Edge, nr, 1f, 0f);
                                MergeEdge(s.Edge, nr, ct, _ldc, mrEff, nrEff, _alpha, beta);
                            }
                        }
                    }
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void MicroKernel(int kc, float* pa, float* pb, float* c, long ldc, float alpha, float beta)
        {
            switch (_kernel)
            {
                case GemmKernel.Avx512: KernelAvx512(kc, pa, pb, c, ldc, alpha, beta); break;
                case GemmKernel.Avx2: KernelAvx2(kc, pa, pb, c, ldc, alpha, beta); break;
                default: KernelPortable(kc, pa, pb, c, ldc, alpha, beta); break;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeEdge(float* t, int ldt, float* c, long ldc, int mr, int nr, float alpha, float beta)
    {
        for (int i = 0; i < mr; i++)
        {
            float* ci = c + i * ldc;
            float* ti = t + i * ldt;
            if (beta == 0f)
                for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j];
            else
                for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j] + beta * ci[j];
        }
    }

    // ---- Packing ---------------------------------------------------------------------------------
    // Each packer is generic over the operand's element type (TLoad converts one element to fp32), so the JIT
    // emits one specialised loop per type and the fp32 case keeps its plain loads and block copies.

    /// <summary>
    /// Packs op(A)[i0..i0+mc, p0..p0+kc] into MR-high micro-panels: panel r holds, for each p, the MR
    /// values op(A)[i0+r·MR .. +MR, p0+p] contiguously (zero-padded past mc), so the kernel reads A
    /// with unit stride and broadcasts one value per row.
    /// </summary>
    internal static void PackA(bool transA, GemmOperand a, long lda, int i0, int p0, int mc, int kc, int mr, float* dst)
    {
        switch (a.Type)
        {
            case DType.F32: PackA<LoadF32>(transA, a.Pointer, lda, i0, p0, mc, kc, mr, dst); break;
            case DType.BF16: PackA<LoadBf16>(transA, a.Pointer, lda, i0, p0, mc, kc, mr, dst); break;
            default: PackA<LoadF16>(transA, a.Pointer, lda, i0, p0, mc, kc, mr, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<TLoad>(bool transA, void* a, long lda, int i0, int p0, int mc, int kc, int mr, float* dst)
        where TLoad : struct, IElementLoad
    {
        if (transA)
        {
            // A stored k×m: row p0+p of A holds op(A)[i0.., p0+p] contiguously. Sweep each such row once,
            // left to right, dealing MR-value pieces out to the micro-panels. Walking one micro-panel at a
            // time instead would read 48-byte pieces of kc rows whose (often power-of-two) stride maps them
            // onto a few L1 sets, re-fetching every line from L2 for each panel.
            for (int p = 0; p < kc; p++)
            {
                long src = (long)(p0 + p) * lda + i0;
                for (int ir = 0; ir < mc; ir += mr)
                {
                    int rows = Math.Min(mr, mc - ir);
                    float* d = dst + (long)ir * kc + (long)p * mr;
                    int r = 0;
                    for (; r < rows; r++) d[r] = TLoad.Load(a, src + ir + r);
                    for (; r < mr; r++) d[r] = 0f;
                }
            }
            return;
        }

        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            float* d = dst + (long)ir * kc;
            if (rows == 12 && mr == 12 && TLoad.CanLoad8)
            {
                // The AVX-512 kernel's full panels (fp32, or bf16 widened as loaded): 12 rows × 8 columns at a time,
                // transposed in registers (the scalar scatter below was a tenth of a CPU training step).
                PackA12<TLoad>(a, (i0 + ir) * lda + p0, lda, kc, d);
                continue;
            }
            // A stored m×k: read each row sequentially, scatter with stride MR (the 12 KiB panel stays in L1).
            for (int r = 0; r < rows; r++)
            {
                long src = (i0 + ir + r) * lda + p0;
                float* dr = d + r;
                for (int p = 0; p < kc; p++) dr[p * mr] = TLoad.Load(a, src + p);
            }
            for (int r = rows; r < mr; r++)
                for (int p = 0; p < kc; p++) d[p * mr + r] = 0f;
        }
    }

    /// <summary>
    /// dst[q·ldd + j] = op(j·lds + q) for j, q &lt; 8, op(i) element src + i of the array at p read as fp32: an 8×8
    /// block transposed in registers (the usual AVX sequence: unpack pairs, shuffle quads, swap 128-bit lanes).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8<TLoad>(void* p, long src, long lds, float* dst, long ldd)
        where TLoad : struct, IElementLoad
    {
        var r0 = TLoad.Load8(p, src);
        var r1 = TLoad.Load8(p, src + lds);
        var r2 = TLoad.Load8(p, src + 2 * lds);
        var r3 = TLoad.Load8(p, src + 3 * lds);
        var r4 = TLoad.Load8(p, src + 4 * lds);
        var r5 = TLoad.Load8(p, src + 5 * lds);
        var r6 = TLoad.Load8(p, src + 6 * lds);
        var r7 = TLoad.Load8(p, src + 7 * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(s0, s4, 0x20));
        Avx.Store(dst + ldd, Avx.Permute2x128(s1, s5, 0x20));
        Avx.Store(dst + 2 * ldd, Avx.Permute2x128(s2, s6, 0x20));
        Avx.Store(dst + 3 * ldd, Avx.Permute2x128(s3, s7, 0x20));
        Avx.Store(dst + 4 * ldd, Avx.Permute2x128(s0, s4, 0x31));
        Avx.Store(dst + 5 * ldd, Avx.Permute2x128(s1, s5, 0x31));
        Avx.Store(dst + 6 * ldd, Avx.Permute2x128(s2, s6, 0x31));
        Avx.Store(dst + 7 * ldd, Avx.Permute2x128(s3, s7, 0x31));
    }

    /// <summary>
    /// One 12-row micro-panel of an A stored m×k from element <paramref name="start"/> of the array at
    /// <paramref name="a"/>: d[p·12 + r] = A[start + r·lda + p] as fp32 for r &lt; 12, p &lt; kc. Eight columns at a
    /// time: rows 0–7 by <see cref="Transpose8x8"/>, rows 8–11 by a 4×8 transpose; the columns past the last
    /// multiple of 8 one by one. Pure data movement (bf16 widening is exact): the scalar loop's panel, bit for bit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA12<TLoad>(void* a, long start, long lda, int kc, float* d)
        where TLoad : struct, IElementLoad
    {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            long src = start + p;
            float* o = d + (long)p * 12;
            Transpose8x8<TLoad>(a, src, lda, o, 12);
            var r8 = TLoad.Load8(a, src + 8 * lda);
            var r9 = TLoad.Load8(a, src + 9 * lda);
            var r10 = TLoad.Load8(a, src + 10 * lda);
            var r11 = TLoad.Load8(a, src + 11 * lda);
            var u0 = Avx.UnpackLow(r8, r9); var u1 = Avx.UnpackHigh(r8, r9);
            var u2 = Avx.UnpackLow(r10, r11); var u3 = Avx.UnpackHigh(r10, r11);
            var v0 = Avx.Shuffle(u0, u2, 0x44); var v1 = Avx.Shuffle(u0, u2, 0xEE);
            var v2 = Avx.Shuffle(u1, u3, 0x44); var v3 = Avx.Shuffle(u1, u3, 0xEE);
            Sse.Store(o + 8, v0.GetLower());
            Sse.Store(o + 20, v1.GetLower());
            Sse.Store(o + 32, v2.GetLower());
            Sse.Store(o + 44, v3.GetLower());
            Sse.Store(o + 56, v0.GetUpper());
            Sse.Store(o + 68, v1.GetUpper());
            Sse.Store(o + 80, v2.GetUpper());
            Sse.Store(o + 92, v3.GetUpper());
        }
        for (; p < kc; p++)
            for (int r = 0; r < 12; r++) d[(long)p * 12 + r] = TLoad.Load(a, start + r * lda + p);
    }

    /// <summary>
    /// One full NR-column micro-panel (NR a multiple of 8) of a B stored n×k from element <paramref name="start"/>:
    /// d[p·nr + j] = B[start + j·ldb + p] as fp32 for j &lt; nr, p &lt; kc, in 8×8 blocks (<see cref="Transpose8x8"/>);
    /// the last kc mod 8 steps one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackBTrans<TLoad>(void* b, long start, long ldb, int kc, int nr, float* d)
        where TLoad : struct, IElementLoad
    {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
            for (int j = 0; j < nr; j += 8)
                Transpose8x8<TLoad>(b, start + j * ldb + p, ldb, d + (long)p * nr + j, nr);
        for (; p < kc; p++)
            for (int j = 0; j < nr; j++) d[(long)p * nr + j] = TLoad.Load(b, start + j * ldb + p);
    }

    /// <summary>
    /// Packs op(B)[p0..p0+kc, j0..j0+nc] into NR-wide micro-panels: panel j holds, for each p, the NR
    /// values op(B)[p0+p, j0+j·NR .. +NR] contiguously (zero-padded past nc), ready for vector loads.
    /// </summary>
    internal static void PackB(bool transB, GemmOperand b, long ldb, int p0, int j0, int kc, int nc, int nr, float* dst)
    {
        switch (b.Type)
        {
            case DType.F32: PackB<LoadF32>(transB, b.Pointer, ldb, p0, j0, kc, nc, nr, dst); break;
            case DType.BF16: PackB<LoadBf16>(transB, b.Pointer, ldb, p0, j0, kc, nc, nr, dst); break;
            default: PackB<LoadF16>(transB, b.Pointer, ldb, p0, j0, kc, nc, nr, dst); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<TLoad>(bool transB, void* b, long ldb, int p0, int j0, int kc, int nc, int nr, float* dst)
        where TLoad : struct, IElementLoad
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* d = dst + (long)jr * kc;
            if (!transB)
            {
                // B stored k×n: a row segment of NR values is contiguous; a straight (converting) copy.
                long src = (long)p0 * ldb + j0 + jr;
                for (int p = 0; p < kc; p++, src += ldb, d += nr)
                {
                    if (cols == nr)
                    {
                        TLoad.Run(b, src, d, nr);
                    }
                    else
                    {
                        int j = 0;
                        for (; j < cols; j++) d[j] = TLoad.Load(b, src + j);
                        for (; j < nr; j++) d[j] = 0f;
                    }
                }
            }
            else if (cols == nr && nr % 8 == 0 && TLoad.CanLoad8)
            {
                // B stored n×k (x·Wᵀ's weights), fp32 or bf16, a full panel: 8×8 blocks transposed in registers.
                PackBTrans<TLoad>(b, (j0 + jr) * ldb + p0, ldb, kc, nr, d);
            }
            else
            {
                // B stored n×k: output column j is a contiguous row of B. Transpose in chunks of 16 k-steps
                // (one 64-byte line of each source row): the 16×NR destination block (2 KiB) and the NR
                // source lines both stay in L1 while the scatter writes fill each destination line.
                const int PChunk = 16;
                for (int pb = 0; pb < kc; pb += PChunk)
                {
                    int pn = Math.Min(PChunk, kc - pb);
                    float* db = d + (long)pb * nr;
                    for (int j = 0; j < cols; j++)
                    {
                        long src = (j0 + jr + j) * ldb + p0 + pb;
                        for (int q = 0; q < pn; q++) db[q * nr + j] = TLoad.Load(b, src + q);
                    }
                }
                for (int j = cols; j < nr; j++)
                    for (int p = 0; p < kc; p++) d[p * nr + j] = 0f;
            }
        }
    }

    /// <summary>Reads elements of one storage type as fp32 (the JIT specialises each generic packer per type).</summary>
    private interface IElementLoad
    {
        /// <summary>Element <paramref name="i"/> of the array at <paramref name="p"/>, as fp32.</summary>
        static abstract float Load(void* p, long i);

        /// <summary>Converts <paramref name="n"/> consecutive elements starting at element <paramref name="i"/>.</summary>
        static abstract void Run(void* p, long i, float* dst, int n);

        /// <summary>Whether <see cref="Load8"/> is available (the transposing packers use it).</summary>
        static abstract bool CanLoad8 { get; }

        /// <summary>Elements i .. i + 7 as eight fp32 lanes (only when <see cref="CanLoad8"/>).</summary>
        static abstract Vector256<float> Load8(void* p, long i);
    }

    private readonly struct LoadF32 : IElementLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load(void* p, long i) => ((float*)p)[i];

        public static bool CanLoad8 => Avx.IsSupported;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(void* p, long i) => Avx.LoadVector256((float*)p + i);

        public static void Run(void* p, long i, float* dst, int n) => Buffer.MemoryCopy((float*)p + i, dst, (long)n * sizeof(float), (long)n * sizeof(float));
    }

    private readonly struct LoadBf16 : IElementLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load(void* p, long i) => HalfConvert.Bf16ToFloat(((ushort*)p)[i]);

        public static bool CanLoad8 => Avx2.IsSupported;

        /// <summary>Eight bf16 values zero-extended to 32 bits and shifted into the high half: exact fp32.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(void* p, long i) =>
            Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)p + i)), 16).AsSingle();

        public static void Run(void* p, long i, float* dst, int n) => CpuFloatConvert.Bf16ToSingle((ushort*)p + i, dst, n);
    }

    private readonly struct LoadF16 : IElementLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load(void* p, long i) => (float)((Half*)p)[i];

        public static bool CanLoad8 => Avx2.IsSupported;

        /// <summary>Eight fp16 values zero-extended to 32 bits and widened exactly in registers.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(void* p, long i) =>
            CpuFloatConvert.F16BitsToSingle(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)p + i)).AsUInt32());

        public static void Run(void* p, long i, float* dst, int n) => CpuFloatConvert.F16ToSingle((Half*)p + i, dst, n);
    }

    private static void RequireFloat(DType t, string operand)
    {
        if (t is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"GEMM operand {operand} is {t}; it must be F32, BF16 or F16");
    }

    // ---- Few rows: dot products --------------------------------------------------------------------

    /// <summary>Largest m that takes the dot-product path instead of packing.</summary>
    internal const int DotRows = 4;

    /// <summary>
    /// Largest m that takes the dot-product path for a 16-bit B with AVX-512 (a batch of prompts decoding over bf16 or
    /// fp16 weights): rows of A go in pairs, each B element widened once per pair, while packing would convert and
    /// copy the whole of B on every call. The 6B shape's bf16 batch of 8 decoded at 4.4 tokens/s through packing.
    /// </summary>
    internal const int WideDotRows = 8;

    // Columns of C per parallel task on the dot-product path: 64 rows of B (256 KiB of a 1024-wide fp32 B).
    private const int DotColumnBlock = 64;

    // Elements of a 16-bit B row converted at a time: 2 KiB of fp32 in L1, long enough for Dot's unrolled loop.
    private const int DotChunk = 512;

    /// <summary>
    /// C[i, j] = alpha·Σ_p A[i, p]·B[j, p] + beta·C[i, j] for m ≤ <see cref="DotRows"/>, B stored n×k. Each C
    /// element is one thread's fixed-order sum, so the result does not depend on the thread count.
    /// </summary>
    private static void DotProducts(int m, int n, int k, float alpha, GemmOperand a, long lda, GemmOperand b, long ldb,
        float beta, float* c, long ldc, bool parallel)
    {
        // A has at most eight rows: an fp32 copy of a 16-bit A is cheap and keeps the inner loop one kind.
        float* af;
        float[]? aCopy = null;
        if (a.Type != DType.F32)
        {
            aCopy = GC.AllocateUninitializedArray<float>(m * k, pinned: true);
            af = (float*)Unsafe.AsPointer(ref aCopy[0]);
            for (int i = 0; i < m; i++) CpuFloatConvert.ToSingle(a.Type, a.Offset(i * lda).Pointer, af + (long)i * k, k);
            lda = k;
        }
        else af = (float*)a.Pointer;

        int blocks = (n + DotColumnBlock - 1) / DotColumnBlock;
        void Block(int blk)
        {
            int j0 = blk * DotColumnBlock, j1 = Math.Min(n, j0 + DotColumnBlock);
            float* buf = stackalloc float[DotChunk];
            float* acc = stackalloc float[WideDotRows];
            int j = j0;
            // fp16 widens in registers with AVX-512 only (CpuWideningDot.F16Widener); without it, the chunked loop below.
            bool widenF16 = b.Type == DType.F16 && Avx512F.IsSupported;
            if (b.Type == DType.BF16 || widenF16)
            {
                // Four rows of B share each load of an A row (see CpuWideningDot.Int8Rows4: a 16384-wide A row is
                // 64 KB, past L1). Leftover rows take the loop below.
                // Rows of A go in pairs (a batch being decoded): each B element is widened once for two rows, same sums.
                float* acc4 = stackalloc float[8];
                for (; j + 4 <= j1; j += 4)
                {
                    ushort* row = (ushort*)b.Pointer + (long)j * ldb;
                    for (int i = 0; i < m;)
                    {
                        int pair = i + 2 <= m ? 2 : 1;
                        if (pair == 2)
                        {
                            if (b.Type == DType.BF16) CpuWideningDot.Bf16Rows4x2(row, ldb, af + i * lda, af + (i + 1) * lda, k, acc4, acc4 + 4);
                            else CpuWideningDot.F16Rows4x2(row, ldb, af + i * lda, af + (i + 1) * lda, k, acc4, acc4 + 4);
                        }
                        else if (b.Type == DType.BF16) CpuWideningDot.Bf16Rows4(row, ldb, af + i * lda, k, acc4);
                        else CpuWideningDot.F16Rows4(row, ldb, af + i * lda, k, acc4);
                        for (int h = 0; h < pair; h++)
                            for (int r = 0; r < 4; r++)
                            {
                                float* ci = c + (i + h) * ldc + j + r;
                                float v = acc4[4 * h + r];
                                *ci = beta == 0f ? alpha * v : alpha * v + beta * *ci;
                            }
                        i += pair;
                    }
                }
            }
            for (; j < j1; j++)
            {
                byte* row = (byte*)b.Pointer + (long)j * ldb * b.Type.SizeOf();
                if (b.Type == DType.F32)
                {
                    var bj = new ReadOnlySpan<float>(row, k);
                    for (int i = 0; i < m; i++) acc[i] = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(af + i * lda, k), bj);
                }
                else if (b.Type == DType.BF16)
                {
                    // bf16 → fp32 is a shift: done in registers as the row streams, at the memory's pace.
                    for (int i = 0; i < m; i++) acc[i] = CpuWideningDot.Bf16((ushort*)row, af + i * lda, k);
                }
                else if (widenF16)
                {
                    for (int i = 0; i < m; i++) acc[i] = CpuWideningDot.F16((ushort*)row, af + i * lda, k);
                }
                else
                {
                    for (int i = 0; i < m; i++) acc[i] = 0f;
                    for (int p0 = 0; p0 < k; p0 += DotChunk)
                    {
                        int len = Math.Min(DotChunk, k - p0);
                        CpuFloatConvert.ToSingle(b.Type, row + (long)p0 * b.Type.SizeOf(), buf, len);
                        var bj = new ReadOnlySpan<float>(buf, len);
                        for (int i = 0; i < m; i++) acc[i] += System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(af + i * lda + p0, len), bj);
                    }
                }
                for (int i = 0; i < m; i++)
                {
                    float* ci = c + i * ldc + j;
                    *ci = beta == 0f ? alpha * acc[i] : alpha * acc[i] + beta * *ci;
                }
            }
        }
        if (parallel && blocks > 1) Parallel.For(0, blocks, Block);
        else for (int blk = 0; blk < blocks; blk++) Block(blk);
        GC.KeepAlive(aCopy);
    }

    // ---- Micro-kernels -------------------------------------------------------------------------
    // Each computes a full MR×NR tile: acc = Σ_p pa[p·MR + i] · pb[p·NR + j], then
    // C = alpha·acc (beta == 0, C not read) or C = alpha·acc + beta·C.

    /// <summary>
    /// AVX-512: 12 rows × 32 columns = 24 zmm accumulators + 2 B vectors + 1 broadcast = 27 of 32 zmm
    /// registers. 24 independent FMA chains more than cover FMA latency (4 cycles) × throughput, and each
    /// k step does 24 FMAs for 2 vector loads + 12 broadcasts, so the kernel is FMA-bound, not load-bound.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void KernelAvx512(int kc, float* pa, float* pb, float* c, long ldc, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default,
            c90 = default, c91 = default, cA0 = default, cA1 = default, cB0 = default, cB1 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(pb);
            Vector512<float> b1 = Vector512.Load(pb + 16);
            Vector512<float> av;
            av = Vector512.Create(pa[0]); c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(pa[1]); c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(pa[2]); c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(pa[3]); c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(pa[4]); c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(pa[5]); c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51);
            av = Vector512.Create(pa[6]); c60 = Avx512F.FusedMultiplyAdd(av, b0, c60); c61 = Avx512F.FusedMultiplyAdd(av, b1, c61);
            av = Vector512.Create(pa[7]); c70 = Avx512F.FusedMultiplyAdd(av, b0, c70); c71 = Avx512F.FusedMultiplyAdd(av, b1, c71);
            av = Vector512.Create(pa[8]); c80 = Avx512F.FusedMultiplyAdd(av, b0, c80); c81 = Avx512F.FusedMultiplyAdd(av, b1, c81);
            av = Vector512.Create(pa[9]); c90 = Avx512F.FusedMultiplyAdd(av, b0, c90); c91 = Avx512F.FusedMultiplyAdd(av, b1, c91);
            av = Vector512.Create(pa[10]); cA0 = Avx512F.FusedMultiplyAdd(av, b0, cA0); cA1 = Avx512F.FusedMultiplyAdd(av, b1, cA1);
            av = Vector512.Create(pa[11]); cB0 = Avx512F.FusedMultiplyAdd(av, b0, cB0); cB1 = Avx512F.FusedMultiplyAdd(av, b1, cB1);
            pa += 12;
            pb += 32;
        }

        Vector512<float> va = Vector512.Create(alpha);
        if (beta == 0f)
        {
            (va * c00).Store(c); (va * c01).Store(c + 16); c += ldc;
            (va * c10).Store(c); (va * c11).Store(c + 16); c += ldc;
            (va * c20).Store(c); (va * c21).Store(c + 16); c += ldc;
            (va * c30).Store(c); (va * c31).Store(c + 16); c += ldc;
            (va * c40).Store(c); (va * c41).Store(c + 16); c += ldc;
            (va * c50).Store(c); (va * c51).Store(c + 16); c += ldc;
            (va * c60).Store(c); (va * c61).Store(c + 16); c += ldc;
            (va * c70).Store(c); (va * c71).Store(c + 16); c += ldc;
            (va * c80).Store(c); (va * c81).Store(c + 16); c += ldc;
            (va * c90).Store(c); (va * c91).Store(c + 16); c += ldc;
            (va * cA0).Store(c); (va * cA1).Store(c + 16); c += ldc;
            (va * cB0).Store(c); (va * cB1).Store(c + 16);
        }
        else
        {
            Vector512<float> vb = Vector512.Create(beta);
            Upd512(c, c00, c01, va, vb); c += ldc;
            Upd512(c, c10, c11, va, vb); c += ldc;
            Upd512(c, c20, c21, va, vb); c += ldc;
            Upd512(c, c30, c31, va, vb); c += ldc;
            Upd512(c, c40, c41, va, vb); c += ldc;
            Upd512(c, c50, c51, va, vb); c += ldc;
            Upd512(c, c60, c61, va, vb); c += ldc;
            Upd512(c, c70, c71, va, vb); c += ldc;
            Upd512(c, c80, c81, va, vb); c += ldc;
            Upd512(c, c90, c91, va, vb); c += ldc;
            Upd512(c, cA0, cA1, va, vb); c += ldc;
            Upd512(c, cB0, cB1, va, vb);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Upd512(float* c, Vector512<float> x0, Vector512<float> x1, Vector512<float> va, Vector512<float> vb)
    {
        Avx512F.FusedMultiplyAdd(vb, Vector512.Load(c), va * x0).Store(c);
        Avx512F.FusedMultiplyAdd(vb, Vector512.Load(c + 16), va * x1).Store(c + 16);
    }

    /// <summary>
    /// AVX2+FMA: 6 rows × 16 columns = 12 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm
    /// registers (the classic Haswell-class sgemm tile).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void KernelAvx2(int kc, float* pa, float* pb, float* c, long ldc, float alpha, float beta)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(pb);
            Vector256<float> b1 = Vector256.Load(pb + 8);
            Vector256<float> av;
            av = Vector256.Create(pa[0]); c00 = Fma.MultiplyAdd(av, b0, c00); c01 = Fma.MultiplyAdd(av, b1, c01);
            av = Vector256.Create(pa[1]); c10 = Fma.MultiplyAdd(av, b0, c10); c11 = Fma.MultiplyAdd(av, b1, c11);
            av = Vector256.Create(pa[2]); c20 = Fma.MultiplyAdd(av, b0, c20); c21 = Fma.MultiplyAdd(av, b1, c21);
            av = Vector256.Create(pa[3]); c30 = Fma.MultiplyAdd(av, b0, c30); c31 = Fma.MultiplyAdd(av, b1, c31);
            av = Vector256.Create(pa[4]); c40 = Fma.MultiplyAdd(av, b0, c40); c41 = Fma.MultiplyAdd(av, b1, c41);
            av = Vector256.Create(pa[5]); c50 = Fma.MultiplyAdd(av, b0, c50); c51 = Fma.MultiplyAdd(av, b1, c51);
            pa += 6;
            pb += 16;
        }

        Vector256<float> va = Vector256.Create(alpha);
        if (beta == 0f)
        {
            (va * c00).Store(c); (va * c01).Store(c + 8); c += ldc;
            (va * c10).Store(c); (va * c11).Store(c + 8); c += ldc;
            (va * c20).Store(c); (va * c21).Store(c + 8); c += ldc;
            (va * c30).Store(c); (va * c31).Store(c + 8); c += ldc;
            (va * c40).Store(c); (va * c41).Store(c + 8); c += ldc;
            (va * c50).Store(c); (va * c51).Store(c + 8);
        }
        else
        {
            Vector256<float> vb = Vector256.Create(beta);
            Upd256(c, c00, c01, va, vb); c += ldc;
            Upd256(c, c10, c11, va, vb); c += ldc;
            Upd256(c, c20, c21, va, vb); c += ldc;
            Upd256(c, c30, c31, va, vb); c += ldc;
            Upd256(c, c40, c41, va, vb); c += ldc;
            Upd256(c, c50, c51, va, vb);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Upd256(float* c, Vector256<float> x0, Vector256<float> x1, Vector256<float> va, Vector256<float> vb)
    {
        Fma.MultiplyAdd(vb, Vector256.Load(c), va * x0).Store(c);
        Fma.MultiplyAdd(vb, Vector256.Load(c + 8), va * x1).Store(c + 8);
    }

    /// <summary>
    /// Portable: 4 rows × 2 <see cref="Vector{T}"/> columns = 8 accumulators, few enough for any
    /// SIMD register file (16 on SSE/NEON). Uses separate multiply and add (no FMA guarantee), so results
    /// can differ from the FMA kernels in the last bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void KernelPortable(int kc, float* pa, float* pb, float* c, long ldc, float alpha, float beta)
    {
        int w = Vector<float>.Count;
        Vector<float> c00 = default, c01 = default, c10 = default, c11 = default,
            c20 = default, c21 = default, c30 = default, c31 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector<float> b0 = Unsafe.ReadUnaligned<Vector<float>>(pb);
            Vector<float> b1 = Unsafe.ReadUnaligned<Vector<float>>(pb + w);
            Vector<float> av;
            av = new Vector<float>(pa[0]); c00 += av * b0; c01 += av * b1;
            av = new Vector<float>(pa[1]); c10 += av * b0; c11 += av * b1;
            av = new Vector<float>(pa[2]); c20 += av * b0; c21 += av * b1;
            av = new Vector<float>(pa[3]); c30 += av * b0; c31 += av * b1;
            pa += 4;
            pb += 2 * w;
        }
        UpdPortable(c, c00, c01, alpha, beta); c += ldc;
        UpdPortable(c, c10, c11, alpha, beta); c += ldc;
        UpdPortable(c, c20, c21, alpha, beta); c += ldc;
        UpdPortable(c, c30, c31, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdPortable(float* c, Vector<float> x0, Vector<float> x1, float alpha, float beta)
    {
        int w = Vector<float>.Count;
        Vector<float> r0 = x0 * alpha, r1 = x1 * alpha;
        if (beta != 0f)
        {
            r0 += Unsafe.ReadUnaligned<Vector<float>>(c) * beta;
            r1 += Unsafe.ReadUnaligned<Vector<float>>(c + w) * beta;
        }
        Unsafe.WriteUnaligned(c, r0);
        Unsafe.WriteUnaligned(c + w, r1);
    }

    // ---- Scratch ---------------------------------------------------------------------------------

    /// <summary>
    /// Per-thread packing buffers, allocated once per thread (64-byte aligned so every packed row starts
    /// on a cache line) and reused by every call on that thread. The finalizer frees them when the thread
    /// (and so its ThreadStatic reference) goes away.
    /// </summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? t_current;

        public static Scratch Current => t_current ??= new Scratch();

        public readonly float* A;
        public readonly float* B;
        public readonly float* Edge;

        private Scratch()
        {
            A = (float*)NativeMemory.AlignedAlloc((nuint)MC * KC * sizeof(float), 64);
            B = (float*)NativeMemory.AlignedAlloc((nuint)KC * NC * sizeof(float), 64);
            Edge = (float*)NativeMemory.AlignedAlloc((nuint)MaxTile * sizeof(float), 64);
        }

        ~Scratch()
        {
            NativeMemory.AlignedFree(A);
            NativeMemory.AlignedFree(B);
            NativeMemory.AlignedFree(Edge);
        }
    }
}
