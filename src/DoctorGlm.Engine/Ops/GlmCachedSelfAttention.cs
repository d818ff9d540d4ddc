using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// A KV-cached step of ChatGLM self-attention (spec §3.3–3.5, §4.2), for inference: from the fused QKV projection
    /// <paramref name="qkv"/> [B, S, nh, 3d] it writes the new keys (after the 2D rotary) and values straight into
    /// <paramref name="newKeys"/> / <paramref name="newValues"/> — the cache's slots for these S positions — and
    /// attends, as <see cref="GlmAttention"/> does, over the past (<paramref name="pastKeys"/>, read where it lies) and
    /// the new tokens read back from those slots. The queries are rotated into the slots' dtype, so the attention runs
    /// in the cache's precision: an F32 cache changes nothing against rotating, attending and then copying into the
    /// cache; a 16-bit cache rounds q, k and v once, as the cache keeps k and v for every later step.
    /// </summary>
    /// <remarks>
    /// Why one op: the unfused step added the projection's bias, sliced q, k and v out of it into contiguous copies,
    /// rotated them, attended and then copied (and rounded) k and v into the cache — nine passes per layer and token,
    /// against two here (<see cref="Backends.IBackend.SplitQkvRotary"/>: bias, rotary and the writes into the slots in
    /// one pass; then the attention). A decoding step of a 28-layer model on a GPU launches each of those per layer,
    /// and each launch of a one-token kernel costs microseconds beside the step's few milliseconds of weight reads.
    /// </remarks>
    /// <param name="qkv">The QKV projection viewed [B, S, nh, 3d] (q | k | v per head, d divisible by 4), F32 or 16-bit.</param>
    /// <param name="positionIds">[B, 2, S] I32: the new tokens' 2D positions.</param>
    /// <param name="mask">U8 [B, S, S] over the new tokens among themselves (1 = blocked), or null.</param>
    /// <param name="layerCoeff">c in −10000·c, the value of a blocked logit (layer index + 1).</param>
    /// <param name="pastKeys">The cache's past keys [B, P, nh, d] (rows contiguous, any batch stride), or null while empty.</param>
    /// <param name="pastValues">The past values, like <paramref name="pastKeys"/>.</param>
    /// <param name="pastMask">U8 [B, P] over the past (1 = blocked: a row's left pads), or null.</param>
    /// <param name="newKeys">The cache's slots for the new keys [B, S, nh, d] (unit stride along d), written here.</param>
    /// <param name="newValues">The slots for the new values, like <paramref name="newKeys"/> and of its dtype.</param>
    /// <param name="qkvBias">The projection's bias [nh·3d] when <paramref name="qkv"/> does not include it yet (added in
    /// the same pass, the same sums), or null.</param>
    /// <returns>[B, S, nh, d] in the slots' dtype.</returns>
    public static Tensor GlmCachedSelfAttention(Tensor qkv, Tensor positionIds, Tensor? mask, float layerCoeff, Tensor? pastKeys, Tensor? pastValues,
        Tensor? pastMask, Tensor newKeys, Tensor newValues, Tensor? qkvBias = null)
    {
        const string op = "GlmCachedSelfAttention";
        SameDevice(op, ("qkv", qkv), ("positionIds", positionIds), ("mask", mask), ("pastKeys", pastKeys), ("pastValues", pastValues),
            ("pastMask", pastMask), ("newKeys", newKeys), ("newValues", newValues), ("qkvBias", qkvBias));
        if (GradMode.IsEnabled && (qkv.RequiresGrad || qkvBias?.RequiresGrad == true))
            throw new NotSupportedException($"{op}: writes a KV cache and has no backward; run under GradMode.NoGrad or detach {qkv.Describe("qkv")} and the bias");
        var shape = QkvHeadShape(op, qkv);
        int batch = shape[0], seq = shape[1], heads = shape[2], d = shape[3];
        ExpectShape(op, "newKeys", newKeys, shape, $"[B, S, heads, headDim] matching {qkv.Describe("qkv")}");
        ExpectShape(op, "newValues", newValues, shape, $"[B, S, heads, headDim] matching {qkv.Describe("qkv")}");
        if (!newKeys.DType.IsFloat() || newValues.DType != newKeys.DType)
            throw new ArgumentException($"{op}: {newKeys.Describe("newKeys")} and {newValues.Describe("newValues")} must share one float dtype (the cache's)");
        if (newKeys.Strides[^1] != 1 || !newValues.Strides.SequenceEqual(newKeys.Strides))
            throw new ArgumentException($"{op}: the new key and value slots need one layout with unit stride along the head dim (got {newKeys.Describe("newKeys")} strides [{string.Join(", ", newKeys.Strides.ToArray())}], {newValues.Describe("newValues")} strides [{string.Join(", ", newValues.Strides.ToArray())}])");
        if (qkvBias is not null) ExpectShape(op, "qkvBias", qkvBias, new Shape(heads * 3 * d), "[heads·3·headDim], the QKV projection's bias");
        ExpectPositionIds(op, positionIds, batch, seq);

        var xc = FloatContiguous(qkv, op, "qkv");
        var pc = positionIds.IsContiguous ? positionIds : ContiguousNoGrad(positionIds);
        var bc = qkvBias is null ? null : F32Contiguous(qkvBias, op, "qkvBias");
        var be = qkv.Backend;
        // One pass: bias, rotary of q and k, and the writes into q and the slots.
        var q = Tensor.Empty(shape, newKeys.DType, qkv.Device);
        be.SplitQkvRotary(xc, bc, pc, q, newKeys, newValues);
        // One cache row (B = 1) makes the slots contiguous; a batch's slots are copied together by GlmAttention.
        var output = GlmAttention(q, newKeys, newValues, mask, layerCoeff, pastKeys, pastValues, pastMask);
        q.Dispose();
        return output;
    }
}
