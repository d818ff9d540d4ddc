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
}
