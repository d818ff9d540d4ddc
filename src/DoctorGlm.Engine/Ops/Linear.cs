using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// y = x·Wᵀ + b, with W stored [out, in] as PyTorch's <c>nn.Linear</c> does and x of shape [..., in].
    /// A frozen W (RequiresGrad false) costs no GEMM in backward. x and W may be stored as F32, BF16 or F16 (a
    /// frozen base kept in 16 bits); the product accumulates in fp32 and every gradient is F32. y is F32, or x's dtype
    /// when x is a 16-bit activation (x·Wᵀ + b formed in fp32, rounded once) — unless <paramref name="outputDType"/>
    /// says otherwise (the LM head keeps F32 logits for the loss).
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null, DType? outputDType = null)
    {
        const string op = "Linear";
        SameDevice(op, ("x", x), ("weight", weight), ("bias", bias));
        ExpectRank(op, "weight", weight, 2, "[out, in]");
        return LinearCore(op, x, weight, weight.Shape[0], weight.Shape[1], null, bias, outputDType);
    }

    /// <summary>
    /// <see cref="Linear"/> with either a stored <paramref name="weight"/> or, when it is null, a frozen weight that
    /// <paramref name="materialize"/> makes on demand (a de-quantized INT8/INT4 matrix): forward and backward each
    /// make it, use it and free it at once, so a step keeps only the packed weights — as the reference's
    /// <c>W8A16Linear</c> saves the quantized weight and extracts it again in backward.
    /// </summary>
    internal static Tensor LinearCore(string op, Tensor x, Tensor? weight, int outF, int inF, Func<Tensor>? materialize, Tensor? bias, DType? outputDType)
    {
        string weightText = weight?.Describe("weight") ?? $"the [{outF}, {inF}] weight";
        if (x.Rank < 1 || x.Shape[-1] != inF)
            throw new ArgumentException($"{op}: {x.Describe("x")} must end in {inF} to match {weightText} [out, in]");
        if (bias is not null) ExpectShape(op, "bias", bias, new Shape(outF), "one per output feature");
        var xc = FloatContiguous(x, op, "x");
        var stored = weight is null ? null : FloatContiguous(weight, op, "weight");
        Tensor Weight() => stored ?? materialize!();
        void Done(Tensor w) { if (stored is null) w.Dispose(); }
        var bc = bias is null ? null : F32Contiguous(bias, op, "bias");
        int rows = checked((int)(x.NumElements / inF));
        var outDims = x.Shape.ToArray();
        outDims[^1] = outF;
        var outType = outputDType ?? x.DType;
        if (outType is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"{op}: outputDType {outType} must be F32, BF16 or F16");
        // Without a bias a 16-bit y comes straight from the GEMM (rounded once); with one, x·Wᵀ + b is formed in fp32
        // first, so that the sum is rounded once too.
        var y = Tensor.Empty(new Shape(outDims), bc is null ? outType : DType.F32, x.Device);
        var be = x.Backend;
        var wf = Weight();
        be.Gemm(false, true, rows, outF, inF, 1f, xc, 0, inF, 0, wf, 0, inF, 0, 0f, y, 0, outF, 0, 1);
        Done(wf);
        if (bc is not null)
        {
            if (outType == DType.F32) be.AddRowVector(y, bc, 1f);
            else
            {
                // x·Wᵀ + b rounded once, in the pass that adds b (the fp32 product is freed at once).
                var rounded = Tensor.Empty(y.Shape, outType, x.Device);
                be.AddRowVector(y, bc, 1f, rounded);
                y.Dispose();
                y = rounded;
            }
        }
        return Graph.Record(op, y, [x, weight, bias], (g, needs) =>
        {
            Tensor? gx = null, gw = null, gb = null;
            if (needs(0))
            {
                var wb = Weight();
                gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
                be.Gemm(false, false, rows, inF, outF, 1f, g, 0, outF, 0, wb, 0, inF, 0, 0f, gx, 0, inF, 0, 1);
                Done(wb);
            }
            if (needs(1)) { gw = Tensor.Empty(weight!.Shape, DType.F32, x.Device); be.Gemm(true, false, outF, inF, rows, 1f, g, 0, outF, 0, xc, 0, inF, 0, 0f, gw, 0, inF, 0, 1); }
            if (needs(2)) { gb = Tensor.Empty(new Shape(outF), DType.F32, x.Device); be.SumRows(g, gb, accumulate: false); }
            return [gx, gw, gb];
        });
    }

    /// <summary>
    /// An fp32 result as an activation of <paramref name="dtype"/>: itself for F32, else rounded once into a new
    /// tensor (the fp32 one is freed at once: only the 16-bit copy is kept, for the next op and for backward).
    /// </summary>
    internal static Tensor RoundToActivation(Tensor y32, DType dtype)
    {
        if (dtype == DType.F32) return y32;
        var y = Tensor.Empty(y32.Shape, dtype, y32.Device);
        y32.Backend.Copy(y32, y);
        y32.Dispose();
        return y;
    }
}
