namespace DoctorGlm.Engine.Tests.Core;

/// <summary>Statistical and reproducibility properties of <see cref="Ops.Dropout"/> (its exact values are checked by the op harness).</summary>
public class DropoutTests
{
    private const int N = 100_000;

    private static Tensor Ones() => Tensor.Full(new Shape(100, 1000), 1f);

    [Theory]
    [InlineData(0.1f)]
    [InlineData(0.5f)]
    [InlineData(0.9f)]
    public void KeptFractionIsCloseToOneMinusP(float p)
    {
        using var scope = TensorScope.Begin();
        var y = Ops.Dropout(Ones(), p, new RandomGenerator(7)).ToFloatArray();
        float scale = 1f / (1f - p);
        Assert.All(y, v => Assert.True(v == 0f || v == scale, $"value {v} is neither 0 nor 1/(1−p) = {scale}"));
        double kept = y.Count(v => v != 0f) / (double)N;
        // Binomial standard deviation √(p(1−p)/N) ≤ 0.0016; 5σ keeps the test deterministic-safe yet sharp.
        double sigma = Math.Sqrt(p * (1 - p) / N);
        Assert.True(Math.Abs(kept - (1 - p)) < 5 * sigma, $"kept {kept:F4}, expected {1 - p:F4} ± {5 * sigma:F4}");
    }

    [Fact]
    public void SameStreamGivesSameMaskAndNextCallDiffers()
    {
        using var scope = TensorScope.Begin();
        var a = Ops.Dropout(Ones(), 0.5f, new RandomGenerator(42)).ToFloatArray();
        var b = Ops.Dropout(Ones(), 0.5f, new RandomGenerator(42)).ToFloatArray();
        Assert.Equal(a, b);
        var rng = new RandomGenerator(42);
        var first = Ops.Dropout(Ones(), 0.5f, rng).ToFloatArray();
        var second = Ops.Dropout(Ones(), 0.5f, rng).ToFloatArray();
        Assert.Equal(a, first);
        Assert.NotEqual(first, second);
        Assert.Equal(2UL, rng.Counter); // one stream per call
    }

    [Fact]
    public void BackwardAppliesTheSameMaskAndScale()
    {
        using var scope = TensorScope.Begin();
        var rng = new RandomGenerator(3);
        var x = new RandomGenerator(11).Normal(new Shape(100, 1000));
        x.RequiresGrad = true;
        var y = Ops.Dropout(x, 0.25f, rng);
        var dy = new RandomGenerator(12).Normal(new Shape(100, 1000));
        y.Backward(dy);
        var xs = x.ToFloatArray();
        var ys = y.ToFloatArray();
        var g = x.Grad!.ToFloatArray();
        var d = dy.ToFloatArray();
        float scale = 1f / 0.75f;
        for (int i = 0; i < N; i++)
        {
            bool keep = ys[i] != 0f || xs[i] == 0f;
            Assert.True(g[i] == (keep ? d[i] * scale : 0f), $"dx[{i}] = {g[i]}, expected {(keep ? d[i] * scale : 0f)} (kept: {keep})");
        }
        Assert.Equal(1UL, rng.Counter); // backward drew no new stream
    }

    [Fact]
    public void ZeroPOrEvaluationReturnsInputUnchanged()
    {
        using var scope = TensorScope.Begin();
        var x = Ones();
        var rng = new RandomGenerator(1);
        Assert.Same(x, Ops.Dropout(x, 0f, rng));
        Assert.Same(x, Ops.Dropout(x, 0.5f, rng, training: false));
        Assert.Equal(0UL, rng.Counter);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Dropout(x, 1f, rng));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Dropout(x, float.NaN, rng));
    }
}
