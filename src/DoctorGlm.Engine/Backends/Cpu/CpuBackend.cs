using System.Numerics;
using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// The reference backend: fp32 math on the host, SIMD through <see cref="TensorPrimitives"/> and hand-written
/// vector loops, <see cref="Parallel"/> across rows for large inputs. Every CUDA kernel is tested against it.
/// </summary>
/// <remarks>Partial: each kernel family lives in <c>CpuBackend.Family.cs</c> next to its siblings.</remarks>
public sealed unsafe partial class CpuBackend : IBackend
{
    /// <summary>The single CPU backend.</summary>
    public static CpuBackend Instance { get; } = new();

    private CpuBackend() { }

    /// <summary>Below this many elements a kernel runs on the calling thread (thread hand-off costs more).</summary>
    internal const int ParallelThreshold = 1 << 15;

    /// <inheritdoc />
    public Device Device => Device.Cpu;

    /// <inheritdoc />
    public Storage Allocate(long bytes) => new CpuStorage(bytes);

    /// <inheritdoc />
    public MemoryStats Memory => CpuAllocator.Stats;

    /// <inheritdoc />
    public void Fill(Tensor dst, float value)
    {
        switch (dst.DType)
        {
            case DType.F32: dst.AsSpan<float>().Fill(value); break;
            case DType.F16: dst.AsSpan<ushort>().Fill(HalfConvert.FloatToF16(value)); break;
            case DType.BF16: dst.AsSpan<ushort>().Fill(HalfConvert.FloatToBf16(value)); break;
            case DType.I32: dst.AsSpan<int>().Fill(checked((int)value)); break;
            case DType.U8: dst.AsSpan<byte>().Fill(checked((byte)value)); break;
            case DType.I8: dst.AsSpan<sbyte>().Fill(checked((sbyte)value)); break;
        }
    }

    /// <inheritdoc />
    public void CopyFromHost(ReadOnlySpan<byte> src, Tensor dst)
    {
        var d = RawBytes(dst);
        if (d.Length != src.Length) throw new ArgumentException($"CopyFromHost: {src.Length} bytes for {dst.Describe("tensor")} of {d.Length} bytes");
        src.CopyTo(d);
    }

    /// <inheritdoc />
    public void CopyToHost(Tensor src, Span<byte> dst) => RawBytes(src).CopyTo(dst);

    private static Span<byte> RawBytes(Tensor t)
    {
        if (!t.IsContiguous) throw new InvalidOperationException($"{t.Describe("tensor")} is not contiguous");
        return new Span<byte>(t.Ptr<byte>(), checked((int)(t.NumElements * t.DType.SizeOf())));
    }

    /// <inheritdoc />
    public void Copy(Tensor src, Tensor dst)
    {
        if (src.Shape != dst.Shape) throw new ArgumentException($"Copy: {src.Describe("source")} and {dst.Describe("destination")} differ in shape");
        bool floats = src.DType.IsFloat() && dst.DType.IsFloat();
        if (!floats && src.DType != dst.DType) throw new ArgumentException($"Copy: cannot convert {src.DType} to {dst.DType}");
        long n = src.NumElements;
        if (n == 0) return;
        if (src.IsContiguous && dst.IsContiguous)
        {
            if (src.DType == dst.DType) { Buffer.MemoryCopy(src.Ptr<byte>(), dst.Ptr<byte>(), n * dst.DType.SizeOf(), n * src.DType.SizeOf()); return; }
            // Whole weight matrices are cast when a model changes precision: use the vectorised converters.
            if (src.DType == DType.F32) CpuFloatConvert.FromSingle(src.Ptr<float>(), dst.DType, dst.Ptr<byte>(), n);
            else if (dst.DType == DType.F32) CpuFloatConvert.ToSingle(src.DType, src.Ptr<byte>(), dst.Ptr<float>(), n);
            else ConvertRun(src.DType, src.Ptr<byte>(), 1, dst.DType, dst.Ptr<byte>(), 1, n);
            return;
        }
        // General strided copy: walk every row (all dims but the last) with an odometer, convert along the last dim.
        int rank = src.Rank;
        int last = src.Shape[rank - 1];
        long ss = src.Strides[rank - 1], ds = dst.Strides[rank - 1];
        long rows = n / last;
        var idx = new int[Math.Max(0, rank - 1)];
        byte* sp = src.Ptr<byte>(), dp = dst.Ptr<byte>();
        int sz = src.DType.SizeOf(), dz = dst.DType.SizeOf();
        for (long r = 0; r < rows; r++)
        {
            long so = 0, doff = 0;
            for (int d = 0; d < rank - 1; d++) { so += idx[d] * src.Strides[d]; doff += idx[d] * dst.Strides[d]; }
            ConvertRun(src.DType, sp + so * sz, ss, dst.DType, dp + doff * dz, ds, last);
            for (int d = rank - 2; d >= 0; d--)
            {
                if (++idx[d] < src.Shape[d]) break;
                idx[d] = 0;
            }
        }
    }

