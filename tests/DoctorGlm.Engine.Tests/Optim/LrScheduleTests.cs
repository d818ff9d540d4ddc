using DoctorGlm.Engine.Optim;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Optim;

/// <summary>Schedules against transformers' formulas stored in F64 by the fixture: 1e-12 relative (1e-18 absolute for the zeros).</summary>
public class LrScheduleTests
{
    [Theory]
    [InlineData("linear")]
    [InlineData("cosine")]
    [InlineData("constant_warmup")]
    public void MatchesTransformers(string name)
    {
        using var f = Fixture.Ops("lr_schedules");
        double baseLr = f.Meta("base_lr");
        int warmup = (int)f.Meta("warmup_steps"), total = (int)f.Meta("total_steps");
        var schedule = name switch
        {
            "linear" => LrSchedule.LinearWithWarmup(baseLr, warmup, total),
            "cosine" => LrSchedule.CosineWithWarmup(baseLr, warmup, total, f.Meta("num_cycles")),
            _ => LrSchedule.ConstantWithWarmup(baseLr, warmup),
        };
        var expected = f.ReadDoubles(name);
        Assert.Equal(total, expected.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double got = schedule.LearningRate(i);
            Assert.True(Math.Abs(got - expected[i]) <= 1e-12 * Math.Abs(expected[i]) + 1e-18, $"{name}[{i}] = {got:R}, expected {expected[i]:R}");
        }
    }

    [Fact]
    public void ConstantAndApply()
    {
        var s = LrSchedule.Constant(2e-4);
        Assert.Equal(2e-4, s.LearningRate(0));
        Assert.Equal(2e-4, s.LearningRate(1000));
        using var p = Tensor.Zeros(new Shape(1));
        p.RequiresGrad = true;
        using var opt = new AdamW([("p", p)]);
        LrSchedule.LinearWithWarmup(1e-3, 10, 100).Apply(opt, 5);
        Assert.Equal(5e-4, opt.LearningRate, 15);
        // Past the end the decaying schedules stay at 0 rather than going negative.
        Assert.Equal(0.0, LrSchedule.LinearWithWarmup(1e-3, 10, 100).LearningRate(150));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.LearningRate(-1));
    }
}
