using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Optim;

/// <summary>
/// The fused kernels: a large tensor (parallel chunks, vector bodies) must give bit-for-bit the results of the same
/// kernel applied to small odd-length slices (scalar tails everywhere), so an element's update never depends on
/// chunking; and the scalar math must follow the documented formula.
/// </summary>
public class OptimKernelTests
{
    private const int N = 100_003; // > CpuBackend.ParallelThreshold, not a multiple of any vector width

    private static float[] Rand(int seed, float scale)
    {
        var r = new Random(seed);
        var a = new float[N];
        for (int i = 0; i < N; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        a[17] = 0f; // exercises sign(0) in Lion (with m = 0)
        return a;
    }

    private static Tensor T(float[] a) => Tensor.FromArray(a, new Shape(a.Length));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void WholeEqualsSlices(bool adamw)
    {
        Assert.True(N > CpuBackend.ParallelThreshold);
        float[] p = Rand(1, 1), g = Rand(2, 0.5f), m = Rand(3, 0.1f), v = Rand(4, 0.01f).Select(Math.Abs).ToArray();
        m[17] = 0f; p[17] = 0.5f;
        using var tp = T(p); using var tg = T(g); using var tm = T(m); using var tv = T(v);
        void Run(Tensor a, Tensor b, Tensor c, Tensor d)
        {
            if (adamw) CpuBackend.Instance.AdamWStep(a, b, c, d, 1e-2, 0.9, 0.999, 1e-8, 0.1, 1 - 0.9 * 0.9, 1 - 0.999 * 0.999);
            else CpuBackend.Instance.LionStep(a, b, c, 1e-3, 0.9, 0.99, 0.1);
        }
        Run(tp, tg, tm, tv);

        var sp = new float[N]; var sm = new float[N]; var sv = new float[N];
        for (int s = 0; s < N; s += 13)
        {
            int len = Math.Min(13, N - s);
            using var a = T(p[s..(s + len)]); using var b = T(g[s..(s + len)]); using var c = T(m[s..(s + len)]); using var d = T(v[s..(s + len)]);
            Run(a, b, c, d);
            a.ToFloatArray().CopyTo(sp, s); c.ToFloatArray().CopyTo(sm, s); d.ToFloatArray().CopyTo(sv, s);
        }
        Assert.Equal(sp, tp.ToFloatArray());
        Assert.Equal(sm, tm.ToFloatArray());
        if (adamw) Assert.Equal(sv, tv.ToFloatArray());
        else
        {
            Assert.Equal(v, tv.ToFloatArray()); // Lion has no second buffer: untouched
            Assert.Equal(0.5 * (1 - 1e-4), tp.ToFloatArray()[17], 1e-7); // sign(0) = 0: only the decay applies
        }
        // Spot-check element 5 against the formula in double (loose: the kernel is fp32).
        int i = 5;
        double pe, me;
        if (adamw)
        {
            me = 0.9 * m[i] + 0.1 * g[i];
            double ve = 0.999 * v[i] + 0.001 * g[i] * g[i];
            pe = p[i] * (1 - 1e-3) - 1e-2 / (1 - 0.81) * me / (Math.Sqrt(ve) / Math.Sqrt(1 - 0.999 * 0.999) + 1e-8);
        }
        else
        {
            pe = p[i] * (1 - 1e-4) - 1e-3 * Math.Sign(0.9 * m[i] + 0.1 * g[i]);
            me = 0.99 * m[i] + 0.01 * g[i];
        }
        Assert.Equal(pe, tp.ToFloatArray()[i], 5e-6);
        Assert.Equal(me, tm.ToFloatArray()[i], 5e-7);
    }

    [Fact]
    public void LionPropagatesNaN()
    {
        using var p = T([1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f]);
        var ga = new float[17]; ga[3] = float.NaN; ga[16] = float.NaN;
        using var g = T(ga);
        using var m = Tensor.Zeros(new Shape(17));
        CpuBackend.Instance.LionStep(p, g, m, 1e-3, 0.9, 0.99, 0);
        var r = p.ToFloatArray();
        Assert.True(float.IsNaN(r[3]) && float.IsNaN(r[16]), "NaN gradient must poison its element (vector body and tail)");
        Assert.Equal(1f, r[0]);
    }
}
