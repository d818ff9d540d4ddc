namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>y = tanh(x) elementwise over equal element counts; y may alias x.</summary>
    void TanhForward(Tensor x, Tensor y);

    /// <summary>dx = dy·(1 − y²) from the saved output y = tanh(x); dx may alias dy.</summary>
    void TanhBackward(Tensor y, Tensor dy, Tensor dx);
}
