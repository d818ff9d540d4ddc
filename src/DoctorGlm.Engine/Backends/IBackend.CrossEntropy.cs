namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// Per-row softmax cross-entropy for <paramref name="logits"/> [N, V] and <paramref name="labels"/> [N] (I32).
    /// For a kept row (label ≠ <paramref name="ignoreIndex"/>): lse[r] = log Σ_j exp(logits[r, j]) (max-subtracted)
    /// and rowLoss[r] = lse[r] − logits[r, label]; ignored rows get 0 in both. Labels must already be valid (in
    /// [0, V) or the ignore index): <c>Ops.CrossEntropy</c> checks them, and the non-finite losses, once for every
    /// backend.
    /// </summary>
    void CrossEntropyForward(Tensor logits, Tensor labels, int ignoreIndex, Tensor rowLoss, Tensor lse);

    /// <summary>
    /// Gradient of mean cross-entropy: dlogits[r, j] = (exp(logits[r, j] − lse[r]) − [j = label[r]])·dloss[0]·
    /// <paramref name="invCount"/> for kept rows and 0 for ignored rows (overwritten). <paramref name="dloss"/> is
    /// the one-element upstream gradient, read on the device.
    /// </summary>
    void CrossEntropyBackward(Tensor logits, Tensor labels, Tensor lse, int ignoreIndex, Tensor dloss, float invCount, Tensor dlogits);
}
