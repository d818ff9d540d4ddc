using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Quantization;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>Up to this many rows (tokens) with no gradient wanted, <see cref="QuantizedLinear"/> uses the fused
    /// de-quantize-and-multiply kernel (decoding, a batch of up to 32 rows); above it, de-quantize once and run a GEMM.
    /// Why 32: a de-quantized temporary costs writing and reading 2–4 bytes per weight beside the ½–1 byte the packed
    /// weight costs, and the fused kernels take many rows per read of the weight (the CPU's all of them, the GPU's 16
    /// per launch), so a batched decoding step of 32 rows is still cheaper fused; a prompt of hundreds of tokens is not.</summary>
    public const int QuantizedMatVecMaxRows = 32;

    /// <summary>
    /// y = x·W′ᵀ + b with W′ the de-quantized <paramref name="weight"/> (W8A16/W4A16). For a few rows and no gradient
    /// (decoding) the fused kernel reads the packed weight directly; otherwise, as the reference does, the weight is
    /// de-quantized into a frozen temporary and multiplied, so backward computes dx (and db when the bias trains) but
    /// never a weight gradient. The temporary is freed right after the product and made again in backward: a
    /// training step over a quantized base (P-Tuning on INT4) keeps the packed weights only, not an fp32 copy of
    /// every layer's matrices.
    /// </summary>
    /// <param name="x">Input [..., in].</param>
    /// <param name="weight">The packed weight.</param>
    /// <param name="bias">Frozen or trainable b [out], or null.</param>
    /// <param name="dequantizedDType">The type the weight is de-quantized into for a GEMM: F32 (exact), or F16 as the
    /// reference does (W′ = q·scale in fp16) / BF16 — a 16-bit W′ is rounded once and multiplied on tensor cores on
    /// the GPU, where an fp32 one takes the fp32 GEMM.</param>
    /// <param name="outputDType">The type of y (default x's, as <see cref="Linear"/>): formed in fp32, rounded once.</param>
    public static Tensor QuantizedLinear(Tensor x, QuantizedWeight weight, Tensor? bias = null, DType dequantizedDType = DType.F32, DType? outputDType = null)
    {
        const string op = "QuantizedLinear";
        ArgumentNullException.ThrowIfNull(weight);
        SameDevice(op, ("x", x), ("weight", weight.Data), ("bias", bias));
        int inF = weight.Columns, outF = weight.Rows;
        if (outputDType is { } requested && !requested.IsFloat()) throw new ArgumentException($"{op}: outputDType {requested} must be F32, BF16 or F16", nameof(outputDType));
        bool wantsGrad = GradMode.IsEnabled && (x.RequiresGrad || bias is { RequiresGrad: true });
        long rows = x.Rank >= 1 && x.Shape[-1] == inF ? x.NumElements / inF : -1;
        // The fused kernel takes fp32 or 16-bit rows (widened exactly) and writes fp32, rounded at the end to the output type.
        if (!wantsGrad && rows is > 0 and <= QuantizedMatVecMaxRows)
        {
            var xc = FloatContiguous(x, op, "x");
            var outDims = x.Shape.ToArray();
            outDims[^1] = outF;
            var y = Tensor.Empty(new Shape(outDims), DType.F32, x.Device);
            using (var x2 = xc.ViewAs(new Shape((int)rows, inF), [inF, 1], xc.Offset))
            using (var y2 = y.ViewAs(new Shape((int)rows, outF), [outF, 1], y.Offset))
                x.Backend.QuantizedMatVec(x2, weight.Data, weight.Scale, weight.Bits, y2);
            if (bias is not null)
            {
                ExpectShape(op, "bias", bias, new Shape(outF), "one per output feature");
                y.Backend.AddRowVector(y, F32Contiguous(bias, op, "bias"), 1f);
            }
            return RoundToActivation(y, outputDType ?? x.DType);
        }
        if (dequantizedDType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"{op}: dequantizedDType {dequantizedDType} must be F32, BF16 or F16", nameof(dequantizedDType));
        return LinearCore(op, x, null, outF, inF, () =>
        {
            var w = weight.Dequantize(dequantizedDType);
            w.Name = $"de-quantized INT{weight.Bits} weight";
            return w;
        }, bias, outputDType);
    }
}
