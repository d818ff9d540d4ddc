namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// Softmax attention per (batch, head), shaped for a flash-attention kernel: only the row log-sum-exp is saved.
    /// <paramref name="q"/>, <paramref name="k"/>, <paramref name="v"/>, <paramref name="output"/> are [B, S, nh, d];
    /// the optional <paramref name="prefixK"/>/<paramref name="prefixV"/> [B, N, nh, d] are keys/values placed
    /// before k/v and never blocked; <paramref name="mask"/> is U8 [B, S, S] over the non-prefix keys (1 = blocked,
    /// null = nothing blocked). Score of query i and key j = <paramref name="scale"/>·q_i·k_j when visible,
    /// <paramref name="maskedValue"/> when blocked (a constant, as masked_fill does: a fully blocked row becomes
    /// uniform). <paramref name="lse"/> [B, nh, S] receives log Σ_j exp(score_ij).
    /// </summary>
    void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse);

    /// <summary>
    /// Gradients of <see cref="AttentionForward"/>, recomputing the probabilities from q, k and
    /// <paramref name="lse"/> (P_ij = exp(score_ij − lse_i)); <paramref name="output"/> supplies the row terms
    /// Σ_j P_ij·dP_ij = dO_i·O_i. Blocked scores get zero gradient. A row with no visible key (every mask entry set,
    /// no prefix) is exactly uniform and must be recognised from the mask: lse ≈ maskedValue there, too large for
    /// fp32 to hold to the precision P needs. Each gradient output (same shape as its input) is
    /// overwritten, or skipped when null; <paramref name="dPrefixK"/>/<paramref name="dPrefixV"/> only exist with a prefix.
    /// </summary>
    void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor dOutput,
        Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dPrefixK, Tensor? dPrefixV);
}
