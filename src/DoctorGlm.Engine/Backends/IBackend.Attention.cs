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
    /// uniform). <paramref name="lse"/> [B, nh, S] receives log Σ_j exp(score_ij). q, k, v and output are
    /// activations of one dtype, F32, BF16 or F16 (read exactly, the output rounded once); lse is F32. The prefixes
    /// share one dtype, F32, BF16 or F16 (a KV cache kept in 16 bits), and one layout whose rows are contiguous but
    /// whose batch stride may be anything (a view of the first N positions of a cache buffer with room for more:
    /// <see cref="AttentionArguments.PrefixBatchStride"/>).
    /// <paramref name="prefixMask"/>, U8 [B, N] (1 = blocked for every query; null = none), hides prefix keys the same
    /// way: a batched KV cache's left-pad positions (the past of a generation step). It has no backward.
    /// </summary>
    void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor? prefixMask = null);

    /// <summary>
    /// Gradients of <see cref="AttentionForward"/>, recomputing the probabilities from q, k and
    /// <paramref name="lse"/> (P_ij = exp(score_ij − lse_i)); <paramref name="output"/> supplies the row terms
    /// Σ_j P_ij·dP_ij = dO_i·O_i. Blocked scores get zero gradient. A row with no visible key (every mask entry set,
    /// no prefix) is exactly uniform and must be recognised from the mask: lse ≈ maskedValue there, too large for
    /// fp32 to hold to the precision P needs. Each gradient output (same shape as its input) is
    /// overwritten, or skipped when null; <paramref name="dPrefixK"/>/<paramref name="dPrefixV"/> only exist with a prefix.
    /// q, k, v and output have the forward's activation dtype; dOutput, every gradient and the prefixes (contiguous) are F32.
    /// </summary>
    void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor dOutput,
        Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dPrefixK, Tensor? dPrefixV);
}

/// <summary>Argument checks the attention kernels of every backend share.</summary>
internal static class AttentionArguments
{
    /// <summary>
    /// Whether <paramref name="t"/> [B, N, nh, d] has contiguous rows: strides (s, nh·d, d, 1) for some batch stride s
    /// (a contiguous tensor, or the first N positions of a longer buffer).
    /// </summary>
    public static bool HasContiguousRows(Tensor t)
    {
        if (t.Shape.Rank != 4) return false;
        var st = t.Strides;
        int h = t.Shape[2], d = t.Shape[3];
        return (d <= 1 || st[3] == 1) && (h <= 1 || st[2] == d) && (t.Shape[1] <= 1 || st[1] == (long)h * d);
    }

    /// <summary>The backward's prefix (a P-Tuning prefix being trained) is contiguous F32.</summary>
    public static void RequireTrainingPrefix(string kernel, Tensor? prefixK, Tensor? prefixV)
    {
        foreach (var p in new[] { prefixK, prefixV })
            if (p is not null && (p.DType != DType.F32 || !p.IsContiguous))
                throw new ArgumentException($"{kernel}: {p.Describe("the prefix")} must be contiguous F32 (the backward serves P-Tuning training, not a KV cache)");
    }

    /// <summary>
    /// The batch stride (elements) of the prefix keys and values of a forward, which must share dtype (F32, BF16 or F16),
    /// shape and strides and have contiguous rows (<see cref="HasContiguousRows"/>). 0 without a prefix.
    /// </summary>
    public static long PrefixBatchStride(string kernel, Tensor? prefixK, Tensor? prefixV)
    {
        if (prefixK is null || prefixV is null) return 0;
        if (!prefixK.DType.IsFloat() || prefixV.DType != prefixK.DType)
            throw new ArgumentException($"{kernel}: the prefix keys and values must share one float dtype; got {prefixK.DType}, {prefixV.DType}");
        if (!HasContiguousRows(prefixK) || !prefixK.Strides.SequenceEqual(prefixV.Strides))
            throw new ArgumentException($"{kernel}: the prefix keys and values must have contiguous rows and the same strides; got [{string.Join(", ", prefixK.Strides.ToArray())}] and [{string.Join(", ", prefixV.Strides.ToArray())}]");
        return prefixK.Shape[0] <= 1 ? (long)prefixK.Shape[1] * prefixK.Shape[2] * prefixK.Shape[3] : prefixK.Strides[0];
    }

    /// <summary>q, k, v and the output are activations of one float dtype (the kernels take one dtype code for all four).</summary>
    public static DType ActivationDType(string kernel, Tensor q, Tensor k, Tensor v, Tensor output)
    {
        if (!q.DType.IsFloat() || k.DType != q.DType || v.DType != q.DType || output.DType != q.DType)
            throw new ArgumentException($"{kernel}: q, k, v and the output must share one float dtype; got {q.DType}, {k.DType}, {v.DType}, {output.DType}");
        return q.DType;
    }
}
