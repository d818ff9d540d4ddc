namespace DoctorGlm.Engine.Backends;

/// <summary>
/// The kernel set every backend implements with the same semantics: the CPU backend is the reference, the CUDA
/// backend is tested against it. Kernels do no autograd and no allocation of results: the caller (an op in
/// <c>Ops</c>) allocates outputs and passes them in. Unless a member says otherwise, tensors must be contiguous,
/// fp32 and on this backend's device; op code validates user-facing arguments before calling a kernel.
/// </summary>
/// <remarks>The interface is partial: each kernel family declares its members in <c>IBackend.Family.cs</c>.</remarks>
public partial interface IBackend
{
    /// <summary>The device this backend runs on.</summary>
    Device Device { get; }

    /// <summary>Allocates <paramref name="bytes"/> of device memory (pooled).</summary>
    Storage Allocate(long bytes);

    /// <summary>Peak, in-use and pooled bytes of this backend's allocator.</summary>
    MemoryStats Memory { get; }

    /// <summary>Sets every element of a contiguous tensor to <paramref name="value"/> (any dtype; converted).</summary>
    void Fill(Tensor dst, float value);

    /// <summary>Copies <paramref name="src"/> into <paramref name="dst"/>: same shape, any strides on both; float dtypes convert (round to nearest even), other dtypes must match.</summary>
    void Copy(Tensor src, Tensor dst);

    /// <summary>Copies host bytes into a contiguous tensor.</summary>
    void CopyFromHost(ReadOnlySpan<byte> src, Tensor dst);

    /// <summary>Copies a contiguous tensor's bytes to the host.</summary>
    void CopyToHost(Tensor src, Span<byte> dst);

    /// <summary>
    /// y = alpha·a + beta·b elementwise over equal element counts; y may alias a or b. Each of a, b and y may be F32,
    /// BF16 or F16 (16-bit activations: operands widened exactly, fp32 arithmetic, y rounded once).
    /// </summary>
    void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y);

    /// <summary>
    /// y = alpha·a + ρ(b + bias[j]) for b viewed as rows of length bias's element count, ρ rounding to y's dtype: a
    /// biased linear's fp32 output b joined to the scaled residual a in one pass, with the operations (and so the
    /// result) of <see cref="AddRowVector"/>(b, bias, 1), the linear's rounding of its output to y's dtype, then
    /// <see cref="AddScaled"/>(a, alpha, that, 1). b and bias are F32; a and y are F32, or the same 16-bit activation
    /// dtype. y may alias a or b.
    /// </summary>
    void AddScaledRowBias(Tensor a, float alpha, Tensor b, Tensor bias, Tensor y);

    /// <summary>y = a ⊙ b elementwise; y may alias a or b.</summary>
    void Mul(Tensor a, Tensor b, Tensor y);

    /// <summary>
    /// y[r, j] += alpha·v[j] for y (F32) viewed as rows of length v's element count; with <paramref name="output"/>,
    /// the sums go there instead (y unchanged), rounded once to its dtype (F32, BF16 or F16): a biased linear's fp32
    /// product becomes a 16-bit activation in the pass that adds the bias.
    /// </summary>
    void AddRowVector(Tensor y, Tensor v, float alpha, Tensor? output = null);

    /// <summary>y[j] (+)= Σ_r x[r, j] with x viewed as rows of length y's element count; accumulates when <paramref name="accumulate"/>.</summary>
    void SumRows(Tensor x, Tensor y, bool accumulate);

    /// <summary>Σ x, accumulated in double (synchronises with the device).</summary>
    double Sum(Tensor x);

    /// <summary>Σ x², accumulated in double (synchronises with the device).</summary>
    double SumOfSquares(Tensor x);

    /// <summary>Number of NaN or infinite elements (synchronises with the device).</summary>
    long CountNonFinite(Tensor x);

    /// <summary>
    /// Strided batched matrix product, row-major, BLAS-style: for each batch index i,
    /// C_i = alpha·op(A_i)·op(B_i) + beta·C_i where op(A) is m×k, op(B) is k×n. A_i starts at element
    /// <c>aOffset + i·strideA</c> of <paramref name="a"/> (relative to a's own offset) with row stride lda;
    /// when transposed it is stored k×m. beta = 0 overwrites C without reading it.
    /// A and B may each be F32, BF16 or F16 (offsets and strides count elements of their own type); the products
    /// accumulate in fp32. C is F32, or — with beta = 0 — BF16/F16, each result then rounded once (a 16-bit
    /// activation written straight from the GEMM). The CPU multiplies the exactly converted values in fp32; the CUDA
    /// backend rounds an F32 operand paired with a 16-bit one to that 16-bit type (both to C's type when C is 16-bit)
    /// and runs cuBLAS on tensor cores.
    /// </summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, long aOffset, long lda, long strideA,
        Tensor b, long bOffset, long ldb, long strideB,
        float beta, Tensor c, long cOffset, long ldc, long strideC, int batch);
}

