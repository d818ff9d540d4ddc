namespace DoctorGlm.Engine.Tests.Core;

/// <summary>Bad inputs to the norm/activation/embedding/loss ops fail loudly, naming what is wrong.</summary>
public class NormBadInputTests
{
    [Fact]
    public void LayerNormWeightOfWrongLengthNamesTensorAndShapes()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Zeros(new Shape(2, 3, 37));
        var w = Tensor.Zeros(new Shape(36));
        w.Name = "ln1.weight";
        var b = Tensor.Zeros(new Shape(37));
        var e = Assert.Throws<ArgumentException>(() => Ops.LayerNorm(x, w, b));
        Assert.Contains("LayerNorm", e.Message);
        Assert.Contains("'ln1.weight' [36]", e.Message);
        Assert.Contains("[37]", e.Message);
        Assert.Contains("[2, 3, 37]", e.Message);
    }

    [Fact]
    public void BiasGeluNamesTheBiasAndTheInputShapes()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Zeros(new Shape(2, 5, 64));
        var b = Tensor.Zeros(new Shape(63));
        b.Name = "dense_h_to_4h.bias";
        var e = Assert.Throws<ArgumentException>(() => Ops.BiasGelu(x, b));
        Assert.Contains("BiasGelu", e.Message);
        Assert.Contains("'dense_h_to_4h.bias' [63]", e.Message);
        Assert.Contains("[2, 5, 64]", e.Message);
        var e2 = Assert.Throws<ArgumentException>(() => Ops.BiasGelu(x, Tensor.Zeros(new Shape(8, 8))));
        Assert.Contains("bias", e2.Message);
    }

    [Fact]
    public void LayerNormRejectsNonPositiveEps()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Zeros(new Shape(2, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.LayerNorm(x, Tensor.Zeros(new Shape(4)), Tensor.Zeros(new Shape(4)), 0f));
    }

    [Fact]
    public void EmbeddingOutOfRangeIdNamesPositionValueAndVocabulary()
    {
        using var scope = TensorScope.Begin();
        var table = Tensor.Zeros(new Shape(65024, 2));
        var ids = Tensor.FromArray([5, 0, 65023, 70000, 1], new Shape(5));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Embedding(ids, table));
        Assert.Contains("ids[3] = 70000", e.Message);
        Assert.Contains("65024 rows", e.Message);
        var neg = Tensor.FromArray([-1], new Shape(1));
        Assert.Contains("ids[0] = -1", Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Embedding(neg, table)).Message);
    }

    [Fact]
    public void EmbeddingRejectsFloatIds()
    {
        using var scope = TensorScope.Begin();
        var e = Assert.Throws<ArgumentException>(() => Ops.Embedding(Tensor.Zeros(new Shape(3)), Tensor.Zeros(new Shape(4, 2))));
        Assert.Contains("ids", e.Message);
        Assert.Contains("I32", e.Message);
    }

    [Fact]
    public void CrossEntropyRejectsIntegerLogits()
    {
        using var scope = TensorScope.Begin();
        var logits = Tensor.FromArray([1, 2, 3, 4, 5, 6], new Shape(2, 3));
        var labels = Tensor.FromArray([0, 2], new Shape(2));
        var e = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, labels));
        Assert.Contains("logits", e.Message);
        Assert.Contains("I32", e.Message);
        Assert.Contains("must be F32", e.Message);
    }

    [Fact]
    public void CrossEntropyLabelOutOfRangeNamesRowAndValue()
    {
        using var scope = TensorScope.Begin();
        var logits = Tensor.Zeros(new Shape(3, 5));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, Tensor.FromArray([0, -100, 5], new Shape(3))));
        Assert.Contains("labels[2] = 5", e.Message);
        Assert.Contains("[0, 5)", e.Message);
        // -1 is out of range unless it is the ignore index.
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, Tensor.FromArray([-1, 0, 1], new Shape(3))));
        Assert.Equal(0f, Ops.CrossEntropy(Tensor.Zeros(new Shape(1, 5)), Tensor.FromArray([-1], new Shape(1)), ignoreIndex: -1).Item());
    }

    [Fact]
    public void CrossEntropyNaNLossThrowsNamingRows()
    {
        using var scope = TensorScope.Begin();
        var x = new float[4 * 6];
        x[1 * 6 + 3] = float.NaN;
        x[3 * 6 + 0] = float.PositiveInfinity;
        x[2 * 6 + 5] = float.NaN; // row 2 is ignored: its logits do not reach the loss
        var logits = Tensor.FromArray(x, new Shape(4, 6));
        var e = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, Tensor.FromArray([0, 1, -100, 2], new Shape(4))));
        Assert.Contains("not finite", e.Message);
        Assert.Contains("rows 1, 3 ", e.Message);
    }

    [Fact]
    public void CrossEntropyWithEveryLabelIgnoredIsZeroWithZeroGradient()
    {
        using var scope = TensorScope.Begin();
        var logits = Tensor.FromArray([1f, 2f, 3f, 4f], new Shape(2, 2));
        logits.RequiresGrad = true;
        var loss = Ops.CrossEntropy(logits, Tensor.FromArray([-100, -100], new Shape(2)));
        Assert.Equal(0f, loss.Item());
        loss.Backward();
        Assert.All(logits.Grad!.ToFloatArray(), g => Assert.Equal(0f, g));
    }
}
