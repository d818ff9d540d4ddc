namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// Per-row softmax cross-entropy for <paramref name="logits"/> [N, V] and <paramref name="labels"/> [N] (I32).
    /// For a kept row (label ≠ <paramref name="ignoreIndex"/>): lse[r] = log Σ_j exp(logits[r, j]) (max-subtracted)
    /// and rowLoss[r] = lse[r] − logits[r, label]; ignored rows get 0 in both. Returns the number of kept rows
    /// (synchronises with the device).
    /// Throws <see cref="ArgumentOutOfRangeException"/> (before computing anything) for a label outside [0, V) that is
    /// not <paramref name="ignoreIndex"/>, naming the row and value; throws <see cref="ArgumentException"/> naming the
    /// kept rows whose loss is not finite (NaN or +∞ logits, or a −∞ logit at the label).
    /// </summary>
    int CrossEntropyForward(Tensor logits, Tensor labels, int ignoreIndex, Tensor rowLoss, Tensor lse);

    /// <summary>
    /// Gradient of mean cross-entropy: dlogits[r, j] = (exp(logits[r, j] − lse[r]) − [j = label[r]])·dloss[0]·
    /// <paramref name="invCount"/> for kept rows and 0 for ignored rows (overwritten). <paramref name="dloss"/> is
    /// the one-element upstream gradient, read on the device.
    /// </summary>
    void CrossEntropyBackward(Tensor logits, Tensor labels, Tensor lse, int ignoreIndex, Tensor dloss, float invCount, Tensor dlogits);
}
