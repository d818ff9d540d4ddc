using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Quantization;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// y = x·W′ᵀ + b with W′ the de-quantized <paramref name="weight"/> (W8A16/W4A16 as the reference: de-quantize,
    /// then an ordinary product). The weight is frozen; backward gives dx = dy·W′ only.
    /// </summary>
    public static Tensor QuantizedLinear(Tensor x, QuantizedWeight weight, Tensor? bias = null)
    {
        const string op = "QuantizedLinear";
        SameDevice(op, ("x", x), ("weight", weight.Data), ("bias", bias));
        int outF = weight.Rows, inF = weight.Columns;
        if (x.Rank < 1 || x.Shape[-1] != inF)
            throw new ArgumentException($"{op}: {x.Describe("x")} must end in {inF} to match the INT{weight.Bits} weight [{outF}, {inF}]");
        if (bias is not null) ExpectShape(op, "bias", bias, new Shape(outF), "one per output feature");
        var xc = F32Contiguous(x, op, "x");
        var bc = bias is null ? null : F32Contiguous(bias, op, "bias");
        int rows = checked((int)(x.NumElements / inF));
        var outDims = x.Shape.ToArray();
        outDims[^1] = outF;
        var y = Tensor.Empty(new Shape(outDims), DType.F32, x.Device);
        var be = x.Backend;
        var w = weight.Dequantize(DType.F32); // scoped: freed with the step, as the reference frees its fp16 copy
        be.Gemm(false, true, rows, outF, inF, 1f, xc, 0, inF, 0, w, 0, inF, 0, 0f, y, 0, outF, 0, 1);
        if (bc is not null) be.AddRowVector(y, bc, 1f);
        return Graph.Record(op, y, [x, null, bias], (g, needs) =>
        {
            Tensor? gx = null, gb = null;
            if (needs(0)) { gx = Tensor.Empty(x.Shape, DType.F32, x.Device); be.Gemm(false, false, rows, inF, outF, 1f, g, 0, outF, 0, w, 0, inF, 0, 0f, gx, 0, inF, 0, 1); }
            if (needs(2)) { gb = Tensor.Empty(new Shape(outF), DType.F32, x.Device); be.SumRows(g, gb, accumulate: false); }
            return [gx, null, gb];
        });
    }
}
