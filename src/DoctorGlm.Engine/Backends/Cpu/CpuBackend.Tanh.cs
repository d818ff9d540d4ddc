using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void TanhForward(Tensor x, Tensor y)
    {
        float* px = x.Ptr<float>(), py = y.Ptr<float>();
        ForChunks(y.NumElements, (start, len) =>
            TensorPrimitives.Tanh(new ReadOnlySpan<float>(px + start, len), new Span<float>(py + start, len)));
    }

    /// <inheritdoc />
    public void TanhBackward(Tensor y, Tensor dy, Tensor dx)
    {
        float* py = y.Ptr<float>(), pdy = dy.Ptr<float>(), pdx = dx.Ptr<float>();
        ForChunks(dx.NumElements, (start, len) =>
        {
            // 1 − y² as (1 − y)(1 + y): exact near |y| = 1 where 1 − y·y would round the small result.
            for (long i = start, end = start + len; i < end; i++)
            {
                float t = py[i];
                pdx[i] = pdy[i] * ((1f - t) * (1f + t));
            }
        });
    }
}
