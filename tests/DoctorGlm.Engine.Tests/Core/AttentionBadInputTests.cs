namespace DoctorGlm.Engine.Tests.Core;

/// <summary>Rotary, attention, mask/position builders and LoRA reject bad input with messages naming the tensor and shapes.</summary>
public class AttentionBadInputTests
{
    private static Tensor Z(params int[] shape) => Tensor.Zeros(new Shape(shape));

    private static void Throws<TEx>(Action a, params string[] fragments) where TEx : Exception
    {
        var ex = Assert.Throws<TEx>(a);
        foreach (var f in fragments) Assert.Contains(f, ex.Message);
    }

    [Fact]
    public void RotaryRejectsWrongDTypePositionIds()
    {
        using var scope = TensorScope.Begin();
        Throws<ArgumentException>(() => Ops.Rotary2D(Z(1, 3, 2, 8), Z(1, 2, 3)), "Rotary2D", "positionIds", "[1, 2, 3]", "F32", "must be I32");
    }

    [Fact]
    public void RotaryRejectsWrongShapePositionIdsAndHeadDim()
    {
        using var scope = TensorScope.Begin();
        var ids = Tensor.FromArray(new int[6], new Shape(1, 2, 3));
        Throws<ArgumentException>(() => Ops.Rotary2D(Z(1, 4, 2, 8), ids), "positionIds", "[1, 2, 3]", "must have shape [1, 2, 4]");
        Throws<ArgumentException>(() => Ops.Rotary2D(Z(1, 3, 2, 6), ids), "x", "[1, 3, 2, 6]", "divisible by 4");
    }

    [Fact]
    public void AttentionRejectsMismatchedQK()
    {
        using var scope = TensorScope.Begin();
        Throws<ArgumentException>(() => Ops.GlmAttention(Z(2, 5, 2, 8), Z(2, 4, 2, 8), Z(2, 5, 2, 8), null), "GlmAttention", "k [2, 4, 2, 8]", "[2, 5, 2, 8]");
        Throws<ArgumentException>(() => Ops.GlmAttention(Z(2, 5, 2, 8), Z(2, 5, 2, 8), Z(2, 5, 3, 8), null), "v [2, 5, 3, 8]", "q [2, 5, 2, 8]");
    }

    [Fact]
    public void AttentionRejectsBadMask()
    {
        using var scope = TensorScope.Begin();
        var q = Z(2, 5, 2, 8);
        var wrongShape = Tensor.FromArray(new byte[2 * 5 * 4], new Shape(2, 5, 4));
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, wrongShape), "mask [2, 5, 4]", "must have shape [2, 5, 5]");
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, Z(2, 5, 5)), "mask [2, 5, 5] F32", "must be U8");
    }

    [Fact]
    public void AttentionRejectsBadPrefix()
    {
        using var scope = TensorScope.Begin();
        var q = Z(2, 5, 2, 8);
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, Z(2, 3, 2, 8), null), "prefixK and prefixV", "only prefixK");
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, Z(2, 3, 2, 4), Z(2, 3, 2, 4)), "prefixK [2, 3, 2, 4]", "[2, 3, 2, 8]");
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, Z(2, 3, 2, 8), Z(2, 2, 2, 8)), "prefixV [2, 2, 2, 8]", "[2, 3, 2, 8]");
        Throws<ArgumentOutOfRangeException>(() => Ops.GlmAttention(q, q, q, null, 0f), "layerCoeff");
    }

    [Fact]
    public void MaskAndPositionBuildersRejectInconsistentArguments()
    {
        using var scope = TensorScope.Begin();
        Throws<ArgumentOutOfRangeException>(() => AttentionMask.PrefixLm([5], 6, [2]), "ctx[0] = 5", "[0, 4]");
        Throws<ArgumentException>(() => AttentionMask.PrefixLm([1, 2], 6, [0]), "padLeft has 1", "ctx has 2");
        Throws<ArgumentException>(() => PositionIds.Glm([1, 2], [0], 6), "maskPos has 1", "ctx has 2");
    }
}
