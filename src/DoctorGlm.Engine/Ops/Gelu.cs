using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// GELU with the tanh approximation used by ChatGLM's MLP (spec §3.3):
    /// 0.5·x·(1 + tanh(0.7978845608028654·(x + 0.044715·x³))). Backward uses the analytic gelu′ of spec §3.8
    /// on the saved input. x may be an F32, BF16 or F16 activation: y has its dtype, the gradient is F32.
    /// </summary>
    public static Tensor Gelu(Tensor x)
    {
        const string op = "Gelu";
        SameDevice(op, ("x", x));
        var xc = FloatContiguous(x, op, "x");
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        var be = x.Backend;
        be.GeluForward(xc, y);
        return Graph.Record(op, y, [x], (g, _) =>
        {
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.GeluBackward(xc, g, gx);
            return [gx];
        });
    }

    /// <summary>
    /// gelu(x + bias) in one pass, bias [f] added to every row of x [.., f]: the MLP's first linear without its bias,
    /// then this, computes what <c>Gelu(Linear(x, w, bias))</c> does (bit for bit) without storing the biased sum.
    /// Backward recomputes the sum; the bias gradient is the column sum of the input gradient. x may be an F32, BF16
    /// or F16 activation (the sum is formed in fp32 and the result rounded once to x's dtype, or to
    /// <paramref name="outputDType"/>: a decoding step hands a 16-bit GEMM its input without a separate rounding pass);
    /// gradients are F32.
    /// </summary>
    public static Tensor BiasGelu(Tensor x, Tensor bias, DType? outputDType = null)
    {
        const string op = "BiasGelu";
        SameDevice(op, ("x", x), ("bias", bias));
        ExpectRank(op, "bias", bias, 1, "[features]");
        int f = bias.Shape[0];
        if (x.Rank < 1 || x.Shape[-1] != f)
            throw new ArgumentException($"{op}: {x.Describe("x")} must end in {f} to match {bias.Describe("bias")}");
        var xc = FloatContiguous(x, op, "x");
        var bc = F32Contiguous(bias, op, "bias");
        var outType = outputDType ?? x.DType;
        if (outType is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"{op}: outputDType {outType} must be F32, BF16 or F16", nameof(outputDType));
        var y = Tensor.Empty(x.Shape, outType, x.Device);
        var be = x.Backend;
        if (y.NumElements > 0) be.BiasGeluForward(xc, bc, y);
        return Graph.Record(op, y, [x, bias], (g, needs) =>
        {
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            if (gx.NumElements > 0) be.BiasGeluBackward(xc, bc, g, gx);
            Tensor? gb = null;
            if (needs(1)) { gb = Tensor.Empty(bias.Shape, DType.F32, x.Device); be.SumRows(gx, gb, accumulate: false); }
            return [needs(0) ? gx : null, gb];
        });
    }
}
