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
    public void AttentionRejectsBadPrefixMaskAndItsGradient()
    {
        using var scope = TensorScope.Begin();
        var q = Z(2, 5, 2, 8);
        var pk = Z(2, 3, 2, 8);
        var pm = Tensor.FromArray(new byte[6], new Shape(2, 3));
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, null, null, pm), "prefixMask [2, 3]", "without prefix keys");
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, pk, pk, Tensor.FromArray(new byte[4], new Shape(2, 2))), "prefixMask [2, 2]", "must have shape [2, 3]");
        Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, pk, pk, Z(2, 3)), "prefixMask [2, 3] F32", "must be U8");
        var trained = Z(2, 5, 2, 8);
        trained.RequiresGrad = true;
        Throws<NotSupportedException>(() => Ops.GlmAttention(trained, q, q, null, 1f, pk, pk, pm), "prefix mask", "no backward");
    }

    [Fact]
    public void MaskAndPositionBuildersRejectInconsistentArguments()
    {
        using var scope = TensorScope.Begin();
        Throws<ArgumentOutOfRangeException>(() => AttentionMask.PrefixLm([5], 6, [2]), "ctx[0] = 5", "[0, 4]");
        Throws<ArgumentException>(() => AttentionMask.PrefixLm([1, 2], 6, [0]), "padLeft has 1", "ctx has 2");
        Throws<ArgumentException>(() => PositionIds.Glm([1, 2], [0], 6), "maskPos has 1", "ctx has 2");
    }

    [Fact]
    public void LoraRejectsWrongShapes()
    {
        using var scope = TensorScope.Begin();
        var x = Z(2, 3, 12);
        var w = Z(18, 12);
        // PEFT: B must be [out, r].
        Throws<ArgumentException>(() => Ops.LoraLinear(x, w, null, Z(2, 12), Z(17, 2), 2f), "LoraLinear", "loraB [17, 2]", "[18, 2]");
        // Grouped [T, F, T]: B must be [blockSize·2, r] = [12, 2].
        var groups = LoraGroups.Merged(true, false, true);
        Throws<ArgumentException>(() => Ops.LoraLinear(x, w, null, Z(4, 12), Z(18, 2), 2f, groups), "loraB [18, 2]", "[12, 2]", "blockSize 6");
        Throws<ArgumentException>(() => Ops.LoraLinear(x, w, null, Z(3, 12), Z(12, 2), 2f, groups), "loraA [3, 12]", "[r·2, 12]");
        Throws<ArgumentException>(() => Ops.LoraLinear(x, Z(17, 12), null, Z(4, 12), Z(12, 2), 2f, groups), "weight [17, 12]", "3 equal LoRA blocks");
        Throws<ArgumentException>(() => Ops.LoraLinear(Z(2, 3, 11), w, null, Z(2, 12), Z(18, 2), 2f), "x [2, 3, 11]", "12");
        Throws<ArgumentException>(() => LoraMerge.Merge(w, Z(2, 12), Z(12, 2), 2f), "LoraMerge.Merge", "loraB [12, 2]", "[18, 2]");
        Throws<ArgumentException>(() => LoraGroups.Merged(false, false), "at least one");
    }

    [Fact]
    public void LoraRejectsTrainableBaseAndDropoutWithoutRng()
    {
        using var scope = TensorScope.Begin();
        var w = Z(18, 12);
        w.RequiresGrad = true;
        Throws<ArgumentException>(() => Ops.LoraLinear(Z(2, 12), w, null, Z(2, 12), Z(18, 2), 2f), "weight [18, 12]", "frozen");
        Throws<ArgumentException>(() => Ops.LoraLinear(Z(2, 12), Z(18, 12), null, Z(2, 12), Z(18, 2), 2f, dropout: 0.1f), "RandomGenerator");
        Throws<ArgumentOutOfRangeException>(() => Ops.LoraLinear(Z(2, 12), Z(18, 12), null, Z(2, 12), Z(18, 2), 2f, dropout: 1f), "dropout");
    }

    [Fact]
    public void SelfAttentionFromQkvRejectsBadShapes()
    {
        using var scope = TensorScope.Begin();
        var ids = Tensor.FromArray(new int[10], new Shape(1, 2, 5));
        Throws<ArgumentException>(() => Ops.GlmSelfAttention(Z(1, 5, 2, 18), ids, null), "GlmSelfAttention", "qkv [1, 5, 2, 18]", "3·d", "divisible by 4");
        Throws<ArgumentException>(() => Ops.GlmSelfAttention(Z(1, 5, 2), ids, null), "qkv [1, 5, 2]", "rank 4");
        Throws<ArgumentException>(() => Ops.GlmSelfAttention(Z(1, 4, 2, 24), ids, null), "positionIds", "[1, 2, 5]", "must have shape [1, 2, 4]");
        Throws<ArgumentException>(() => Ops.GlmSelfAttention(Z(1, 5, 2, 24), ids, Z(1, 5, 5)), "mask", "must be U8");
        Throws<ArgumentException>(() => Ops.GlmSelfAttention(Z(1, 5, 2, 24), ids, null, 1f, Z(1, 3, 2, 8), null), "prefixK and prefixV must be given together");
    }
}
