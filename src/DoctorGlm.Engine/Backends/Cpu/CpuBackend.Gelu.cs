using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

// GELU in the sigmoid form of the same function: 0.5·(1 + tanh(z)) = σ(2z), so y = x·σ(2z) and
// gelu′ = s + x·2s(1 − s)·k·(1 + 3c·x²) with s = σ(2z) (because 0.5·(1 − τ²) = 2s(1 − s)). Identical in exact
// arithmetic, but it avoids forming 1 + tanh(z) ≈ 0 for very negative x, where fp32 loses every digit.
public sealed unsafe partial class CpuBackend
{
    private const float GeluK = 0.7978845608028654f; // √(2/π)
    private const float GeluC = 0.044715f;

    /// <summary>Elements per stack buffer block (fits in L1 with the in/out rows).</summary>
    private const int GeluBlock = 1024;

    /// <inheritdoc />
    public void GeluForward(Tensor x, Tensor y) => Gelu(x, null, null, y);

    /// <inheritdoc />
    public void GeluBackward(Tensor x, Tensor dy, Tensor dx) => Gelu(x, null, dy, dx);

    /// <inheritdoc />
    public void BiasGeluForward(Tensor x, Tensor bias, Tensor y) => Gelu(x, bias, null, y);

    /// <inheritdoc />
    public void BiasGeluBackward(Tensor x, Tensor bias, Tensor dy, Tensor dx) => Gelu(x, bias, dy, dx);

    /// <summary>
    /// The four kernels over the whole tensor: rows of the bias's length when there is a bias (so the bias lines up
    /// with each run), else runs of <see cref="GeluRunLength"/>. x and the output may be 16-bit activations (widened
    /// per run, the result rounded once; <see cref="CpuRows"/>); dy is F32.
    /// </summary>
    private static void Gelu(Tensor x, Tensor? bias, Tensor? dy, Tensor output)
    {
        float* pb = bias is null ? null : bias.Ptr<float>();
        float* pdy = dy is null ? null : dy.Ptr<float>();
        void Span(long offset, int n)
        {
            float* px = CpuRows.Read(x, offset, n, 0);
            float* po = CpuRows.Target(output, offset, n, 1);
            GeluRun(px, pb, pdy is null ? null : pdy + offset, po, n);
            CpuRows.Write(po, output, offset, n);
        }
        if (bias is not null)
        {
            int f = checked((int)bias.NumElements);
            ForRows(output.NumElements / f, f, row => Span(row * f, f));
            return;
        }
        ForChunks(output.NumElements, (start, len) =>
        {
            for (long o = start; o < start + len; o += GeluRunLength) Span(o, (int)Math.Min(GeluRunLength, start + len - o));
        });
    }

    /// <summary>Elements per run of the bias-free kernels (a 16-bit input is widened one run at a time).</summary>
    private const int GeluRunLength = 4 * GeluBlock;

    /// <summary>
    /// The four GELU kernels over one contiguous run of <paramref name="len"/> elements, in L1-sized blocks:
    /// u = x (+ bias when given, the fp32 sum AddRowVector forms; bias is aligned with the run), then
    /// out = u·σ(2z) (forward, <paramref name="dy"/> null) or out = dy·gelu′(u) (backward). out may alias x or dy.
    /// </summary>
    private static void GeluRun(float* x, float* bias, float* dy, float* output, int len)
    {
        Span<float> u = stackalloc float[GeluBlock];
        Span<float> s = stackalloc float[GeluBlock];
        Span<float> t = stackalloc float[GeluBlock];
        for (int o = 0; o < len; o += GeluBlock)
        {
            int n = Math.Min(GeluBlock, len - o);
            scoped ReadOnlySpan<float> xs = new(x + o, n);
            if (bias != null)
            {
                TensorPrimitives.Add(xs, new ReadOnlySpan<float>(bias + o, n), u[..n]);
                xs = u[..n];
            }
            var outs = new Span<float>(output + o, n);
            if (dy == null)
            {
                GeluSigmoid(xs, s[..n]);
                TensorPrimitives.Multiply(xs, s[..n], outs);
            }
            else
            {
                GeluDerivative(xs, s[..n], t[..n]);
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(dy + o, n), t[..n], outs);
            }
        }
    }

    /// <summary>t = gelu′(x) in the sigmoid form (s is scratch for σ(2z)).</summary>
    private static void GeluDerivative(ReadOnlySpan<float> xs, Span<float> sb, Span<float> tb)
    {
        GeluSigmoid(xs, sb);
        // t = k·(1 + 3c·x²)
        TensorPrimitives.Multiply(xs, xs, tb);
        TensorPrimitives.Multiply(tb, 3f * GeluC * GeluK, tb);
        TensorPrimitives.Add(tb, GeluK, tb);
        // t = t·x·2s(1 − s) + s
        TensorPrimitives.Multiply(tb, xs, tb);
        for (int i = 0; i < tb.Length; i++) tb[i] = tb[i] * (2f * sb[i] * (1f - sb[i])) + sb[i];
    }

    /// <summary>s = σ(2·k·(x + c·x³)) = 0.5·(1 + tanh(k·(x + c·x³))).</summary>
    private static void GeluSigmoid(ReadOnlySpan<float> x, Span<float> s)
    {
        TensorPrimitives.Multiply(x, x, s);
        TensorPrimitives.Multiply(s, 2f * GeluK * GeluC, s);
        TensorPrimitives.Add(s, 2f * GeluK, s);                              // 2k(1 + c·x²)
        TensorPrimitives.Multiply(s, x, s);                                  // 2k(x + c·x³)
        // σ(t) = 1 / (1 + e^(−t)), spelled out: TensorPrimitives.Sigmoid (10.0) measured 5× slower than these four
        // vectorised passes here, with bit-identical results.
        TensorPrimitives.Negate(s, s);
        TensorPrimitives.Exp(s, s);
        TensorPrimitives.Add(s, 1f, s);
        TensorPrimitives.Reciprocal(s, s);
    }
}
