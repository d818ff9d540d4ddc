using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// GELU with the tanh approximation used by ChatGLM's MLP (spec §3.3):
    /// 0.5·x·(1 + tanh(0.7978845608028654·(x + 0.044715·x³))). Backward uses the analytic gelu′ of spec §3.8
    /// on the saved input.
    /// </summary>
    public static Tensor Gelu(Tensor x)
    {
        const string op = "Gelu";
        SameDevice(op, ("x", x));
        var xc = F32Contiguous(x, op, "x");
        var y = Tensor.Empty(x.Shape, DType.F32, x.Device);
        var be = x.Backend;
        be.GeluForward(xc, y);
        return Graph.Record(op, y, [x], (g, _) =>
        {
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.GeluBackward(xc, g, gx);
            return [gx];
        });
    }
}
