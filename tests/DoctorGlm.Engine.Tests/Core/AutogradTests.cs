using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine.Tests.Core;

public class AutogradTests
{
    private static Tensor Param(RandomGenerator rng, params int[] shape)
    {
        using var _ = TensorScope.Unscoped();
        var p = rng.Normal(new Shape(shape), 0.5f);
        p.RequiresGrad = true;
        return p;
    }

    [Fact]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        var rng = new RandomGenerator(1);
        var w = Param(rng, 3, 4);
        using var x = rng.Normal(new Shape(2, 4));
        using (TensorScope.Begin()) Ops.Sum(Ops.Linear(x, w)).Backward();
        var once = w.Grad!.ToFloatArray();
        using (TensorScope.Begin()) Ops.Sum(Ops.Linear(x, w)).Backward();
        var twice = w.Grad!.ToFloatArray();
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], twice[i], 5);
        // a tensor used twice in one graph gets both contributions
        w.Grad.Dispose(); w.Grad = null;
        using (TensorScope.Begin()) Ops.Sum(Ops.Add(Ops.Linear(x, w), Ops.Linear(x, w))).Backward();
        var both = w.Grad!.ToFloatArray();
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], both[i], 5);
    }

    [Fact]
    public void FrozenInputsGetNoGradientAndNoGraphUnderNoGrad()
    {
        var rng = new RandomGenerator(2);
        var w = Param(rng, 3, 4);
        using var frozen = rng.Normal(new Shape(3, 4));
        using var x = rng.Normal(new Shape(2, 4));
        using var scope = TensorScope.Begin();
        Ops.Sum(Ops.Add(Ops.Linear(x, w), Ops.Linear(x, frozen))).Backward();
        Assert.NotNull(w.Grad);
        Assert.Null(frozen.Grad);
        Assert.Null(x.Grad);
        using (GradMode.NoGrad())
        {
            var y = Ops.Linear(x, w);
            Assert.False(y.RequiresGrad);
            Assert.True(y.IsLeaf);
        }
        var err = Assert.Throws<InvalidOperationException>(() => Ops.Sum(Ops.Linear(x, frozen)).Backward());
        Assert.Contains("does not require a gradient", err.Message);
    }

    [Fact]
    public void CheckpointedBlockGivesTheSameGradientsAndReplaysRandomness()
    {
        var init = new RandomGenerator(3);
        var w1 = Param(init, 8, 6);
        var w2 = Param(init, 6, 8);
        using var x0 = init.Normal(new Shape(5, 6));
        x0.RequiresGrad = true;

        // The block draws fresh noise each call: the recomputation must see the same noise.
        Tensor Block(Tensor h, RandomGenerator noise)
        {
            var n = noise.Normal(h.Shape.With(-1, 8), 1f);
            var u = Ops.Mul(Ops.Linear(h, w1), n);
            return Ops.AddScaled(Ops.Linear(u, w2), 1f, h, 2f);
        }

        float[] Run(bool checkpoint)
        {
            var noise = new RandomGenerator(42);
            foreach (var p in new[] { w1, w2, x0 }) { p.Grad?.Dispose(); p.Grad = null; }
            using var scope = TensorScope.Begin();
            var h = checkpoint ? Checkpoint.Run(t => Block(t, noise), x0, noise) : Block(x0, noise);
            h = checkpoint ? Checkpoint.Run(t => Block(t, noise), h, noise) : Block(h, noise);
            Ops.Sum(Ops.Mul(h, h)).Backward();
            Assert.Equal(2UL, noise.Counter);
            return [.. w1.Grad!.ToFloatArray(), .. w2.Grad!.ToFloatArray(), .. x0.Grad!.ToFloatArray()];
        }

        var plain = Run(false);
        var ckpt = Run(true);
        Assert.Equal(plain.Length, ckpt.Length);
        for (int i = 0; i < plain.Length; i++) Assert.Equal(plain[i], ckpt[i], 4);
        Assert.Contains(plain, v => Math.Abs(v) > 1e-3);
    }

    /// <summary>
    /// A residual add passes its incoming gradient on unchanged (no copy), to both inputs when both scales are 1: each
    /// receiver then only borrows it, and so does a reshape's view of it further down. Here every receiver also gets
    /// a second contribution, in an order where adding it in place into a borrowed tensor would change the gradient
    /// another branch has yet to use; both input orders, against the closed form.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GradientsPassedOnUnchangedAreNeverWrittenThroughAnotherReceiver(bool swap)
    {
        var init = new RandomGenerator(5);
        var x = Param(init, 2, 3);
        using var c = init.Normal(new Shape(2, 3));
        using var d = init.Normal(new Shape(2, 3));
        using var f = init.Normal(new Shape(3, 2));
        using (TensorScope.Begin())
        {
            var u = Ops.Scale(x, 2f);
            var r = Ops.Scale(x, 3f).Reshape(3, 2);
            var v = r.Reshape(2, 3);
            var y = swap ? Ops.Add(v, u) : Ops.Add(u, v);
            // The engine runs the last input's branch first: y's backward hands u and v its gradient, v's reshape
            // hands r a view of it, and only then do r·f and u·d add their parts — r's first, while u still holds
            // the gradient r's view shares (AutogradEngine's order; a borrowed view written in place fails here).
            var loss = Ops.Add(Ops.Add(Ops.Sum(Ops.Mul(u, d)), Ops.Sum(Ops.Mul(r, f))), Ops.Sum(Ops.Mul(y, c)));
            loss.Backward();
        }
        // loss = Σ (u + v)·c + r·f + u·d with u = 2x, v = 3x, r = 3x viewed [3, 2].
        float[] cs = c.ToFloatArray(), ds = d.ToFloatArray(), fs = f.ToFloatArray(), grad = x.Grad!.ToFloatArray();
        for (int i = 0; i < grad.Length; i++)
            Assert.Equal(2 * (cs[i] + ds[i]) + 3 * (cs[i] + fs[i]), grad[i], 5);
    }

    [Fact]
    public void CheckpointedBlockWithFrozenInputStillTrainsItsParameters()
    {
        var init = new RandomGenerator(4);
        var w = Param(init, 4, 4);
        using var x = init.Normal(new Shape(3, 4)); // frozen input, like a frozen embedding's output
        using var scope = TensorScope.Begin();
        var y = Checkpoint.Run(t => Ops.Linear(t, w), x);
        Assert.True(y.RequiresGrad);
        Ops.Sum(y).Backward();
        Assert.NotNull(w.Grad);
        Assert.Null(x.Grad);
    }
}
