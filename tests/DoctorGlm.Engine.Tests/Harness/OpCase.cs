namespace DoctorGlm.Engine.Tests.Harness;

/// <summary>
/// A class that registers op test cases with the harness (found by reflection, in the spirit of ggml's
/// test-backend-ops): one implementation per op family, in <c>OpCases/</c>.
/// </summary>
public interface IOpCases
{
    /// <summary>The cases of this family.</summary>
    IEnumerable<OpCase> Cases { get; }
}

/// <summary>One registered op test: makes random instances (random shapes, odd sizes included, random data).</summary>
/// <param name="Name">Unique case name (family.variant).</param>
/// <param name="Create">Builds an instance from a seeded random source.</param>
public sealed record OpCase(string Name, Func<Random, OpInstance> Create)
{
    /// <summary>How many random instances (seeds) the harness runs.</summary>
    public int Seeds { get; init; } = 3;
}

/// <summary>An input of an op instance, as host data.</summary>
public sealed class OpInput
{
    /// <summary>Name used in failure messages.</summary>
    public required string Name { get; init; }
    /// <summary>Shape.</summary>
    public required int[] Shape { get; init; }
    /// <summary>Values (ints and mask bytes stored as doubles).</summary>
    public required double[] Data { get; init; }
    /// <summary>F32 (default), BF16 or F16 (an activation kept in 16 bits: <see cref="Data"/> must hold values of that type, see <see cref="Rounded"/>), I32 or U8.</summary>
    public DType DType { get; init; } = DType.F32;
    /// <summary>Whether the harness checks this input's gradient (and sets RequiresGrad on it).</summary>
    public bool Differentiable { get; init; }

    /// <summary>A random normal F32 input.</summary>
    public static OpInput Randn(Random rng, string name, int[] shape, bool grad = true, double std = 1.0) => new()
    {
        Name = name, Shape = shape, Differentiable = grad,
        Data = Enumerable.Range(0, shape.Aggregate(1, (a, b) => a * b)).Select(_ => std * Gauss(rng)).Select(v => (double)(float)v).ToArray(),
    };

    /// <summary>
    /// This input stored as a 16-bit activation: the values rounded to <paramref name="dtype"/> (so the double
    /// reference sees exactly what the op reads) and the tensor made with that dtype.
    /// </summary>
    public OpInput Rounded(DType dtype) => new()
    {
        Name = Name, Shape = Shape, Differentiable = Differentiable, DType = dtype,
        Data = Data.Select(v => (double)RoundTo(dtype, (float)v)).ToArray(),
    };

    /// <summary>A float rounded to nearest even in a 16-bit float type (F32: unchanged).</summary>
    public static float RoundTo(DType dtype, float v) => dtype switch
    {
        DType.BF16 => HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(v)),
        DType.F16 => HalfConvert.F16ToFloat(HalfConvert.FloatToF16(v)),
        _ => v,
    };

    /// <summary>Standard normal sample.</summary>
    public static double Gauss(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}

/// <summary>A concrete instance: inputs, the engine op, and an independent double-precision reference.</summary>
public sealed class OpInstance
{
    /// <summary>Inputs in the order <see cref="Forward"/> and <see cref="Reference"/> take them.</summary>
    public required OpInput[] Inputs { get; init; }

    /// <summary>The engine op applied to device tensors (one per input).</summary>
    public required Func<Tensor[], Tensor> Forward { get; init; }

    /// <summary>The same math written independently in double precision, on host arrays (one per input).</summary>
    public required Func<double[][], double[]> Reference { get; init; }

    /// <summary>Forward check: |ours − ref| ≤ tol·(max|ref| + 1) per element (fp32 against double).</summary>
    public double ForwardTolerance { get; init; } = 2e-5;

    /// <summary>The dtype the op must return (16-bit activation cases: the activation's type).</summary>
    public DType OutputDType { get; init; } = DType.F32;

    /// <summary>
    /// The forward tolerance for an output stored in <paramref name="dtype"/>: fp32's, or twice the half-ulp of one
    /// rounding to bf16 (2⁻⁹ relative) or fp16 (2⁻¹¹) — the one rounding a 16-bit activation output may add.
    /// </summary>
    public static double OutputTolerance(DType dtype) => dtype switch { DType.BF16 => 4e-3, DType.F16 => 1e-3, _ => 2e-5 };

    /// <summary>Gradient check: |ours − fd| ≤ tol·(max|fd| + <see cref="GradScaleFloor"/>) per element.</summary>
    public double GradTolerance { get; init; } = 1e-4;

    /// <summary>
    /// The absolute scale added to max|fd| in the gradient bound (default 1e-2): an op whose rounding error does not
    /// shrink with the gradient (16-bit attention's Σ dO·O over a rounded output) states the scale of its inputs.
    /// </summary>
    public double GradScaleFloor { get; init; } = 1e-2;

    /// <summary>Finite-difference step (the reference is double, so a small step is accurate).</summary>
    public double Step { get; init; } = 1e-5;
}
