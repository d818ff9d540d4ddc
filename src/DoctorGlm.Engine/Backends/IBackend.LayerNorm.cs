namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// LayerNorm over the last dimension (torch semantics: biased variance, eps inside the square root):
    /// with x viewed as rows of length H = weight's element count,
    /// y[r, j] = (x[r, j] − mean[r])·rstd[r]·weight[j] + bias[j], rstd[r] = 1/√(var[r] + eps).
    /// Writes <paramref name="mean"/> and <paramref name="rstd"/> ([rows] F32) for <see cref="LayerNormBackward"/>.
    /// x and y are activations: each may be F32, BF16 or F16 (widened exactly, the output rounded once); the rest is F32.
    /// <paramref name="copy"/>, when given, is a second output of y's shape and any float dtype that gets the same
    /// fp32 values rounded to its own dtype (a KV-cached step keeps y in fp32 for the residual and hands a 16-bit GEMM
    /// its input without a separate rounding pass).
    /// </summary>
    void LayerNormForward(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd, Tensor? copy = null);

    /// <summary>
    /// Gradients of <see cref="LayerNormForward"/> from the saved statistics. Each non-null output is overwritten:
    /// dx = rstd·(g − mean(g) − x̂·mean(g⊙x̂)) with g = dy⊙weight and x̂ = (x − mean)·rstd;
    /// dweight = Σ_rows dy⊙x̂; dbias = Σ_rows dy. Null outputs are not computed. x may be F32, BF16 or F16 (the
    /// forward's input); dy and the gradients are F32.
    /// </summary>
    void LayerNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dweight, Tensor? dbias);
}

/// <summary>Argument check of <see cref="IBackend.LayerNormForward"/>'s copy that every backend runs.</summary>
internal static class LayerNormArguments
{
    /// <summary>The copy must be a contiguous float tensor of y's shape.</summary>
    public static void CheckCopy(Tensor y, Tensor? copy)
    {
        if (copy is not null && (copy.Shape != y.Shape || !copy.DType.IsFloat() || !copy.IsContiguous))
            throw new ArgumentException($"{nameof(IBackend.LayerNormForward)}: {copy.Describe("copy")} must be a contiguous float tensor of {y.Describe("y")}'s shape");
    }
}
