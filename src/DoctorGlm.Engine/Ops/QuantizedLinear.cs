using DoctorGlm.Engine.Quantization;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// y = x·W′ᵀ + b with W′ the de-quantized <paramref name="weight"/> (W8A16/W4A16 as the reference does it:
    /// de-quantize, then an ordinary product). W′ is a frozen temporary in the current scope, so backward computes dx
    /// (and db when the bias trains) but never a weight gradient.
    /// </summary>
    public static Tensor QuantizedLinear(Tensor x, QuantizedWeight weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        SameDevice("QuantizedLinear", ("x", x), ("weight", weight.Data), ("bias", bias));
        var w = weight.Dequantize(DType.F32);
        w.Name = $"de-quantized INT{weight.Bits} weight";
        return Linear(x, w, bias);
    }
}
