using DoctorGlm.Engine.Optim;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Optim;

/// <summary>clip_grad_norm_ against the PyTorch fixture (fp64 reference): norm and clipped grads within 1e-6 relative.</summary>
public class GradientClippingTests
{
    private static Tensor Param(Tensor grad, string name)
    {
        var p = Tensor.Zeros(grad.Shape);
        p.Name = name;
        p.RequiresGrad = true;
        p.Grad = grad;
        return p;
    }

    [Fact]
    public void MatchesTorch()
    {
        using var f = Fixture.Ops("clip_grad_norm");
        using var p0 = Param(f.Load("grad0"), "g0");
        using var p1 = Param(f.Load("grad1"), "g1");
        using var noGrad = Tensor.Zeros(new Shape(3)); // no gradient: ignored, as torch filters p.grad is None
        double total = GradientClipping.ClipByGlobalNorm([p0, noGrad, p1], (float)f.Meta("max_norm"));
        double expected = f.ReadDoubles("total_norm")[0];
        Assert.True(Math.Abs(total - expected) <= 1e-6 * expected, $"total norm {total}, expected {expected}");
        Fixture.AssertClose(f.Floats("clipped0"), p0.Grad!.ToFloatArray(), 1e-6, 1e-9, "clipped0");
        Fixture.AssertClose(f.Floats("clipped1"), p1.Grad!.ToFloatArray(), 1e-6, 1e-9, "clipped1");
        p0.Grad.Dispose(); p1.Grad.Dispose();
    }

    [Fact]
    public void SmallNormIsLeftAlone()
    {
        using var p = Param(Tensor.FromArray([0.3f, -0.4f], new Shape(2)), "w");
        double total = GradientClipping.ClipByGlobalNorm([p], 1f);
        Assert.Equal(Math.Sqrt((double)0.3f * 0.3f + (double)0.4f * 0.4f), total, 15);
        Assert.Equal([0.3f, -0.4f], p.Grad!.ToFloatArray());
        p.Grad.Dispose();
    }

    [Fact]
    public void NonFiniteGradientNamesTheParameter()
    {
        using var ok = Param(Tensor.FromArray([1f, 2f], new Shape(2)), "fine");
        using var bad = Param(Tensor.FromArray([1f, float.NaN, float.PositiveInfinity], new Shape(3)), "layers.3.lora_b");
        var e = Assert.Throws<InvalidOperationException>(() => GradientClipping.ClipByGlobalNorm([ok, bad], 1f));
        Assert.Contains("layers.3.lora_b", e.Message);
        Assert.Contains("2 non-finite", e.Message);
        Assert.Equal([1f, 2f], ok.Grad!.ToFloatArray()); // nothing was scaled
        ok.Grad.Dispose(); bad.Grad!.Dispose();
    }
}
