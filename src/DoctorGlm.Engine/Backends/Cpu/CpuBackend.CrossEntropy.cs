using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <summary>Block of a logits row exponentiated at a time (a stack buffer; a vocabulary row is 130k floats).</summary>
    private const int CrossEntropyBlock = 2048;

    /// <inheritdoc />
    public void CrossEntropyForward(Tensor logits, Tensor labels, int ignoreIndex, Tensor rowLoss, Tensor lse)
    {
        int n = logits.Shape[0], v = logits.Shape[1];
        int* pl = labels.Ptr<int>();
        float* px = logits.Ptr<float>(), ploss = rowLoss.Ptr<float>(), plse = lse.Ptr<float>();
        ForRows(n, v, r =>
        {
            int t = pl[r];
            if (t == ignoreIndex) { ploss[r] = 0; plse[r] = 0; return; }
            // The op validated the labels; this guard only keeps a direct caller from reading outside the row.
            if ((uint)t >= (uint)v) throw new ArgumentOutOfRangeException(nameof(labels), t, $"CrossEntropyForward: labels[{r}] is outside [0, {v})");
            float* row = px + r * v;
            double l = LogSumExp(row, v);
            plse[r] = (float)l;
            ploss[r] = (float)(l - row[t]);
        });
    }

    /// <summary>log Σ exp(row) with the row maximum subtracted; the exponentials are fp32 (vectorised), their sum double.</summary>
    private static double LogSumExp(float* row, int v)
    {
        float max = TensorPrimitives.Max(new ReadOnlySpan<float>(row, v)); // NaN propagates: caught as a non-finite loss
        if (!float.IsFinite(max)) return max; // +∞ (loss NaN/∞ either way) or a row that is all −∞
        Span<float> buf = stackalloc float[CrossEntropyBlock];
        double sum = 0;
        for (int o = 0; o < v; o += CrossEntropyBlock)
        {
            int len = Math.Min(CrossEntropyBlock, v - o);
            var b = buf[..len];
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(row + o, len), max, b);
            TensorPrimitives.Exp(b, b);
            sum += TensorPrimitives.Sum<float>(b);
        }
        return max + Math.Log(sum);
    }

    /// <inheritdoc />
    public void CrossEntropyBackward(Tensor logits, Tensor labels, Tensor lse, int ignoreIndex, Tensor dloss, float invCount, Tensor dlogits)
    {
        int n = logits.Shape[0], v = logits.Shape[1];
        int* pl = labels.Ptr<int>();
        float* px = logits.Ptr<float>(), plse = lse.Ptr<float>(), pd = dlogits.Ptr<float>();
        float scale = dloss.Ptr<float>()[0] * invCount;
        ForRows(n, v, r =>
        {
            var d = new Span<float>(pd + r * v, v);
            int t = pl[r];
            if (t == ignoreIndex) { d.Clear(); return; }
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(px + r * v, v), plse[r], d);
            TensorPrimitives.Exp(d, d);
            TensorPrimitives.Multiply(d, scale, d);
            d[t] -= scale;
        });
    }
}