    /// <summary>Copies <paramref name="n"/> elements with element strides, converting float formats.</summary>
    private static void ConvertRun(DType st, byte* s, long sStride, DType dt, byte* d, long dStride, long n)
    {
        if (st == dt)
        {
            int z = st.SizeOf();
            for (long i = 0; i < n; i++) Buffer.MemoryCopy(s + i * sStride * z, d + i * dStride * z, z, z);
            return;
        }
        for (long i = 0; i < n; i++)
        {
            float v = st switch
            {
                DType.F32 => ((float*)s)[i * sStride],
                DType.F16 => HalfConvert.F16ToFloat(((ushort*)s)[i * sStride]),
                _ => HalfConvert.Bf16ToFloat(((ushort*)s)[i * sStride]),
            };
            switch (dt)
            {
                case DType.F32: ((float*)d)[i * dStride] = v; break;
                case DType.F16: ((ushort*)d)[i * dStride] = HalfConvert.FloatToF16(v); break;
                default: ((ushort*)d)[i * dStride] = HalfConvert.FloatToBf16(v); break;
            }
        }
    }

    /// <inheritdoc />
    public void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y)
    {
        bool same = a.Ptr<byte>() == b.Ptr<byte>();
        if (a.DType == DType.F32 && b.DType == DType.F32 && y.DType == DType.F32)
        {
            float* pa = a.Ptr<float>(), pb = b.Ptr<float>(), py = y.Ptr<float>();
            ForChunks(y.NumElements, (start, len) => AddScaledRun(pa + start, alpha, pb + start, beta, py + start, len, same, py == pb));
            return;
        }
        // 16-bit activations (a GLM block's residual): widen, the same fp32 arithmetic, round y once, in runs that
        // stay in L1.
        const int Run = 4096;
        ForChunks(y.NumElements, (start, len) =>
        {
            for (long o = start; o < start + len; o += Run)
            {
                int n = (int)Math.Min(Run, start + len - o);
                float* pa = CpuRows.Read(a, o, n, 0), pb = same ? pa : CpuRows.Read(b, o, n, 1), py = CpuRows.Target(y, o, n, 2);
                AddScaledRun(pa, alpha, pb, beta, py, n, same, py == pb);
                CpuRows.Write(py, y, o, n);
            }
        });
    }

    /// <summary>y = α·a + β·b over one run; <paramref name="same"/>: a and b are one buffer; <paramref name="yIsB"/>: y aliases b.</summary>
    private static void AddScaledRun(float* pa, float alpha, float* pb, float beta, float* py, int len, bool same, bool yIsB)
    {
        var sa = new ReadOnlySpan<float>(pa, len);
        var sb = new ReadOnlySpan<float>(pb, len);
        var sy = new Span<float>(py, len);
        // TensorPrimitives allows exact aliasing of an input and the output, so order the passes to read
        // each input before it could be overwritten.
        if (same) TensorPrimitives.Multiply(sa, alpha + beta, sy);
        else if (alpha == 1f && beta == 1f) TensorPrimitives.Add(sa, sb, sy);
        else if (yIsB) { TensorPrimitives.Multiply(sb, beta, sy); TensorPrimitives.MultiplyAdd(sa, alpha, sy, sy); }
        else { TensorPrimitives.Multiply(sa, alpha, sy); TensorPrimitives.MultiplyAdd(sb, beta, sy, sy); }
    }

    /// <inheritdoc />
    public void AddScaledRowBias(Tensor a, float alpha, Tensor b, Tensor bias, Tensor y)
    {
        ElementwiseArguments.CheckAddScaledRowBias(a, b, bias, y);
        int n = (int)bias.NumElements;
        long rows = y.NumElements / n;
        float* pb = b.Ptr<float>(), pv = bias.Ptr<float>();
        DType yt = y.DType;
        ForRows(rows, n, r =>
        {
            // AddRowVector's fma(v, 1, b) is b + v exactly; rounded to y's dtype as the linear rounds its output (slot 0
            // holds the 16-bit values for a moment); then AddScaledRun's passes for β = 1: α·a, then fma(t, 1, α·a);
            // y rounded once. t is read from b before y (which may alias b) is written.
            float* t = CpuRows.Buffer(2, n);
            TensorPrimitives.Add(new ReadOnlySpan<float>(pb + r * n, n), new ReadOnlySpan<float>(pv, n), new Span<float>(t, n));
            if (yt != DType.F32)
            {
                void* bits = CpuRows.Buffer(0, n);
                CpuFloatConvert.FromSingle(t, yt, bits, n);
                CpuFloatConvert.ToSingle(yt, bits, t, n);
            }
            float* ar = CpuRows.Read(a, r * n, n, 0), yr = CpuRows.Target(y, r * n, n, 1);
            var row = new Span<float>(yr, n);
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(ar, n), alpha, row);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(t, n), 1f, row, row);
            CpuRows.Write(yr, y, r * n, n);
        });
    }

    /// <inheritdoc />
    public void Mul(Tensor a, Tensor b, Tensor y)
    {
        float* pa = a.Ptr<float>(), pb = b.Ptr<float>(), py = y.Ptr<float>();
        ForChunks(y.NumElements, (start, len) =>
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(pa + start, len), new ReadOnlySpan<float>(pb + start, len), new Span<float>(py + start, len)));
    }

    /// <inheritdoc />
    public void AddRowVector(Tensor y, Tensor v, float alpha, Tensor? output = null)
    {
        if (output is not null) ElementwiseArguments.CheckRowVectorOutput(y, output);
        int n = (int)v.NumElements;
        long rows = y.NumElements / n;
        float* py = y.Ptr<float>(), pv = v.Ptr<float>();
        if (output is not null)
        {
            // The same fma(v, α, y) per element into the output's rows, rounded once (CpuRows).
            ForRows(rows, n, r =>
            {
                float* o = CpuRows.Target(output, r * n, n, 0);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(pv, n), alpha, new ReadOnlySpan<float>(py + r * n, n), new Span<float>(o, n));
                CpuRows.Write(o, output, r * n, n);
            });
            return;
        }
        if (n == 1)
        {
            float add = alpha * pv[0];
            ForChunks(rows, (s, len) => { var span = new Span<float>(py + s, len); TensorPrimitives.Add(span, add, span); });
            return;
        }
        ForRows(rows, n, r =>
        {
            var row = new Span<float>(py + r * n, n);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(pv, n), alpha, row, row);
        });
    }

    /// <inheritdoc />
    public void SumRows(Tensor x, Tensor y, bool accumulate)
    {
        int n = (int)y.NumElements;
        long rows = x.NumElements / n;
        float* px = x.Ptr<float>(), py = y.Ptr<float>();
        // Column sums in double (bias gradients stay accurate over long sequences). Tasks own disjoint column blocks
        // and add their rows in order, so each sum is the same whatever the core count; lanes widen float → double.
        const int ColumnBlock = 256;
        int blocks = (n + ColumnBlock - 1) / ColumnBlock;
        void Block(int b)
        {
            int c0 = b * ColumnBlock, len = Math.Min(ColumnBlock, n - c0);
            double* acc = stackalloc double[ColumnBlock];
            new Span<double>(acc, len).Clear();
            for (long r = 0; r < rows; r++)
            {
                float* row = px + r * n + c0;
                int j = 0;
                if (Vector.IsHardwareAccelerated)
                    for (; j <= len - Vector<float>.Count; j += Vector<float>.Count)
                    {
                        Vector.Widen(Vector.Load(row + j), out var lo, out var hi);
                        (Vector.Load(acc + j) + lo).Store(acc + j);
                        (Vector.Load(acc + j + Vector<double>.Count) + hi).Store(acc + j + Vector<double>.Count);
                    }
                for (; j < len; j++) acc[j] += row[j];
            }
            for (int j = 0; j < len; j++) py[c0 + j] = (float)((accumulate ? py[c0 + j] : 0) + acc[j]);
        }
        if (rows * n <= ParallelThreshold || blocks == 1) for (int b = 0; b < blocks; b++) Block(b);
        else Parallel.For(0, blocks, Block);
    }

    /// <inheritdoc />
    public double Sum(Tensor x)
    {
        float* p = x.Ptr<float>();
        long n = x.NumElements;
        double s = 0;
        for (long i = 0; i < n; i++) s += p[i];
        return s;
    }

    /// <inheritdoc />
    public double SumOfSquares(Tensor x)
    {
        float* p = x.Ptr<float>();
        long n = x.NumElements;
        double s = 0;
        for (long i = 0; i < n; i++) s += (double)p[i] * p[i];
        return s;
    }

    /// <inheritdoc />
    public long CountNonFinite(Tensor x)
    {
        float* p = x.Ptr<float>();
        long n = x.NumElements, bad = 0;
        for (long i = 0; i < n; i++) if (!float.IsFinite(p[i])) bad++;
        return bad;
    }

    /// <inheritdoc />
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, long aOffset, long lda, long strideA,
        Tensor b, long bOffset, long ldb, long strideB,
        float beta, Tensor c, long cOffset, long ldc, long strideC, int batch)
    {
        GemmArguments.CheckOutput(c, beta);
        var ga = new GemmOperand(a.Ptr<byte>(), a.DType).Offset(aOffset);
        var gb = new GemmOperand(b.Ptr<byte>(), b.DType).Offset(bOffset);
        if (c.DType == DType.F32)
        {
            CpuGemm.GemmBatched(GemmKernel.Auto, transA, transB, m, n, k, alpha, ga, lda, strideA, gb, ldb, strideB,
                beta, c.Ptr<float>() + cOffset, ldc, strideC, batch);
            return;
        }
        // A 16-bit C: the fp32 products go to a packed scratch, then each row is rounded once into C.
        if (m == 0 || n == 0 || batch == 0) return;
        using var products = Tensor.Empty(new Shape(batch, m, n), DType.F32, Device);
        float* p = products.Ptr<float>();
        CpuGemm.GemmBatched(GemmKernel.Auto, transA, transB, m, n, k, alpha, ga, lda, strideA, gb, ldb, strideB,
            0f, p, n, (long)m * n, batch);
        byte* pc = c.Ptr<byte>();
        int size = c.DType.SizeOf();
        ForRows((long)batch * m, n, row =>
        {
            long bi = row / m, i = row % m;
            CpuFloatConvert.FromSingle(p + row * n, c.DType, pc + (cOffset + bi * strideC + i * ldc) * size, n);
        });
    }

    // ---------------------------------------------------------------- helpers shared by the kernel files

    /// <summary>Runs <paramref name="body"/>(start, length) over [0, n) in chunks, in parallel when n is large.</summary>
    internal static void ForChunks(long n, Action<long, int> body)
    {
        if (n <= ParallelThreshold) { if (n > 0) body(0, (int)n); return; }
        int chunks = Math.Min(Environment.ProcessorCount * 4, (int)((n + ParallelThreshold - 1) / ParallelThreshold));
        long per = (n + chunks - 1) / chunks;
        Parallel.For(0, chunks, i =>
        {
            long s = i * per;
            long e = Math.Min(n, s + per);
            if (e > s) body(s, (int)(e - s));
        });
    }

    /// <summary>Runs <paramref name="body"/>(row) for every row, in parallel when rows·rowLength is large.</summary>
    internal static void ForRows(long rows, long rowLength, Action<long> body)
    {
        if (rows * rowLength <= ParallelThreshold || rows == 1) { for (long r = 0; r < rows; r++) body(r); return; }
        Parallel.For(0L, rows, body);
    }
}
