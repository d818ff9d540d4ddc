using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Optim;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Optim;

/// <summary>
/// AdamW and Lion against the PyTorch fixtures (fp64 reference rounded to fp32): params after each of 3 steps and
/// the state after step 3. Our update runs in fp32, so each element may differ from the fp64 result by a few ulps per
/// step: tolerance 1e-6 relative + 1e-7 absolute (the absolute part covers elements near zero, where relative error
/// is meaningless; params are ~N(0,1), so 1e-7 is about one fp32 ulp of a typical element).
/// </summary>
public class OptimizerGoldenTests
{
    private const double Rtol = 1e-6, Atol = 1e-7;

    internal static void SetGrad(Tensor p, Tensor g)
    {
        p.Grad?.Dispose();
        p.Grad = g;
    }

    [Fact]
    public void AdamWMatchesTorch()
    {
        using var f = Fixture.Ops("adamw");
        using var p = f.Load("param0");
        p.Name = "p";
        p.RequiresGrad = true;
        using var opt = new AdamW([("p", p)], lr: f.Meta("lr"), beta1: f.Meta("beta1"), beta2: f.Meta("beta2"), eps: f.Meta("eps"), weightDecay: f.Meta("weight_decay"));
        for (int i = 0; i < 3; i++)
        {
            SetGrad(p, f.Load($"grad{i}"));
            opt.Step();
            Fixture.AssertClose(f.Floats($"param{i + 1}"), p.ToFloatArray(), Rtol, Atol, $"adamw param after step {i + 1}");
        }
        Assert.Equal(3, opt.StepCount);
        // exp_avg ~ 0.1·|g| and exp_avg_sq ~ 1e-3·g²: scale the absolute floor with them.
        Fixture.AssertClose(f.Floats("exp_avg"), opt.GetState("p", "exp_avg")!.ToFloatArray(), Rtol, 1e-9, "adamw exp_avg");
        Fixture.AssertClose(f.Floats("exp_avg_sq"), opt.GetState("p", "exp_avg_sq")!.ToFloatArray(), Rtol, 1e-12, "adamw exp_avg_sq");
        p.Grad?.Dispose();
    }

    [Fact]
    public void LionMatchesLucidrains()
    {
        using var f = Fixture.Ops("lion");
        using var p = f.Load("param0");
        p.RequiresGrad = true;
        using var opt = new Lion([("p", p)], lr: f.Meta("lr"), beta1: f.Meta("beta1"), beta2: f.Meta("beta2"), weightDecay: f.Meta("weight_decay"));
        for (int i = 0; i < 3; i++)
        {
            SetGrad(p, f.Load($"grad{i}"));
            opt.Step();
            Fixture.AssertClose(f.Floats($"param{i + 1}"), p.ToFloatArray(), Rtol, Atol, $"lion param after step {i + 1}");
        }
        Fixture.AssertClose(f.Floats("exp_avg"), opt.GetState("p", "exp_avg")!.ToFloatArray(), Rtol, 1e-9, "lion exp_avg");
        p.Grad?.Dispose();
    }

    [Fact]
    public void DefaultsAreTorchAndLionPytorch()
    {
        using var p = Tensor.Zeros(new Shape(2));
        p.RequiresGrad = true;
        using var a = new AdamW([("p", p)]);
        Assert.Equal((1e-3, 0.9, 0.999, 1e-8, 0.01), (a.LearningRate, a.Beta1, a.Beta2, a.Eps, a.WeightDecay));
        using var l = new Lion([("p", p)]);
        Assert.Equal((1e-4, 0.9, 0.99, 0.0), (l.LearningRate, l.Beta1, l.Beta2, l.WeightDecay));
    }
}
