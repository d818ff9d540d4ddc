using System.Numerics;
using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

// Precision choice: per-row statistics are two-pass (mean first, then Σ(x − mean)²) with both sums accumulated in
// double lanes (fp32 vectors widened to fp64). Two-pass avoids the E[x²] − E[x]² cancellation that wrecks the
// variance of rows with a large mean and small spread (post-residual activations); double accumulation keeps the
// error independent of the row length (4096 here), so the CPU reference is tighter than any fp32 GPU kernel it
// judges. The elementwise normalisation itself is fp32.
public sealed unsafe partial class CpuBackend
{
    /// <summary>Rows per partial sum when reducing dweight/dbias: fixed, so the summation order (and the result) does not depend on the thread count.</summary>
    private const int LayerNormRowsPerChunk = 64;

    /// <inheritdoc />
    public void LayerNormForward(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd, Tensor? copy = null)
    {
        LayerNormArguments.CheckCopy(y, copy);
        int h = (int)weight.NumElements;
        long rows = x.NumElements / h;
        float* pw = weight.Ptr<float>(), pb = bias.Ptr<float>();
        float* pm = mean.Ptr<float>(), pr = rstd.Ptr<float>();
        ForRows(rows, h, r =>
        {
            // x and y may be 16-bit activations: rows are widened and the result rounded once (CpuRows).
            float* xr = CpuRows.Read(x, r * h, h, 0);
            double mu = SumWide(xr, h) / h;
            double var = SumSquaredDeviationWide(xr, h, mu) / h;
            float m = (float)mu;
            float s = (float)(1.0 / Math.Sqrt(var + eps));
            pm[r] = m;
            pr[r] = s;
            float* yp = CpuRows.Target(y, r * h, h, 1);
            var yr = new Span<float>(yp, h);
            // y = ((x − m)·s)·w + b, vectorised in three passes over the row (all in cache for H ≤ 16k).
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(xr, h), m, yr);
            TensorPrimitives.Multiply(yr, s, yr);
            TensorPrimitives.FusedMultiplyAdd(yr, new ReadOnlySpan<float>(pw, h), new ReadOnlySpan<float>(pb, h), yr);
            if (copy is not null)
            {
                if (copy.DType == DType.F32) yr.CopyTo(new Span<float>(copy.Ptr<float>() + r * h, h));
                else CpuRows.Write(yp, copy, r * h, h);
            }
            CpuRows.Write(yp, y, r * h, h);
        });
    }

    /// <inheritdoc />
    public void LayerNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        int h = (int)weight.NumElements;
        long rows = x.NumElements / h;
        float* pdy = dy.Ptr<float>(), pw = weight.Ptr<float>(), pm = mean.Ptr<float>(), pr = rstd.Ptr<float>();
        if (dx is not null)
        {
            float* pdx = dx.Ptr<float>();
            ForRows(rows, h, r => LayerNormBackwardRow(pdy + r * h, CpuRows.Read(x, r * h, h, 0), pw, pm[r], pr[r], pdx + r * h, h));
        }
        if (dweight is null && dbias is null) return;

        // Column sums over rows: fixed row chunks reduce into their own double buffers (in parallel), then the
        // chunks are added in order — deterministic and race-free.
        int chunks = (int)((rows + LayerNormRowsPerChunk - 1) / LayerNormRowsPerChunk);
        bool wantW = dweight is not null, wantB = dbias is not null;
        var partW = wantW ? new double[chunks][] : null;
        var partB = wantB ? new double[chunks][] : null;
        void Chunk(int c)
        {
            var aw = wantW ? new double[h] : null;
            var ab = wantB ? new double[h] : null;
            long end = Math.Min(rows, (long)(c + 1) * LayerNormRowsPerChunk);
            fixed (double* pw0 = aw, pb0 = ab)
            {
                double* accW = pw0, accB = pb0;
                for (long r = (long)c * LayerNormRowsPerChunk; r < end; r++)
                    LayerNormParamGradRow(pdy + r * h, wantW ? CpuRows.Read(x, r * h, h, 0) : null, pm[r], pr[r], accW, accB, h);
            }
            if (partW is not null) partW[c] = aw!;
            if (partB is not null) partB[c] = ab!;
        }
        if (rows * h <= ParallelThreshold || chunks == 1) for (int c = 0; c < chunks; c++) Chunk(c);
        else Parallel.For(0, chunks, Chunk);
        if (dweight is not null) ReduceChunks(partW!, dweight.Ptr<float>(), h);
        if (dbias is not null) ReduceChunks(partB!, dbias.Ptr<float>(), h);
    }

    /// <summary>
    /// accB[j] += dy[j] and accW[j] += dy[j]·x̂[j] (x̂ = (x − m)·s in fp32, the product and sums in double) for one
    /// row; either accumulator may be null. Vectorised by widening to double lanes: the same operations per element
    /// as the scalar loop, so the result does not depend on the vector width.
    /// </summary>
    private static void LayerNormParamGradRow(float* dy, float* x, float m, float s, double* accW, double* accB, int h)
    {
        int j = 0;
        if (Vector.IsHardwareAccelerated && h >= Vector<float>.Count)
        {
            var vm = new Vector<float>(m);
            var vs = new Vector<float>(s);
            int half = Vector<double>.Count;
            for (; j <= h - Vector<float>.Count; j += Vector<float>.Count)
            {
                var g = Vector.Load(dy + j);
                Vector.Widen(g, out var g0, out var g1);
                if (accB is not null)
                {
                    (Vector.Load(accB + j) + g0).Store(accB + j);
                    (Vector.Load(accB + j + half) + g1).Store(accB + j + half);
                }
                if (accW is not null)
                {
                    Vector.Widen((Vector.Load(x + j) - vm) * vs, out var x0, out var x1);
                    (Vector.Load(accW + j) + g0 * x0).Store(accW + j);
                    (Vector.Load(accW + j + half) + g1 * x1).Store(accW + j + half);
                }
            }
        }
        for (; j < h; j++)
        {
            if (accB is not null) accB[j] += dy[j];
            if (accW is not null) accW[j] += dy[j] * (double)((x[j] - m) * s);
        }
    }

    private static void ReduceChunks(double[][] parts, float* dst, int h)
    {
        for (int j = 0; j < h; j++)
        {
            double s = 0;
            for (int c = 0; c < parts.Length; c++) s += parts[c][j];
            dst[j] = (float)s;
        }
    }

    /// <summary>dx for one row: two double-accumulated sums, then one vectorised fp32 pass.</summary>
    private static void LayerNormBackwardRow(float* dy, float* x, float* w, float m, float s, float* dx, int h)
    {
        // Σ g and Σ g·x̂ with g = dy·w and x̂ = (x − m)·s.
        double sg = 0, sgx = 0;
        int j = 0;
        if (Vector.IsHardwareAccelerated && h >= Vector<float>.Count)
        {
            var vm = new Vector<float>(m);
            var vs = new Vector<float>(s);
            Vector<double> ag = Vector<double>.Zero, agx = Vector<double>.Zero;
            for (; j <= h - Vector<float>.Count; j += Vector<float>.Count)
            {
                var g = Vector.Load(dy + j) * Vector.Load(w + j);
                var gx = g * ((Vector.Load(x + j) - vm) * vs);
                Vector.Widen(g, out var g0, out var g1);
                Vector.Widen(gx, out var gx0, out var gx1);
                ag += g0 + g1;
                agx += gx0 + gx1;
            }
            sg = Vector.Sum(ag);
            sgx = Vector.Sum(agx);
        }
        for (; j < h; j++)
        {
            float g = dy[j] * w[j];
            sg += g;
            sgx += g * ((x[j] - m) * s);
        }
        // dx = s·g − s·mean(g) − x̂·s·mean(g·x̂)
        float a = (float)(s * sg / h);
        float b = (float)(s * sgx / h);
        int k = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vm = new Vector<float>(m);
            var vs = new Vector<float>(s);
            var va = new Vector<float>(a);
            var vb = new Vector<float>(b);
            for (; k <= h - Vector<float>.Count; k += Vector<float>.Count)
            {
                var xh = (Vector.Load(x + k) - vm) * vs;
                (vs * Vector.Load(dy + k) * Vector.Load(w + k) - va - xh * vb).Store(dx + k);
            }
        }
        for (; k < h; k++)
        {
            float xh = (x[k] - m) * s;
            dx[k] = s * dy[k] * w[k] - a - xh * b;
        }
    }

    /// <summary>Σ p[0..n) accumulated in double lanes.</summary>
    private static double SumWide(float* p, int n)
    {
        double sum = 0;
        int j = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            Vector<double> acc = Vector<double>.Zero;
            for (; j <= n - Vector<float>.Count; j += Vector<float>.Count)
            {
                Vector.Widen(Vector.Load(p + j), out var lo, out var hi);
                acc += lo + hi;
            }
            sum = Vector.Sum(acc);
        }
        for (; j < n; j++) sum += p[j];
        return sum;
    }

    /// <summary>Σ (p[j] − mean)² accumulated in double lanes.</summary>
    private static double SumSquaredDeviationWide(float* p, int n, double mean)
    {
        double sum = 0;
        int j = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var vm = new Vector<double>(mean);
            Vector<double> acc = Vector<double>.Zero;
            for (; j <= n - Vector<float>.Count; j += Vector<float>.Count)
            {
                Vector.Widen(Vector.Load(p + j), out var lo, out var hi);
                lo -= vm;
                hi -= vm;
                acc += lo * lo + hi * hi;
            }
            sum = Vector.Sum(acc);
        }
        for (; j < n; j++) { double d = p[j] - mean; sum += d * d; }
        return sum;
    }
}
