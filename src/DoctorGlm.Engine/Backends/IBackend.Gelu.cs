namespace DoctorGlm.Engine.Backends;

// All four: x and the output (y, or dx) may each be F32, BF16 or F16 — 16-bit activations are widened exactly and the
// output rounded once, the fp32 arithmetic unchanged; bias and dy are F32.
public partial interface IBackend
{
    /// <summary>
    /// GELU, tanh form (spec §3.3): y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise over equal
    /// element counts; y may alias x.
    /// </summary>
    void GeluForward(Tensor x, Tensor y);

    /// <summary>
    /// dx = dy·gelu′(x) (spec §3.8): gelu′(x) = 0.5·(1 + τ) + 0.5·x·(1 − τ²)·√(2/π)·(1 + 3·0.044715·x²),
    /// τ = tanh(√(2/π)·(x + 0.044715·x³)). dx may alias dy.
    /// </summary>
    void GeluBackward(Tensor x, Tensor dy, Tensor dx);

    /// <summary>
    /// The MLP's bias and GELU in one pass: y = gelu(x + bias) for x [rows, f] and bias [f] (the row vector added
    /// to every row, in fp32, as <see cref="AddRowVector"/> does), so the sum is never stored. Same result as
    /// AddRowVector followed by <see cref="GeluForward"/>; y may alias x.
    /// </summary>
    void BiasGeluForward(Tensor x, Tensor bias, Tensor y);

    /// <summary>
    /// dx = dy·gelu′(x + bias), recomputing the sum (the bias gradient is then the column sum of dx). Same result as
    /// <see cref="GeluBackward"/> on the stored sum; dx may alias dy.
    /// </summary>
    void BiasGeluBackward(Tensor x, Tensor bias, Tensor dy, Tensor dx);
}
