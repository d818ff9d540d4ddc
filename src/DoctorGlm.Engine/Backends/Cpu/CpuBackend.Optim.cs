using System.Numerics;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // The scalar tails repeat the vector bodies operation for operation (no FMA contraction either way), so an
    // element's result does not depend on where the chunk boundaries fall: a resumed run stays bit-identical
    // whatever the core count.

    /// <inheritdoc />
    public void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, double lr, double beta1, double beta2,
        double eps, double weightDecay, double biasCorrection1, double biasCorrection2)
    {
        float* pp = param.Ptr<float>(), pg = grad.Ptr<float>(), pm = expAvg.Ptr<float>(), pv = expAvgSq.Ptr<float>();
        // Scalars are derived in double as PyTorch does with its Python-float hyper-parameters, then applied in fp32.
        var k = new AdamWScalars(
            Decay: (float)(1.0 - lr * weightDecay),
            Beta1: (float)beta1, OneMinusBeta1: (float)(1.0 - beta1),
            Beta2: (float)beta2, OneMinusBeta2: (float)(1.0 - beta2),
            StepSize: (float)(lr / biasCorrection1),
            Bc2Sqrt: (float)Math.Sqrt(biasCorrection2),
            Eps: (float)eps);
        ForChunks(param.NumElements, (start, len) => AdamWChunk(pp + start, pg + start, pm + start, pv + start, len, k));
    }

    private readonly record struct AdamWScalars(float Decay, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2,
        float StepSize, float Bc2Sqrt, float Eps);

    private static void AdamWChunk(float* p, float* g, float* m, float* v, int n, AdamWScalars k)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var decay = new Vector<float>(k.Decay);
            var b1 = new Vector<float>(k.Beta1);
            var omb1 = new Vector<float>(k.OneMinusBeta1);
            var b2 = new Vector<float>(k.Beta2);
            var omb2 = new Vector<float>(k.OneMinusBeta2);
            var step = new Vector<float>(k.StepSize);
            var bc2 = new Vector<float>(k.Bc2Sqrt);
            var eps = new Vector<float>(k.Eps);
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var gi = Vector.Load(g + i);
                // Same association as torch's CPU kernels: add_(g, alpha) = m + α·g, addcmul_ = v + (α·g)·g,
                // addcdiv_ = p + (−s·m)/denom.
                var mi = Vector.Load(m + i) * b1 + omb1 * gi;
                var vi = Vector.Load(v + i) * b2 + omb2 * gi * gi;
                var denom = Vector.SquareRoot(vi) / bc2 + eps;
                var pi = Vector.Load(p + i) * decay - step * mi / denom;
                mi.Store(m + i);
                vi.Store(v + i);
                pi.Store(p + i);
            }
        }
        for (; i < n; i++)
        {
            float gi = g[i];
            float mi = m[i] * k.Beta1 + k.OneMinusBeta1 * gi;
            float vi = v[i] * k.Beta2 + k.OneMinusBeta2 * gi * gi;
            float denom = MathF.Sqrt(vi) / k.Bc2Sqrt + k.Eps;
            p[i] = p[i] * k.Decay - k.StepSize * mi / denom;
            m[i] = mi;
            v[i] = vi;
        }
    }

    /// <inheritdoc />
    public void LionStep(Tensor param, Tensor grad, Tensor expAvg, double lr, double beta1, double beta2, double weightDecay)
    {
        float* pp = param.Ptr<float>(), pg = grad.Ptr<float>(), pm = expAvg.Ptr<float>();
        float decay = (float)(1.0 - lr * weightDecay);
        float flr = (float)lr, b1 = (float)beta1, b2 = (float)beta2;
        float omb1 = (float)(1.0 - beta1), omb2 = (float)(1.0 - beta2);
        ForChunks(param.NumElements, (start, len) => LionChunk(pp + start, pg + start, pm + start, len, decay, flr, b1, omb1, b2, omb2));
    }

    private static void LionChunk(float* p, float* g, float* m, int n, float decay, float lr, float beta1, float omb1, float beta2, float omb2)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var vDecay = new Vector<float>(decay);
            var vLr = new Vector<float>(lr);
            var b1 = new Vector<float>(beta1);
            var vOmb1 = new Vector<float>(omb1);
            var b2 = new Vector<float>(beta2);
            var vOmb2 = new Vector<float>(omb2);
            var zero = Vector<float>.Zero;
            var one = Vector<float>.One;
            var nan = new Vector<float>(float.NaN);
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var gi = Vector.Load(g + i);
                var mi = Vector.Load(m + i);
                var c = mi * b1 + vOmb1 * gi;
                // torch.sign: +1, −1, 0 for ±0, NaN for NaN (comparisons with NaN are false, so patch it back in).
                var sign = Vector.ConditionalSelect(Vector.GreaterThan(c, zero), one, zero)
                         - Vector.ConditionalSelect(Vector.LessThan(c, zero), one, zero);
                sign = Vector.ConditionalSelect(Vector.Equals(c, c), sign, nan);
                (Vector.Load(p + i) * vDecay - vLr * sign).Store(p + i);
                (mi * b2 + vOmb2 * gi).Store(m + i);
            }
        }
        for (; i < n; i++)
        {
            float gi = g[i];
            float c = m[i] * beta1 + omb1 * gi;
            float sign = c > 0 ? 1f : c < 0 ? -1f : c == 0 ? 0f : float.NaN;
            p[i] = p[i] * decay - lr * sign;
            m[i] = m[i] * beta2 + omb2 * gi;
        }
    }

    /// <inheritdoc />
    public void AdamWStep(IReadOnlyList<AdamWUpdate> updates, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        // Each tensor's step is already split across the cores; there is no launch overhead to save on the CPU.
        foreach (var u in updates)
            AdamWStep(u.Param, u.Grad, u.ExpAvg, u.ExpAvgSq, lr, beta1, beta2, eps, weightDecay, u.BiasCorrection1, u.BiasCorrection2);
    }

    /// <inheritdoc />
    public void LionStep(IReadOnlyList<LionUpdate> updates, double lr, double beta1, double beta2, double weightDecay)
    {
        foreach (var u in updates) LionStep(u.Param, u.Grad, u.ExpAvg, lr, beta1, beta2, weightDecay);
    }

    /// <inheritdoc />
    public double SumOfSquares(IReadOnlyList<Tensor> xs)
    {
        double s = 0;
        foreach (var x in xs) s += SumOfSquares(x);
        return s;
    }
}
