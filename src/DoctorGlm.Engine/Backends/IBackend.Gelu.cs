namespace DoctorGlm.Engine.Backends;

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
}
