namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// Inverted dropout with a counter-based mask: y[i] = x[i]·1/(1 − p) when
    /// <c>RandomGenerator.Uniform(stream, i) ≥ p</c>, else 0, for flat element index i over equal element counts
    /// (y may alias x). The mask is a pure function of (stream, i), so backward applies this same kernel to the
    /// output gradient with the same stream, and every backend draws the same mask. Requires 0 ≤ p &lt; 1. x and y may
    /// each be F32, BF16 or F16 (16-bit activations: widened exactly, y rounded once).
    /// </summary>
    void DropoutForward(Tensor x, Tensor y, float p, ulong stream);
}
