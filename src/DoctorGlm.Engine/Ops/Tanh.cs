using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// tanh(x) elementwise (the activation of the P-Tuning v2 prefix projection, spec §8). Backward uses the saved
    /// output: dx = dy·(1 − y²), so the input need not be kept.
    /// </summary>
    public static Tensor Tanh(Tensor x)
    {
        const string op = "Tanh";
        SameDevice(op, ("x", x));
        var xc = F32Contiguous(x, op, "x");
        var y = Tensor.Empty(x.Shape, DType.F32, x.Device);
        var be = x.Backend;
        be.TanhForward(xc, y);
        return Graph.Record(op, y, [x], (g, _) =>
        {
            var gc = g.IsContiguous ? g : ContiguousNoGrad(g);
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.TanhBackward(y, gc, gx);
            return [gx];
        });
    }
}
