namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// ChatGLM's 2D rotary embedding (spec §3.4). <paramref name="x"/> and <paramref name="y"/> are [B, S, nh, d]
    /// (d divisible by 4; y may alias x); <paramref name="positionIds"/> is [B, 2, S] I32 (row 0 = position,
    /// row 1 = block position). Dims [0, d/2) rotate with the position, [d/2, d) with the block position; inside a
    /// half of size r the pair (j, j + r/2) is rotated by the angle p·θ_j with θ_j = fp16(1/10000^(2j/r)), the angle
    /// evaluated in double. <paramref name="inverse"/> applies the transpose rotation (the backward pass).
    /// x and y may be strided views (any strides for B, S and nh; unit stride along d): the slices of a fused
    /// [B, S, nh, 3d] QKV tensor are rotated straight into contiguous q and k, and their gradients straight back.
    /// y may alias x exactly, not partially. Each of x and y may be F32, BF16 or F16 (16-bit activations: widened
    /// exactly, the rotation in fp32, y rounded once).
    /// </summary>
    void Rotary2D(Tensor x, Tensor positionIds, Tensor y, bool inverse);

    /// <summary>
    /// A KV-cached step's split of the fused QKV projection in one pass: for <paramref name="qkv"/> [B, S, nh, 3d]
    /// (q | k | v per head, spec §3.3) and its <paramref name="bias"/> [nh·3d] (F32; null: none, already added),
    /// q = rotary(q-slice + b), k = rotary(k-slice + b), v = v-slice + b — the values of <see cref="AddRowVector"/>
    /// with the bias, then <see cref="Rotary2D"/> of the q and k slices and a copy of the v slice, bit for bit.
    /// qkv, q, k and v may each be strided over B, S and nh (unit stride along the last dim): q a fresh tensor, k and
    /// v the slots of a KV cache (same strides). qkv may be F32, BF16 or F16; q, k and v share one of those dtypes.
    /// </summary>
    void SplitQkvRotary(Tensor qkv, Tensor? bias, Tensor positionIds, Tensor q, Tensor k, Tensor v);
}
