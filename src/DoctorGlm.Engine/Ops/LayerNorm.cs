using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// Layer normalisation over the last dimension, as torch's <c>nn.LayerNorm</c> (spec §3.3): biased variance,
    /// <paramref name="eps"/> inside the square root, then the affine <paramref name="weight"/> and
    /// <paramref name="bias"/> (each [H] for x of shape [..., H]). Saves the per-row mean and 1/σ for backward;
    /// dweight/dbias are computed only when those parameters require gradients. x may be an F32, BF16 or F16
    /// activation: y has x's dtype (computed in fp32, rounded once), the statistics and every gradient are F32.
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps = 1e-5f) => LayerNormCore("LayerNorm", x, weight, bias, eps, null, out _);

    /// <summary>
    /// <see cref="LayerNorm(Tensor, Tensor, Tensor, float)"/> for inference, with a second output: <paramref name="copy"/> holds y's values rounded to
    /// <paramref name="copyDType"/>, written in the same pass — a KV-cached step's fp32 y feeds the residual and its
    /// 16-bit copy the next GEMM, which would otherwise round y in a pass of its own (bit for bit the same values as
    /// <c>Cast(y, copyDType)</c>). No gradient flows through either output: with gradients on, an input that needs one
    /// is refused.
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, DType copyDType, out Tensor copy)
    {
        const string op = "LayerNorm(copy)";
        if (GradMode.IsEnabled && (x.RequiresGrad || weight.RequiresGrad || bias.RequiresGrad))
            throw new NotSupportedException($"{op}: the rounded copy has no backward; run under GradMode.NoGrad or use LayerNorm without a copy");
        if (!copyDType.IsFloat()) throw new ArgumentException($"{op}: copyDType {copyDType} must be F32, BF16 or F16", nameof(copyDType));
        return LayerNormCore(op, x, weight, bias, eps, copyDType, out copy);
    }

    private static Tensor LayerNormCore(string op, Tensor x, Tensor weight, Tensor bias, float eps, DType? copyDType, out Tensor copy)
    {
        SameDevice(op, ("x", x), ("weight", weight), ("bias", bias));
        if (x.Rank < 1 || x.Shape[-1] == 0)
            throw new ArgumentException($"{op}: {x.Describe("x")} must have a non-empty last dimension to normalise over");
        int h = x.Shape[-1];
        if (weight.Shape != new Shape(h))
            throw new ArgumentException($"{op}: {weight.Describe("weight")} must have shape [{h}] to match the last dimension of {x.Describe("x")}");
        if (bias.Shape != new Shape(h))
            throw new ArgumentException($"{op}: {bias.Describe("bias")} must have shape [{h}] to match the last dimension of {x.Describe("x")}");
        if (!(eps > 0) || !float.IsFinite(eps))
            throw new ArgumentOutOfRangeException(nameof(eps), eps, $"{op}: eps must be positive and finite");
        var xc = FloatContiguous(x, op, "x");
        var wc = F32Contiguous(weight, op, "weight");
        var bc = F32Contiguous(bias, op, "bias");
        int rows = checked((int)(x.NumElements / h));
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        var mean = Tensor.Empty(new Shape(rows), DType.F32, x.Device);
        var rstd = Tensor.Empty(new Shape(rows), DType.F32, x.Device);
        var be = x.Backend;
        var c = copyDType is { } cd ? Tensor.Empty(x.Shape, cd, x.Device) : null;
        copy = c!;
        if (rows > 0) be.LayerNormForward(xc, wc, bc, eps, y, mean, rstd, c);
        if (c is not null) { mean.Dispose(); rstd.Dispose(); return y; } // inference: nothing kept for backward
        return Graph.Record(op, y, [x, weight, bias], (g, needs) =>
        {
            var gx = needs(0) ? Tensor.Empty(x.Shape, DType.F32, x.Device) : null;
            var gw = needs(1) ? Tensor.Empty(weight.Shape, DType.F32, x.Device) : null;
            var gb = needs(2) ? Tensor.Empty(bias.Shape, DType.F32, x.Device) : null;
            if (rows > 0) be.LayerNormBackward(g, xc, wc, mean, rstd, gx, gw, gb);
            else { if (gw is not null) be.Fill(gw, 0f); if (gb is not null) be.Fill(gb, 0f); }
            return [gx, gw, gb];
        });
    }
}
