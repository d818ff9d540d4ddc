using System.Reflection;
using DoctorGlm.Engine.Backends;

namespace DoctorGlm.Engine.Tests.Harness;

/// <summary>
/// Runs every registered op case on every backend present: forward against the double-precision reference, and
/// every differentiable input's gradient against central finite differences of that reference.
/// </summary>
[Collection(Cuda.GpuCollection.Name)]
public class OpHarnessTests
{
    private static readonly Lazy<Dictionary<string, OpCase>> s_cases = new(() =>
        typeof(OpHarnessTests).Assembly.GetTypes()
            .Where(t => typeof(IOpCases).IsAssignableFrom(t) && t is { IsClass: true, IsAbstract: false })
            .SelectMany(t => ((IOpCases)Activator.CreateInstance(t)!).Cases)
            .ToDictionary(c => c.Name));

    public static TheoryData<string, int, string> AllCases()
    {
        var data = new TheoryData<string, int, string>();
        foreach (var backend in BackendRegistry.All.OrderBy(b => b.Device.ToString()))
            foreach (var c in s_cases.Value.Values.OrderBy(c => c.Name))
                for (int seed = 0; seed < c.Seeds; seed++)
                    data.Add(c.Name, seed, backend.Device.ToString());
        return data;
    }

    [Fact]
    public void EveryFamilyRegistersCases() => Assert.True(s_cases.Value.Count >= 10, $"only {s_cases.Value.Count} op cases registered");

    [Theory]
    [MemberData(nameof(AllCases))]
    public void ForwardAndGradients(string caseName, int seed, string device)
    {
        var backend = BackendRegistry.All.Single(b => b.Device.ToString() == device);
        var inst = s_cases.Value[caseName].Create(new Random(1000 * seed + caseName.Length * 7919 + StableHash(caseName) % 1000));
        Check(inst, backend.Device, $"{caseName} seed {seed} on {device}");
    }

    /// <summary>
    /// FNV-1a over the name's characters: the same in every process, so a case's inputs are too and a failure
    /// reproduces (string.GetHashCode is randomised per process; it made every run draw new inputs).
    /// </summary>
    internal static int StableHash(string s)
    {
        uint h = 2166136261;
        foreach (char c in s) h = (h ^ c) * 16777619;
        return (int)(h & 0x7fffffff);
    }

    /// <summary>The harness body, usable from other tests.</summary>
    internal static void Check(OpInstance inst, Device device, string label)
    {
        using var scope = TensorScope.Begin();
        var tensors = inst.Inputs.Select(i => MakeTensor(i, device)).ToArray();
        var output = inst.Forward(tensors);
        Assert.True(output.DType == inst.OutputDType, $"{label}: the op returned {output.DType}, expected {inst.OutputDType}");
        // A 16-bit activation output is compared (and weighted for the gradient check) as fp32; gradients pass
        // through the cast unchanged, so the finite-difference check still judges the op's own backward.
        if (output.DType != DType.F32) output = Ops.Cast(output, DType.F32);
        var host = inst.Inputs.Select(i => i.Data).ToArray();
        var reference = inst.Reference(host);
        var ours = output.ToFloatArray();
        Assert.True(ours.Length == reference.Length, $"{label}: output has {ours.Length} elements, reference {reference.Length}");
        double refMax = reference.Select(Math.Abs).DefaultIfEmpty(0).Max();
        for (int i = 0; i < ours.Length; i++)
        {
            double err = Math.Abs(ours[i] - reference[i]);
            Assert.True(err <= inst.ForwardTolerance * (refMax + 1), $"{label}: output[{i}] = {ours[i]}, reference {reference[i]} (|err| {err:E2})");
        }

        if (!inst.Inputs.Any(i => i.Differentiable)) return;
        // Random output weights make the scalar loss sensitive to every output element.
        var wRng = new Random(reference.Length);
        var w = Enumerable.Range(0, reference.Length).Select(_ => (double)(float)OpInput.Gauss(wRng)).ToArray();
        using var wt = Tensor.FromArray(w.Select(x => (float)x).ToArray(), output.Shape, DType.F32, device);
        var loss = Ops.Sum(Ops.Mul(output, wt));
        loss.Backward();

        double Loss(double[][] xs)
        {
            var y = inst.Reference(xs);
            double s = 0;
            for (int i = 0; i < y.Length; i++) s += y[i] * w[i];
            return s;
        }

        for (int k = 0; k < inst.Inputs.Length; k++)
        {
            var input = inst.Inputs[k];
            if (!input.Differentiable) continue;
            var grad = tensors[k].Grad;
            Assert.True(grad is not null, $"{label}: input '{input.Name}' got no gradient");
            var analytic = grad!.ToFloatArray();
            var fd = new double[input.Data.Length];
            var xs = host.Select(a => (double[])a.Clone()).ToArray();
            for (int j = 0; j < fd.Length; j++)
            {
                double orig = xs[k][j];
                double h = inst.Step * Math.Max(1, Math.Abs(orig));
                xs[k][j] = orig + h; double lp = Loss(xs);
                xs[k][j] = orig - h; double lm = Loss(xs);
                xs[k][j] = orig;
                fd[j] = (lp - lm) / (2 * h);
            }
            double fdMax = fd.Select(Math.Abs).DefaultIfEmpty(0).Max();
            for (int j = 0; j < fd.Length; j++)
            {
                double err = Math.Abs(analytic[j] - fd[j]);
                Assert.True(err <= inst.GradTolerance * (fdMax + inst.GradScaleFloor),
                    $"{label}: d/d{input.Name}[{j}] = {analytic[j]}, finite differences {fd[j]} (|err| {err:E2}, max|fd| {fdMax:E2})");
            }
            grad.Dispose();
            tensors[k].Grad = null;
        }
    }

    private static Tensor MakeTensor(OpInput i, Device device)
    {
        var t = i.DType switch
        {
            DType.F32 => Tensor.FromArray(i.Data.Select(v => (float)v).ToArray(), new Shape(i.Shape), DType.F32, device),
            DType.BF16 or DType.F16 => Tensor.FromArray(i.Data.Select(v => (float)v).ToArray(), new Shape(i.Shape), i.DType, device),
            DType.I32 => Tensor.FromArray(i.Data.Select(v => (int)v).ToArray(), new Shape(i.Shape), device),
            DType.U8 => Tensor.FromArray(i.Data.Select(v => (byte)v).ToArray(), new Shape(i.Shape), device),
            _ => throw new NotSupportedException(i.DType.ToString()),
        };
        t.Name = i.Name;
        t.RequiresGrad = i.Differentiable;
        return t;
    }
}
