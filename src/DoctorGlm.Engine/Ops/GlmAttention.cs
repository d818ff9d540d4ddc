using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Backends;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// ChatGLM self-attention core (spec §3.5, §8): softmax(q·kᵀ/√d with blocked entries −10000·c)·v per (batch,
    /// head), c = <paramref name="layerCoeff"/> (layer index + 1). This is the fp32 equivalent of the reference's
    /// fp16 trick (scale q by 1/(√d·c), fill −10000, multiply by c): visible logits are exactly q·k/√d, blocked ones
    /// −10000·c, so a fully blocked row (a left pad) attends uniformly to every key instead of producing NaN.
    /// q, k and v are activations of one dtype (F32, or BF16/F16: the output then has that dtype too, the softmax and
    /// products accumulate in fp32 and the output is rounded once); gradients are F32. The prefix is F32; without
    /// gradients it may also be BF16/F16 (a 16-bit KV cache), and a view whose rows are contiguous (the past of a
    /// cache buffer) is read in place, without a copy.
    /// </summary>
    /// <param name="q">Queries [B, S, nh, d], already rotated.</param>
    /// <param name="k">Keys [B, S, nh, d], already rotated, q's dtype.</param>
    /// <param name="v">Values [B, S, nh, d], q's dtype.</param>
    /// <param name="mask">U8 [B, S, S] over the non-prefix keys (query i, key j; 1 = blocked), e.g. from
    /// <see cref="AttentionMask.PrefixLm"/>; null blocks nothing.</param>
    /// <param name="layerCoeff">c in −10000·c, the value of a blocked logit.</param>
    /// <param name="prefixK">P-tuning v2 prefix keys [B, N, nh, d] (no rotary), placed before k and always visible.</param>
    /// <param name="prefixV">Prefix values [B, N, nh, d]; given exactly when <paramref name="prefixK"/> is.</param>
    /// <param name="prefixMask">U8 [B, N] over the prefix keys (1 = blocked for every query), or null (all visible).
    /// The past of a batched KV cache (<see cref="Models.ChatGlm.GlmKvCache"/>) uses it to hide each row's left pads.
    /// Inference only: with it, no input may require a gradient.</param>
    /// <returns>[B, S, nh, d]. Backward recomputes the probabilities from the saved row log-sum-exp.</returns>
    public static Tensor GlmAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, float layerCoeff = 1f, Tensor? prefixK = null, Tensor? prefixV = null,
        Tensor? prefixMask = null)
    {
        const string op = "GlmAttention";
        SameDevice(op, ("q", q), ("k", k), ("v", v), ("mask", mask), ("prefixK", prefixK), ("prefixV", prefixV), ("prefixMask", prefixMask));
        ExpectRank(op, "q", q, 4, "[B, S, heads, headDim]");
        ExpectShape(op, "k", k, q.Shape, $"same as {q.Describe("q")}");
        ExpectShape(op, "v", v, q.Shape, $"same as {q.Describe("q")}");
        int d = q.Shape[3];
        ValidateAttention(op, q.Shape, q.Describe("q"), mask, layerCoeff, prefixK, prefixV);
        if (prefixMask is not null)
        {
            if (prefixK is null) throw new ArgumentException($"{op}: {prefixMask.Describe("prefixMask")} was given without prefix keys");
            ExpectDType(op, "prefixMask", prefixMask, DType.U8);
            ExpectShape(op, "prefixMask", prefixMask, new Shape(q.Shape[0], prefixK.Shape[1]), "[B, N(prefix keys)], 1 = blocked");
        }

        if (k.DType != q.DType || v.DType != q.DType)
            throw new ArgumentException($"{op}: {q.Describe("q")}, {k.Describe("k")} and {v.Describe("v")} must share one dtype");
        var qc = FloatContiguous(q, op, "q");
        var kc = FloatContiguous(k, op, "k");
        var vc = FloatContiguous(v, op, "v");
        bool anyGrad = GradMode.IsEnabled && (q.RequiresGrad || k.RequiresGrad || v.RequiresGrad || prefixK?.RequiresGrad == true || prefixV?.RequiresGrad == true);
        // Without gradients the prefix is read where it lies (a KV cache's past: the first N positions of a longer
        // buffer, maybe in 16 bits); the backward takes a contiguous F32 prefix (P-Tuning training).
        bool asIs = !anyGrad && prefixK is not null && prefixK.DType.IsFloat() && prefixV!.DType == prefixK.DType
            && AttentionArguments.HasContiguousRows(prefixK) && prefixK.Strides.SequenceEqual(prefixV.Strides);
        var pkc = prefixK is null ? null : asIs ? prefixK : F32Contiguous(prefixK, op, "prefixK");
        var pvc = prefixV is null ? null : asIs ? prefixV : F32Contiguous(prefixV, op, "prefixV");
        var mc = mask is null ? null : mask.IsContiguous ? mask : ContiguousNoGrad(mask);
        var pmc = prefixMask is null ? null : prefixMask.IsContiguous ? prefixMask : ContiguousNoGrad(prefixMask);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2];
        float scale = 1f / MathF.Sqrt(d);
        float maskedValue = -10000f * layerCoeff;

        var output = Tensor.Empty(q.Shape, q.DType, q.Device);
        var lse = Tensor.Empty(new Shape(batch, heads, seq), DType.F32, q.Device);
        var be = q.Backend;
        if (anyGrad && pmc is not null)
            throw new NotSupportedException($"{op}: a prefix mask is for inference (a batched KV cache's past) and has no backward; run under GradMode.NoGrad or detach the inputs");
        be.AttentionForward(qc, kc, vc, pkc, pvc, mc, scale, maskedValue, output, lse, pmc);
        if (!anyGrad) { lse.Dispose(); return output; } // inference keeps nothing for backward
        return Graph.Record(op, output, [q, k, v, prefixK, prefixV], (g, needs) =>
        {
            var gc = g.IsContiguous ? g : ContiguousNoGrad(g);
            Tensor? dq = needs(0) ? Tensor.Empty(q.Shape, DType.F32, q.Device) : null;
            Tensor? dk = needs(1) ? Tensor.Empty(q.Shape, DType.F32, q.Device) : null;
            Tensor? dv = needs(2) ? Tensor.Empty(q.Shape, DType.F32, q.Device) : null;
            Tensor? dpk = needs(3) ? Tensor.Empty(prefixK!.Shape, DType.F32, q.Device) : null;
            Tensor? dpv = needs(4) ? Tensor.Empty(prefixV!.Shape, DType.F32, q.Device) : null;
            be.AttentionBackward(qc, kc, vc, pkc, pvc, mc, scale, maskedValue, output, lse, gc, dq, dk, dv, dpk, dpv);
            return [dq, dk, dv, dpk, dpv];
        });
    }

    /// <summary>Checks the arguments every GLM attention op shares, for queries of shape <paramref name="qShape"/> [B, S, nh, d].</summary>
    private static void ValidateAttention(string op, Shape qShape, string qName, Tensor? mask, float layerCoeff, Tensor? prefixK, Tensor? prefixV)
    {
        int batch = qShape[0], seq = qShape[1], heads = qShape[2], d = qShape[3];
        if (d == 0) throw new ArgumentException($"{op}: {qName} has head dim 0");
        if (!(layerCoeff > 0) || !float.IsFinite(layerCoeff)) throw new ArgumentOutOfRangeException(nameof(layerCoeff), $"{op}: layerCoeff = {layerCoeff} must be positive and finite (layer index + 1)");
        if (mask is not null)
        {
            ExpectDType(op, "mask", mask, DType.U8);
            ExpectShape(op, "mask", mask, new Shape(batch, seq, seq), "[B, S(query), S(key)], 1 = blocked");
        }
        if ((prefixK is null) != (prefixV is null))
            throw new ArgumentException($"{op}: prefixK and prefixV must be given together (got {(prefixK is null ? "only prefixV " + prefixV!.Shape : "only prefixK " + prefixK.Shape)})");
        if (prefixK is not null)
        {
            ExpectRank(op, "prefixK", prefixK, 4, "[B, N, heads, headDim]");
            int n = prefixK.Shape[1];
            ExpectShape(op, "prefixK", prefixK, new Shape(batch, n, heads, d), $"[B, N, heads, headDim] matching {qName}");
            ExpectShape(op, "prefixV", prefixV!, prefixK.Shape, $"same as {prefixK.Describe("prefixK")}");
        }
        if (seq == 0) throw new ArgumentException($"{op}: {qName} has an empty sequence");
    }
}
