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

/// <summary>Argument checks of <see cref="IBackend.SplitQkvRotary"/> that every backend runs (its kernels index with these shapes and strides).</summary>
internal static class RotaryArguments
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the first tensor whose dtype, shape or layout does not fit.</summary>
    public static void CheckSplit(Tensor qkv, Tensor? bias, Tensor positionIds, Tensor q, Tensor k, Tensor v)
    {
        const string op = nameof(IBackend.SplitQkvRotary);
        if (q.Shape.Rank != 4 || q.Shape[3] % 4 != 0) throw new ArgumentException($"{op}: {q.Describe("q")} must be [B, S, heads, headDim] with headDim divisible by 4");
        int b = q.Shape[0], s = q.Shape[1], h = q.Shape[2], d = q.Shape[3];
        if (qkv.Shape != new Shape(b, s, h, 3 * d) || !qkv.DType.IsFloat() || qkv.Strides[^1] != 1)
            throw new ArgumentException($"{op}: {qkv.Describe("qkv")} must be a float [{b}, {s}, {h}, {3 * d}] with unit stride along its last dim (q {q.Shape})");
        if (k.Shape != q.Shape || v.Shape != q.Shape || k.DType != q.DType || v.DType != q.DType || !q.DType.IsFloat()
            || q.Strides[^1] != 1 || k.Strides[^1] != 1 || !v.Strides.SequenceEqual(k.Strides))
            throw new ArgumentException($"{op}: {q.Describe("q")}, {k.Describe("k")} and {v.Describe("v")} must share a shape and a float dtype, k and v one layout, each with unit stride along headDim");
        if (bias is not null && (bias.DType != DType.F32 || bias.Shape != new Shape(h * 3 * d) || !bias.IsContiguous))
            throw new ArgumentException($"{op}: {bias.Describe("bias")} must be a contiguous F32 [{h * 3 * d}]");
        if (positionIds.DType != DType.I32 || positionIds.Shape != new Shape(b, 2, s) || !positionIds.IsContiguous)
            throw new ArgumentException($"{op}: {positionIds.Describe("positionIds")} must be a contiguous I32 [{b}, 2, {s}]");
    }
}
