using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Golden;

/// <summary>
/// Rotary, GLM attention and LoRA against the PyTorch fixtures (tools/reference/make_op_fixtures.py): forward and
/// every stored gradient. The fixtures are float64 results of float32 inputs; we compute in float32, so the
/// tolerance is 1e-5 relative plus a small absolute term for values that cancel to near zero.
/// </summary>
public class AttentionGoldenTests
{
    private const double Rtol = 1e-5, Atol = 1e-5;

    private static Tensor Leaf(SafeTensorsFile f, string name)
    {
        var t = f.Load(name);
        t.RequiresGrad = true;
        return t;
    }

    private static void Check(SafeTensorsFile f, string name, Tensor actual, double rtol = Rtol, double atol = Atol)
    {
        Assert.Equal(new Shape(f[name].Shape), actual.Shape);
        Fixture.AssertClose(f.Floats(name), actual.ToFloatArray(), rtol, atol, $"{Path.GetFileNameWithoutExtension(f.Path)}.{name}");
    }

    [Theory]
    [InlineData("rotary2d")]
    [InlineData("rotary2d_d128")]
    public void Rotary2DMatchesPyTorch(string fixture)
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops(fixture);
        var x = Leaf(f, "x");
        var y = Ops.Rotary2D(x, f.Load("position_ids"));
        Check(f, "y", y);
        y.Backward(f.Load("dout"));
        Check(f, "dx", x.Grad!);
    }

    [Fact]
    public void RotaryFixturePositionIdsFollowSpec()
    {
        // rotary2d's ids are §4.1 sequences: sample 0 ctx = 5, mask_pos = 4; sample 1 ctx = 3, mask_pos = 1.
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("rotary2d");
        var ids = PositionIds.Glm([5, 3], [4, 1], 7);
        Assert.Equal(f.Load("position_ids").ToIntArray(), ids.ToIntArray());
    }
}
