using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Golden;

/// <summary>
/// LayerNorm, GELU, embedding and cross-entropy against the PyTorch fixtures (tools/reference): forward and every
/// gradient. The fixtures are float64 results rounded to fp32; ours are fp32 computations, so the tolerance is
/// rtol 1e-5 + atol 1e-6 (a few fp32 ulps of the values involved).
/// </summary>
public class NormGoldenTests
{
    private const double Rtol = 1e-5, Atol = 1e-6;

    [Fact]
    public void LayerNormMatchesTorch()
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("layer_norm");
        var x = f.Load("x"); x.RequiresGrad = true;
        var w = f.Load("weight"); w.RequiresGrad = true;
        var b = f.Load("bias"); b.RequiresGrad = true;
        var y = Ops.LayerNorm(x, w, b, (float)f.Meta("eps"));
        Fixture.AssertClose(f.Floats("y"), y.ToFloatArray(), Rtol, Atol, "layer_norm y");
        y.Backward(f.Load("dout"));
        Fixture.AssertClose(f.Floats("dx"), x.Grad!.ToFloatArray(), Rtol, Atol, "layer_norm dx");
        Fixture.AssertClose(f.Floats("dweight"), w.Grad!.ToFloatArray(), Rtol, Atol, "layer_norm dweight");
        Fixture.AssertClose(f.Floats("dbias"), b.Grad!.ToFloatArray(), Rtol, Atol, "layer_norm dbias");
    }

    [Fact]
    public void GeluMatchesTorch()
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("gelu");
        var x = f.Load("x"); x.RequiresGrad = true;
        var y = Ops.Gelu(x);
        Fixture.AssertClose(f.Floats("y"), y.ToFloatArray(), Rtol, Atol, "gelu y");
        y.Backward(f.Load("dout"));
        Fixture.AssertClose(f.Floats("dx"), x.Grad!.ToFloatArray(), Rtol, Atol, "gelu dx");
    }

    [Fact]
    public void EmbeddingMatchesTorch()
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("embedding");
        var table = f.Load("table"); table.RequiresGrad = true;
        var ids = f.Load("ids");
        Assert.True(ids.ToIntArray().Distinct().Count() < ids.NumElements, "the fixture is meant to repeat ids");
        var y = Ops.Embedding(ids, table);
        Assert.Equal(new Shape(10, 6), y.Shape);
        Fixture.AssertClose(f.Floats("y"), y.ToFloatArray(), Rtol, Atol, "embedding y");
        y.Backward(f.Load("dout"));
        Fixture.AssertClose(f.Floats("dtable"), table.Grad!.ToFloatArray(), Rtol, Atol, "embedding dtable");
    }

    [Fact]
    public void CrossEntropyMatchesTorch()
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("cross_entropy");
        var logits = f.Load("logits"); logits.RequiresGrad = true;
        var labels = f.Load("labels");
        var loss = Ops.CrossEntropy(logits, labels, -100);
        Fixture.AssertClose(f.Floats("loss"), loss.ToFloatArray(), Rtol, Atol, "cross_entropy loss");
        loss.Backward();
        var d = logits.Grad!.ToFloatArray();
        Fixture.AssertClose(f.Floats("dlogits"), d, Rtol, Atol, "cross_entropy dlogits");
        // The fixture ignores rows 1, 6 and 10: their gradient rows are exactly zero.
        foreach (int row in new[] { 1, 6, 10 })
            Assert.All(d.AsSpan(row * 53, 53).ToArray(), g => Assert.Equal(0f, g));
    }
}
