using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// ChatGLM 2D rotary position embedding (spec §3.4) of q or k: <paramref name="x"/> [B, S, nh, d] with d
    /// divisible by 4, <paramref name="positionIds"/> [B, 2, S] I32 (row 0 = position, row 1 = block position,
    /// see <see cref="PositionIds.Glm"/>). The first d/2 dims rotate with the position, the last d/2 with the block
    /// position (rotate-half with partner j + d/4, θ_j = fp16(10000^(−4j/d))). Returns a new [B, S, nh, d] tensor;
    /// the backward pass is the inverse rotation. x may be an F32, BF16 or F16 activation: y has its dtype (rotated
    /// in fp32, rounded once); the gradient is F32.
    /// </summary>
    public static Tensor Rotary2D(Tensor x, Tensor positionIds)
    {
        const string op = "Rotary2D";
        SameDevice(op, ("x", x), ("positionIds", positionIds));
        ExpectRank(op, "x", x, 4, "[B, S, heads, headDim]");
        int batch = x.Shape[0], seq = x.Shape[1], d = x.Shape[3];
        if (d % 4 != 0)
            throw new ArgumentException($"{op}: {x.Describe("x")} has head dim {d}, which must be divisible by 4 (two rotary halves, each rotated in pairs)");
        ExpectPositionIds(op, positionIds, batch, seq);
        var xc = FloatContiguous(x, op, "x");
        var pc = positionIds.IsContiguous ? positionIds : ContiguousNoGrad(positionIds);
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        var be = x.Backend;
        be.Rotary2D(xc, pc, y, inverse: false);
        return Graph.Record(op, y, [x], (g, _) =>
        {
            var gc = g.IsContiguous ? g : ContiguousNoGrad(g);
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.Rotary2D(gc, pc, gx, inverse: true);
            return [gx];
        });
    }

    /// <summary>Throws unless <paramref name="positionIds"/> is I32 [B, 2, S] (row 0 position, row 1 block position).</summary>
    internal static void ExpectPositionIds(string op, Tensor positionIds, int batch, int seq)
    {
        ExpectDType(op, "positionIds", positionIds, DType.I32);
        ExpectShape(op, "positionIds", positionIds, new Shape(batch, 2, seq), "[B, 2, S]: row 0 position, row 1 block position");
    }
}
