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
}