/// <summary>Allocator statistics.</summary>
/// <param name="InUseBytes">Bytes held by live tensors.</param>
/// <param name="PeakBytes">Highest <paramref name="InUseBytes"/> since start or the last reset.</param>
/// <param name="PooledBytes">Bytes kept for reuse, not held by any tensor.</param>
public readonly record struct MemoryStats(long InUseBytes, long PeakBytes, long PooledBytes);

/// <summary>Argument checks the GEMM of every backend shares.</summary>
internal static class GemmArguments
{
    /// <summary>C is F32, or BF16/F16 with beta = 0 (a 16-bit C is written, never accumulated into).</summary>
    public static void CheckOutput(Tensor c, float beta)
    {
        if (c.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"Gemm: {c.Describe("C")} must be F32, BF16 or F16");
        if (c.DType != DType.F32 && beta != 0f)
            throw new ArgumentException($"Gemm: a {c.DType} C is written once (beta = 0); beta = {beta} would accumulate into rounded values");
    }
}

/// <summary>Argument checks of the fused elementwise members that every backend runs (their kernels index with these shapes).</summary>
internal static class ElementwiseArguments
{
    /// <summary><see cref="IBackend.AddScaledRowBias"/>: b and bias F32, a and y of one float dtype (y's), equal shapes, rows of bias's length.</summary>
    public static void CheckAddScaledRowBias(Tensor a, Tensor b, Tensor bias, Tensor y)
    {
        const string op = nameof(IBackend.AddScaledRowBias);
        if (b.DType != DType.F32 || bias.DType != DType.F32 || !y.DType.IsFloat() || a.DType != y.DType)
            throw new ArgumentException($"{op}: {b.Describe("b")} and {bias.Describe("bias")} must be F32, {a.Describe("a")} of {y.Describe("y")}'s float dtype");
        if (a.Shape != y.Shape || b.Shape != y.Shape || bias.Shape.Rank != 1 || y.Shape.Rank < 1 || y.Shape[-1] != bias.Shape[0])
            throw new ArgumentException($"{op}: {a.Describe("a")}, {b.Describe("b")} and {y.Describe("y")} must share one shape ending in {bias.Describe("bias")}'s length");
        if (!a.IsContiguous || !b.IsContiguous || !bias.IsContiguous || !y.IsContiguous)
            throw new ArgumentException($"{op}: a, b, bias and y must be contiguous");
    }

    /// <summary><see cref="IBackend.AddRowVector"/>'s output: a contiguous float tensor of y's shape.</summary>
    public static void CheckRowVectorOutput(Tensor y, Tensor output)
    {
        if (output.Shape != y.Shape || !output.DType.IsFloat() || !output.IsContiguous)
            throw new ArgumentException($"{nameof(IBackend.AddRowVector)}: {output.Describe("output")} must be a contiguous float tensor of {y.Describe("y")}'s shape");
    }
}
