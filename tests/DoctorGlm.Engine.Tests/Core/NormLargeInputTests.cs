using DoctorGlm.Engine.Tests.OpCases;

namespace DoctorGlm.Engine.Tests.Core;

/// <summary>
/// Inputs above <c>CpuBackend.ParallelThreshold</c>, which the finite-difference harness is too slow for: they take
/// the parallel row paths, the chunked dweight/dbias reduction and the column-blocked embedding scatter-add.
/// Checked against double-precision loops with analytic gradients.
/// </summary>
public class NormLargeInputTests
{
    private static float[] Randn(int n, int seed, float std = 1f)
    {
        var r = new RandomGenerator((ulong)seed);
        using var t = r.Normal(new Shape(n), std);
        return t.ToFloatArray();
    }

    private static void Close(double[] expected, float[] actual, double tol, string what)
    {
        double max = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tol * (max + 1e-3), $"{what}[{i}] = {actual[i]}, expected {expected[i]}");
    }

    [Fact]
    public void LayerNormLargeMatchesDoubleForwardAndBackward()
    {
        using var scope = TensorScope.Begin();
        const int rows = 150, h = 300; // 45,000 elements; 150 rows = 3 reduction chunks
        var xs = Randn(rows * h, 1, 2f).Select(v => v + 5f).ToArray();
        var ws = Randn(h, 2).Select(v => 1f + 0.3f * v).ToArray();
        var bs = Randn(h, 3);
        var dys = Randn(rows * h, 4);
        var x = Tensor.FromArray(xs, new Shape(3, 50, h)); x.RequiresGrad = true;
        var w = Tensor.FromArray(ws, new Shape(h)); w.RequiresGrad = true;
        var b = Tensor.FromArray(bs, new Shape(h)); b.RequiresGrad = true;
        var y = Ops.LayerNorm(x, w, b);
        y.Backward(Tensor.FromArray(dys, y.Shape));

        double[] xd = xs.Select(v => (double)v).ToArray(), wd = ws.Select(v => (double)v).ToArray();
        Close(NormOpCases.RefLayerNorm(xd, wd, bs.Select(v => (double)v).ToArray(), h, 1e-5), y.ToFloatArray(), 1e-6, "y");
        var dx = new double[rows * h];
        var dw = new double[h];
        var db = new double[h];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0, var = 0;
            for (int j = 0; j < h; j++) mean += xd[r * h + j];
            mean /= h;
            for (int j = 0; j < h; j++) var += Math.Pow(xd[r * h + j] - mean, 2);
            double rs = 1 / Math.Sqrt(var / h + 1e-5);
            double sg = 0, sgx = 0;
            for (int j = 0; j < h; j++)
            {
                double xh = (xd[r * h + j] - mean) * rs, g = dys[r * h + j] * wd[j];
                sg += g; sgx += g * xh;
                dw[j] += dys[r * h + j] * xh;
                db[j] += dys[r * h + j];
            }
            for (int j = 0; j < h; j++)
                dx[r * h + j] = rs * (dys[r * h + j] * wd[j] - sg / h - (xd[r * h + j] - mean) * rs * sgx / h);
        }
        Close(dx, x.Grad!.ToFloatArray(), 1e-5, "dx");
        Close(dw, w.Grad!.ToFloatArray(), 1e-5, "dweight");
        Close(db, b.Grad!.ToFloatArray(), 1e-5, "dbias");
    }

    [Fact]
    public void EmbeddingLargeScatterAddIsExactAndDeterministic()
    {
        using var scope = TensorScope.Begin();
        const int v = 50, h = 600, n = 100; // 3 column blocks, 60,000 gradient elements
        var ids = Enumerable.Range(0, n).Select(i => (i * 7) % 23).ToArray(); // 23 distinct rows, repeated
        var dys = Randn(n * h, 5);
        float[] Run()
        {
            var table = Tensor.FromArray(Randn(v * h, 6), new Shape(v, h));
            table.RequiresGrad = true;
            Ops.Embedding(Tensor.FromArray(ids, new Shape(4, 25)), table).Backward(Tensor.FromArray(dys, new Shape(4, 25, h)));
            return table.Grad!.ToFloatArray();
        }
        var got = Run();
        var expect = new double[v * h];
        for (int i = 0; i < n; i++) for (int j = 0; j < h; j++) expect[ids[i] * h + j] += dys[i * h + j];
        Close(expect, got, 1e-6, "dtable");
        Assert.Equal(got, Run()); // bit-identical on a rerun
    }

    [Fact]
    public void CrossEntropyLargeMatchesDouble()
    {
        using var scope = TensorScope.Begin();
        const int n = 40, v = 5000; // rows in parallel, several exp blocks per row
        var xs = Randn(n * v, 7, 3f);
        var labels = Enumerable.Range(0, n).Select(i => i % 5 == 0 ? -100 : (i * 997) % v).ToArray();
        var logits = Tensor.FromArray(xs, new Shape(n, v)); logits.RequiresGrad = true;
        var loss = Ops.CrossEntropy(logits, Tensor.FromArray(labels, new Shape(n)));
        loss.Backward();
        double sum = 0;
        int kept = labels.Count(l => l != -100);
        var dl = new double[n * v];
        for (int r = 0; r < n; r++)
        {
            if (labels[r] == -100) continue;
            double max = double.NegativeInfinity, z = 0;
            for (int j = 0; j < v; j++) max = Math.Max(max, xs[r * v + j]);
            for (int j = 0; j < v; j++) z += Math.Exp(xs[r * v + j] - max);
            double lse = max + Math.Log(z);
            sum += lse - xs[r * v + labels[r]];
            for (int j = 0; j < v; j++) dl[r * v + j] = (Math.Exp(xs[r * v + j] - lse) - (j == labels[r] ? 1 : 0)) / kept;
        }
        Assert.Equal(sum / kept, loss.Item(), 1e-5 * (sum / kept));
        Close(dl, logits.Grad!.ToFloatArray(), 1e-5, "dlogits");
    }

    [Fact]
    public void LayerNormWithFrozenAffineGivesOnlyDx()
    {
        using var scope = TensorScope.Begin();
        var xs = Randn(4 * 9, 8);
        var x = Tensor.FromArray(xs, new Shape(4, 9)); x.RequiresGrad = true;
        var w = Tensor.Full(new Shape(9), 1f);
        var b = Tensor.Zeros(new Shape(9));
        var dy = Tensor.FromArray(Randn(4 * 9, 9), new Shape(4, 9));
        Ops.LayerNorm(x, w, b).Backward(dy);
        Assert.Null(w.Grad);
        Assert.Null(b.Grad);
        var frozen = x.Grad!.ToFloatArray();
        var x2 = Tensor.FromArray(xs, new Shape(4, 9)); x2.RequiresGrad = true;
        var w2 = Tensor.Full(new Shape(9), 1f); w2.RequiresGrad = true;
        var b2 = Tensor.Zeros(new Shape(9)); b2.RequiresGrad = true;
        Ops.LayerNorm(x2, w2, b2).Backward(dy);
        Assert.Equal(x2.Grad!.ToFloatArray(), frozen);
    }
}
