namespace DoctorGlm.Engine;

/// <summary>
/// Differentiable tensor operations. Each op validates its arguments (naming the tensor, shape or index that is
/// wrong), allocates its outputs in the current <see cref="TensorScope"/>, runs the kernel on the inputs'
/// backend, and records its backward function when a gradient is needed. One file per op family.
/// </summary>
public static partial class Ops
{
    /// <summary>Throws unless every tensor is on the same device as the first.</summary>
    internal static void SameDevice(string op, params (string Name, Tensor? T)[] ts)
    {
        Device? d = null;
        string? first = null;
        foreach (var (name, t) in ts)
        {
            if (t is null) continue;
            t.ThrowIfDisposed();
            if (d is null) { d = t.Device; first = name; }
            else if (t.Device != d) throw new ArgumentException($"{op}: {name} is on {t.Device} but {first} is on {d}");
        }
    }

    /// <summary>Throws unless <paramref name="t"/> has dtype <paramref name="want"/>.</summary>
    internal static void ExpectDType(string op, string name, Tensor t, DType want)
    {
        if (t.DType != want) throw new ArgumentException($"{op}: {t.Describe(name)} must be {want}");
    }

    /// <summary>Throws unless <paramref name="t"/> has exactly <paramref name="shape"/>.</summary>
    internal static void ExpectShape(string op, string name, Tensor t, Shape shape, string why = "")
    {
        if (t.Shape != shape) throw new ArgumentException($"{op}: {t.Describe(name)} must have shape {shape}{(why.Length > 0 ? " (" + why + ")" : "")}");
    }

    /// <summary>Throws unless <paramref name="t"/> has rank <paramref name="rank"/>.</summary>
    internal static void ExpectRank(string op, string name, Tensor t, int rank, string layout)
    {
        if (t.Rank != rank) throw new ArgumentException($"{op}: {t.Describe(name)} must have rank {rank} ({layout})");
    }

    /// <summary>Contiguous fp32 view for a kernel (a copy when needed; the copy is scoped).</summary>
    internal static Tensor F32Contiguous(Tensor t, string op, string name)
    {
        if (t.DType != DType.F32) throw new ArgumentException($"{op}: {t.Describe(name)} must be F32 (cast with To(DType.F32))");
        return t.IsContiguous ? t : ContiguousNoGrad(t);
    }

    /// <summary>
    /// Contiguous view of an operand that may be F32, BF16 or F16: a GEMM operand (frozen weights kept in 16 bits: the
    /// backends multiply them with fp32 accumulation) or an activation (a model run with 16-bit activations: ops
    /// compute in fp32 and round their output to the activation's type). Gradients are F32 whatever the operand's type.
    /// </summary>
    internal static Tensor FloatContiguous(Tensor t, string op, string name)
    {
        if (t.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"{op}: {t.Describe(name)} must be F32, BF16 or F16");
        return t.IsContiguous ? t : ContiguousNoGrad(t);
    }

    internal static Tensor ContiguousNoGrad(Tensor t)
    {
        var c = Tensor.Empty(t.Shape, t.DType, t.Device);
        t.Backend.Copy(t, c);
        return c;
    }
}
