using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Optim;

namespace DoctorGlm.Engine.Tests.Optim;

/// <summary>Frozen/skipped parameters, state save/load (bit-identical resume) and load errors.</summary>
public sealed class OptimizerStateTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("optim-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] RandomFloats(int seed, int n, float scale = 1f)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    private static Tensor NewParam(float[] data, Shape shape, bool trainable = true) =>
        Tensor.FromArray(data, shape) is var t ? SetTrainable(t, trainable) : null!;

    private static Tensor SetTrainable(Tensor t, bool trainable) { t.RequiresGrad = trainable; return t; }

    private static Optimizer Make(string kind, IEnumerable<(string, Tensor)> ps) => kind switch
    {
        "AdamW" => new AdamW(ps, lr: 1e-2, weightDecay: 0.1),
        _ => new Lion(ps, lr: 1e-3, weightDecay: 0.1),
    };

    /// <summary>A little model: "a" [37,5] and "b" [11] trainable, "c" [4] frozen; "b" gets no gradient on step 0.</summary>
    private sealed class Model : IDisposable
    {
        public readonly Tensor A, B, C;
        public Model(float[]? a = null, float[]? b = null, float[]? c = null)
        {
            A = NewParam(a ?? RandomFloats(1, 185), new Shape(37, 5));
            B = NewParam(b ?? RandomFloats(2, 11), new Shape(11));
            C = NewParam(c ?? RandomFloats(3, 4), new Shape(4), trainable: false);
        }
        public (string, Tensor)[] Named => [("a", A), ("b", B), ("c", C)];
        public void Grads(int step)
        {
            OptimizerGoldenTests.SetGrad(A, Tensor.FromArray(RandomFloats(100 + step, 185, 0.5f), A.Shape));
            if (step == 0) { B.Grad?.Dispose(); B.Grad = null; }
            else OptimizerGoldenTests.SetGrad(B, Tensor.FromArray(RandomFloats(200 + step, 11, 0.5f), B.Shape));
            // A gradient on a frozen tensor must still be ignored.
            OptimizerGoldenTests.SetGrad(C, Tensor.FromArray(RandomFloats(300 + step, 4), C.Shape));
        }
        public void Dispose() { foreach (var t in new[] { A, B, C }) { t.Grad?.Dispose(); t.Dispose(); } }
    }

    private static void RunSteps(Optimizer opt, Model m, int from, int to)
    {
        var schedule = LrSchedule.CosineWithWarmup(opt is AdamW ? 1e-2 : 1e-3, 2, 8);
        for (int s = from; s < to; s++)
        {
            using var scope = TensorScope.Begin(); // state must outlive the step's scope
            m.Grads(s);
            schedule.Apply(opt, s);
            opt.Step();
        }
    }

    [Theory]
    [InlineData("AdamW")]
    [InlineData("Lion")]
    public void SaveLoadResumeIsBitIdentical(string kind)
    {
        using var straight = new Model();
        using (var opt = Make(kind, straight.Named)) RunSteps(opt, straight, 0, 6);

        using var first = new Model();
        string path = Path.Combine(_dir, kind + ".safetensors");
        double lr;
        using (var opt = Make(kind, first.Named))
        {
            RunSteps(opt, first, 0, 3);
            lr = opt.LearningRate;
            opt.SaveState(path);
        }
        // A fresh process: parameters restored from their values, optimizer built with other settings, then loaded.
        using var resumed = new Model(first.A.ToFloatArray(), first.B.ToFloatArray(), first.C.ToFloatArray());
        using (var opt = kind == "AdamW" ? (Optimizer)new AdamW(resumed.Named, lr: 5, beta1: 0.5) : new Lion(resumed.Named, lr: 5, beta1: 0.5))
        {
            opt.LoadState(path);
            Assert.Equal(3, opt.StepCount);
            Assert.Equal(lr, opt.LearningRate);
            RunSteps(opt, resumed, 3, 6);
        }
        Assert.Equal(straight.A.ToBytes(), resumed.A.ToBytes());
        Assert.Equal(straight.B.ToBytes(), resumed.B.ToBytes());
        Assert.Equal(straight.C.ToBytes(), resumed.C.ToBytes());
        // Sanity: the run did move the parameters.
        Assert.NotEqual(RandomFloats(1, 185), straight.A.ToFloatArray());
    }

    [Fact]
    public void FrozenAndGradlessParametersAreSkipped()
    {
        using var m = new Model();
        var c0 = m.C.ToBytes();
        var b0 = m.B.ToBytes();
        using var opt = new AdamW(m.Named);
        Assert.Equal(["a", "b"], opt.Parameters.Select(p => p.Name));
        RunSteps(opt, m, 0, 1); // step 0: b has no gradient
        Assert.Equal(b0, m.B.ToBytes());
        Assert.Null(opt.GetState("b", "exp_avg"));
        Assert.NotNull(opt.GetState("a", "exp_avg"));
        Assert.Throws<KeyNotFoundException>(() => opt.GetState("c", "exp_avg"));
        RunSteps(opt, m, 1, 3);
        Assert.NotEqual(b0, m.B.ToBytes());
        Assert.Equal(c0, m.C.ToBytes());
        string path = Path.Combine(_dir, "frozen.safetensors");
        opt.SaveState(path);
        using var f = SafeTensorsFile.Open(path);
        Assert.DoesNotContain(f.Entries, e => e.Name.StartsWith("c.", StringComparison.Ordinal));
        Assert.Equal(["a.exp_avg", "a.exp_avg_sq", "a.step", "b.exp_avg", "b.exp_avg_sq", "b.step"], f.Entries.Select(e => e.Name).Order());
        // b missed step 0, so its own step count (bias corrections) is one behind the optimizer's.
        Assert.Equal("3", f.Metadata["step"]);
        var bytes = new byte[4];
        f.ReadBytes("b.step", bytes);
        Assert.Equal(2, BitConverter.ToInt32(bytes));
    }

    [Fact]
    public void DisposedGradientOrLaterFreezeSkipsTheStep()
    {
        using var m = new Model();
        using var opt = new Lion(m.Named, lr: 1e-2);
        m.Grads(1);
        m.A.Grad!.Dispose();          // e.g. its scope ended: treated like no gradient, as autograd does
        m.B.RequiresGrad = false;     // frozen after the optimizer was built: not updated either
        var a0 = m.A.ToBytes();
        var b0 = m.B.ToBytes();
        opt.Step();
        Assert.Equal(a0, m.A.ToBytes());
        Assert.Equal(b0, m.B.ToBytes());
        Assert.Null(opt.GetState("a", "exp_avg"));
        Assert.Null(opt.GetState("b", "exp_avg"));
        Assert.Equal(1, opt.StepCount);
    }

    [Fact]
    public void ZeroGradClearsOrZeroes()
    {
        using var m = new Model();
        using var opt = new Lion(m.Named);
        m.Grads(1);
        opt.ZeroGrad(setToNone: false);
        Assert.All(m.A.Grad!.ToFloatArray(), v => Assert.Equal(0f, v));
        opt.ZeroGrad();
        Assert.Null(m.A.Grad);
        Assert.Null(m.B.Grad);
    }

    private string SavedAdamW(Shape aShape, string name = "w.safetensors")
    {
        using var a = NewParam(RandomFloats(5, (int)aShape.NumElements), aShape);
        a.Grad = Tensor.FromArray(RandomFloats(6, (int)aShape.NumElements), aShape);
        using var opt = new AdamW([("w", a)]);
        opt.Step();
        string path = Path.Combine(_dir, name);
        opt.SaveState(path);
        a.Grad.Dispose();
        return path;
    }

    [Fact]
    public void LoadRejectsWrongShapeNamingFileAndKey()
    {
        string path = SavedAdamW(new Shape(3, 4));
        using var w = NewParam(new float[12], new Shape(4, 3));
        using var opt = new AdamW([("w", w)]);
        var e = Assert.Throws<InvalidDataException>(() => opt.LoadState(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("'w.exp_avg'", e.Message);
        Assert.Contains("[3, 4]", e.Message);
        Assert.Equal(0, opt.StepCount); // untouched
    }

    [Fact]
    public void LoadRejectsMissingKeyNamingFileAndKey()
    {
        string path = SavedAdamW(new Shape(6));
        // Rewrite the file without one buffer, keeping the metadata.
        string broken = Path.Combine(_dir, "broken.safetensors");
        using (var f = SafeTensorsFile.Open(path))
        {
            var kept = f.Entries.Where(e => e.Name != "w.exp_avg_sq").Select(e => new KeyValuePair<string, Tensor>(e.Name, f.Load(e.Name))).ToList();
            SafeTensorsFile.Save(broken, kept, f.Metadata);
            foreach (var kv in kept) kv.Value.Dispose();
        }
        using var w = NewParam(new float[6], new Shape(6));
        using var opt = new AdamW([("w", w)]);
        var e = Assert.Throws<InvalidDataException>(() => opt.LoadState(broken));
        Assert.Contains(broken, e.Message);
        Assert.Contains("'w.exp_avg_sq'", e.Message);
    }

    [Fact]
    public void LoadRejectsOtherOptimizerAndOtherParameters()
    {
        string path = SavedAdamW(new Shape(6));
        using var w = NewParam(new float[6], new Shape(6));
        using var v = NewParam(new float[6], new Shape(6));
        using (var lion = new Lion([("w", w)]))
        {
            var e = Assert.Throws<InvalidDataException>(() => lion.LoadState(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("'optimizer'", e.Message);
        }
        using (var renamed = new AdamW([("v", v)]))
        {
            var e = Assert.Throws<InvalidDataException>(() => renamed.LoadState(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("'w'", e.Message);
        }
        using (var more = new AdamW([("w", w), ("v", v)]))
        {
            var e = Assert.Throws<InvalidDataException>(() => more.LoadState(path));
            Assert.Contains("'v'", e.Message);
        }
    }
}
