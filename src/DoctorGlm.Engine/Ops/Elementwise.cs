using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    private static void SameShape(string op, Tensor a, Tensor b)
    {
        SameDevice(op, ("a", a), ("b", b));
        if (a.Shape != b.Shape) throw new ArgumentException($"{op}: {a.Describe("a")} and {b.Describe("b")} must have the same shape");
    }

    /// <summary>
    /// alpha·a + beta·b (the α-scaled residual of a GLM block is <c>AddScaled(ln, α, attn, 1)</c>). a and b may be
    /// F32, BF16 or F16 activations: the result has their dtype when they share one, else F32; gradients are F32.
    /// </summary>
    public static Tensor AddScaled(Tensor a, float alpha, Tensor b, float beta)
    {
        SameShape("AddScaled", a, b);
        var ac = FloatContiguous(a, "AddScaled", "a");
        var bc = FloatContiguous(b, "AddScaled", "b");
        var y = Tensor.Empty(a.Shape, a.DType == b.DType ? a.DType : DType.F32, a.Device);
        y.Backend.AddScaled(ac, alpha, bc, beta, y);
        return Graph.Record("AddScaled", y, [a, b], (g, needs) => [needs(0) ? ScaledGradient(g, alpha) : null, needs(1) ? ScaledGradient(g, beta) : null]);
    }

    /// <summary>
    /// alpha·a + (b + bias): a biased linear's fp32 output b, its bias [f] not yet added, joined to the scaled
    /// residual a in one pass — bit for bit what <c>AddScaled(a, alpha, Linear-with-bias, 1)</c> computes, one pass
    /// instead of two or three (a block's two residual adds). b and bias are F32; a is F32 or a 16-bit activation,
    /// and y has a's dtype: b + bias is then rounded to it first, as a linear rounds its output to the activation's
    /// dtype. a and b [.., f]. Gradients are F32.
    /// </summary>
    public static Tensor AddScaledWithBias(Tensor a, float alpha, Tensor b, Tensor bias)
    {
        const string op = "AddScaledWithBias";
        SameDevice(op, ("a", a), ("b", b), ("bias", bias));
        SameShape(op, a, b);
        ExpectRank(op, "bias", bias, 1, "[features]");
        if (b.Rank < 1 || b.Shape[-1] != bias.Shape[0])
            throw new ArgumentException($"{op}: {b.Describe("b")} must end in {bias.Shape[0]} to match {bias.Describe("bias")}");
        var ac = FloatContiguous(a, op, "a");
        var bc = F32Contiguous(b, op, "b");
        var vc = F32Contiguous(bias, op, "bias");
        var y = Tensor.Empty(a.Shape, ac.DType, a.Device);
        if (y.NumElements > 0) y.Backend.AddScaledRowBias(ac, alpha, bc, vc, y);
        return Graph.Record(op, y, [a, b, bias], (g, needs) =>
        {
            Tensor? gv = null;
            if (needs(2)) { gv = Tensor.Empty(bias.Shape, DType.F32, a.Device); g.Backend.SumRows(g, gv, accumulate: false); }
            return [needs(0) ? ScaledGradient(g, alpha) : null, needs(1) ? g : null, gv];
        });
    }

    /// <summary>
    /// s·g for a backward: g itself when s = 1 (the engine hands a gradient passed on unchanged to its receiver,
    /// so a residual add's unscaled branch costs no pass).
    /// </summary>
    private static Tensor ScaledGradient(Tensor g, float s) => s == 1f ? g : ScaledCopy(g, s);

    private static Tensor ScaledCopy(Tensor g, float s)
    {
        var r = Tensor.EmptyLike(g);
        r.Backend.AddScaled(g, s, g, 0f, r);
        return r;
    }

    /// <summary>a + b.</summary>
    public static Tensor Add(Tensor a, Tensor b) => AddScaled(a, 1f, b, 1f);

    /// <summary>a − b.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => AddScaled(a, 1f, b, -1f);

    /// <summary>s·x.</summary>
    public static Tensor Scale(Tensor x, float s)
    {
        var xc = F32Contiguous(x, "Scale", "x");
        var y = ScaledCopy(xc, s);
        return Graph.Record("Scale", y, [x], (g, _) => [ScaledCopy(g, s)]);
    }

    /// <summary>a ⊙ b elementwise.</summary>
    public static Tensor Mul(Tensor a, Tensor b)
    {
        SameShape("Mul", a, b);
        var ac = F32Contiguous(a, "Mul", "a");
        var bc = F32Contiguous(b, "Mul", "b");
        var y = Tensor.Empty(a.Shape, DType.F32, a.Device);
        y.Backend.Mul(ac, bc, y);
        return Graph.Record("Mul", y, [a, b], (g, needs) =>
        {
            Tensor? ga = null, gb = null;
            if (needs(0)) { ga = Tensor.EmptyLike(g); g.Backend.Mul(g, bc, ga); }
            if (needs(1)) { gb = Tensor.EmptyLike(g); g.Backend.Mul(g, ac, gb); }
            return [ga, gb];
        });
    }

    /// <summary>Σ x as a one-element tensor (accumulated in double).</summary>
    public static Tensor Sum(Tensor x)
    {
        var xc = F32Contiguous(x, "Sum", "x");
        var y = Tensor.Full(new Shape(1), (float)x.Backend.Sum(xc), DType.F32, x.Device);
        return Graph.Record("Sum", y, [x], (g, _) =>
        {
            var gx = Tensor.Zeros(x.Shape, DType.F32, x.Device);
            gx.Backend.AddRowVector(gx, g, 1f); // broadcast the scalar gradient to every element
            return [gx];
        });
    }

    /// <summary>Mean of x as a one-element tensor.</summary>
    public static Tensor Mean(Tensor x) => Scale(Sum(x), 1f / Math.Max(1, x.NumElements));
}
