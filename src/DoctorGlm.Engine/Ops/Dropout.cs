using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout: element i (row-major flat index) is kept iff <c>RandomGenerator.Uniform(stream, i) ≥ p</c>,
    /// with one stream drawn from <paramref name="rng"/> per call, and kept elements are scaled by 1/(1 − p).
    /// Backward recomputes the mask from the stream (no mask tensor is stored). With p = 0 or
    /// <paramref name="training"/> false, returns <paramref name="x"/> itself and draws no stream. x may be an F32,
    /// BF16 or F16 activation: y has its dtype; the gradient is F32.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, RandomGenerator rng, bool training = true)
    {
        const string op = "Dropout";
        ArgumentNullException.ThrowIfNull(rng);
        if (!(p >= 0f && p < 1f))
            throw new ArgumentOutOfRangeException(nameof(p), p, $"{op}: p must be in [0, 1)");
        SameDevice(op, ("x", x));
        if (p == 0f || !training) return x;
        var xc = FloatContiguous(x, op, "x");
        ulong stream = rng.NextStream();
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        var be = x.Backend;
        be.DropoutForward(xc, y, p, stream);
        return Graph.Record(op, y, [x], (g, _) =>
        {
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.DropoutForward(g, gx, p, stream); // the same linear map: mask·scale
            return [gx];
        });
    }
}
