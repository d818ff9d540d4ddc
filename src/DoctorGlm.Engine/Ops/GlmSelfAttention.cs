using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// ChatGLM self-attention from the fused QKV projection (spec §3.3–3.5): splits <paramref name="qkv"/>
    /// [B, S, nh, 3d] per head into q | k | v, applies the 2D rotary embedding to q and k, and attends as
    /// <see cref="GlmAttention"/> does. Same result as <c>GlmAttention(Rotary2D(q), Rotary2D(k), v, …)</c> on
    /// <see cref="Tensor.Narrow"/> views, without their copies: the rotary kernel reads the q and k slices in place
    /// (split and rotation are one pass), and backward writes the rotated-back dq, dk and dv straight into one
    /// [B, S, nh, 3d] gradient instead of three zero-padded ones that then have to be summed.
    /// </summary>
    /// <param name="qkv">The QKV projection viewed [B, S, nh, 3d] (d divisible by 4): F32, or a BF16/F16 activation —
    /// then the rotated q and k, v and the output (all kept for backward) have that dtype, and gradients are F32.</param>
    /// <param name="positionIds">[B, 2, S] I32 (<see cref="PositionIds.Glm"/>).</param>
    /// <param name="mask">As for <see cref="GlmAttention"/>.</param>
    /// <param name="layerCoeff">As for <see cref="GlmAttention"/>.</param>
    /// <param name="prefixK">As for <see cref="GlmAttention"/>.</param>
    /// <param name="prefixV">As for <see cref="GlmAttention"/>.</param>
    /// <returns>The attention output [B, S, nh, d].</returns>
    public static Tensor GlmSelfAttention(Tensor qkv, Tensor positionIds, Tensor? mask, float layerCoeff = 1f, Tensor? prefixK = null, Tensor? prefixV = null)
    {
        const string op = "GlmSelfAttention";
        SameDevice(op, ("qkv", qkv), ("positionIds", positionIds), ("mask", mask), ("prefixK", prefixK), ("prefixV", prefixV));
        var shape = QkvHeadShape(op, qkv);
        int batch = shape[0], seq = shape[1], heads = shape[2], d = shape[3];
        ValidateAttention(op, shape, $"the q slice of {qkv.Describe("qkv")}", mask, layerCoeff, prefixK, prefixV);
        ExpectPositionIds(op, positionIds, batch, seq);

        var xc = FloatContiguous(qkv, op, "qkv");
        var act = qkv.DType;
        var pc = positionIds.IsContiguous ? positionIds : ContiguousNoGrad(positionIds);
        var pkc = prefixK is null ? null : F32Contiguous(prefixK, op, "prefixK");
        var pvc = prefixV is null ? null : F32Contiguous(prefixV, op, "prefixV");
        var mc = mask is null ? null : mask.IsContiguous ? mask : ContiguousNoGrad(mask);
        var be = qkv.Backend;

        var q = Tensor.Empty(shape, act, qkv.Device);
        var k = Tensor.Empty(shape, act, qkv.Device);
        var v = Tensor.Empty(shape, act, qkv.Device);
        using (var qs = xc.Narrow(3, 0, d)) be.Rotary2D(qs, pc, q, inverse: false);
        using (var ks = xc.Narrow(3, d, d)) be.Rotary2D(ks, pc, k, inverse: false);
        using (var vs = xc.Narrow(3, 2 * d, d)) be.Copy(vs, v);

        float scale = 1f / MathF.Sqrt(d);
        float maskedValue = -10000f * layerCoeff;
        var output = Tensor.Empty(shape, act, qkv.Device);
        var lse = Tensor.Empty(new Shape(batch, heads, seq), DType.F32, qkv.Device);
        be.AttentionForward(q, k, v, pkc, pvc, mc, scale, maskedValue, output, lse);
        bool anyGrad = GradMode.IsEnabled && (qkv.RequiresGrad || prefixK?.RequiresGrad == true || prefixV?.RequiresGrad == true);
        if (!anyGrad) { q.Dispose(); k.Dispose(); v.Dispose(); lse.Dispose(); return output; } // inference keeps nothing
        return Graph.Record(op, output, [qkv, prefixK, prefixV], (g, needs) =>
        {
            var gc = g.IsContiguous ? g : ContiguousNoGrad(g);
            using var dq = needs(0) ? Tensor.Empty(shape, DType.F32, qkv.Device) : null;
            using var dk = needs(0) ? Tensor.Empty(shape, DType.F32, qkv.Device) : null;
            using var dv = needs(0) ? Tensor.Empty(shape, DType.F32, qkv.Device) : null;
            Tensor? dpk = needs(1) ? Tensor.Empty(prefixK!.Shape, DType.F32, qkv.Device) : null;
            Tensor? dpv = needs(2) ? Tensor.Empty(prefixV!.Shape, DType.F32, qkv.Device) : null;
            be.AttentionBackward(q, k, v, pkc, pvc, mc, scale, maskedValue, output, lse, gc, dq, dk, dv, dpk, dpv);
            Tensor? dqkv = null;
            if (needs(0))
            {
                // The rotation is orthogonal: its gradient is the inverse rotation, written into the q and k slices.
                dqkv = Tensor.Empty(qkv.Shape, DType.F32, qkv.Device);
                using (var qs = dqkv.Narrow(3, 0, d)) be.Rotary2D(dq!, pc, qs, inverse: true);
                using (var ks = dqkv.Narrow(3, d, d)) be.Rotary2D(dk!, pc, ks, inverse: true);
                using (var vs = dqkv.Narrow(3, 2 * d, d)) be.Copy(dv!, vs);
            }
            return [dqkv, dpk, dpv];
        });
    }

    /// <summary>The [B, S, nh, d] of each of q, k and v in a fused QKV projection [B, S, nh, 3d] (d divisible by 4), checked.</summary>
    private static Shape QkvHeadShape(string op, Tensor qkv)
    {
        ExpectRank(op, "qkv", qkv, 4, "[B, S, heads, 3·headDim]");
        if (qkv.Shape[3] % 12 != 0)
            throw new ArgumentException($"{op}: {qkv.Describe("qkv")} must end in 3·d with d divisible by 4 (q | k | v per head; two rotary halves rotated in pairs)");
        return new Shape(qkv.Shape[0], qkv.Shape[1], qkv.Shape[2], qkv.Shape[3] / 3);
    }
}
