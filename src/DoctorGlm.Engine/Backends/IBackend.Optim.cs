namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// One fused AdamW update (PyTorch 1.13 <c>torch.optim.AdamW</c>, amsgrad off) over equal-length contiguous fp32
    /// tensors, all updated in place: <c>p ← p·(1 − lr·wd)</c>; <c>m ← β1·m + (1−β1)·g</c>;
    /// <c>v ← β2·v + (1−β2)·g²</c>; <c>p ← p − (lr/bc1)·m / (√v/√bc2 + eps)</c>, where
    /// <paramref name="biasCorrection1"/> = 1 − β1ᵗ and <paramref name="biasCorrection2"/> = 1 − β2ᵗ for step t.
    /// </summary>
    /// <remarks>Hyper-parameters are doubles, as PyTorch's Python floats are: the fp32 factors are derived from them
    /// (e.g. 1 − β2 = 0.001 exactly rounded, where 1 − (float)0.999 would be off by 1.3e-5 relative).</remarks>
    void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, double lr, double beta1, double beta2,
        double eps, double weightDecay, double biasCorrection1, double biasCorrection2);

    /// <summary>
    /// One fused Lion update (lucidrains/lion-pytorch) over equal-length contiguous fp32 tensors, in place:
    /// <c>p ← p·(1 − lr·wd)</c>; <c>c = β1·m + (1−β1)·g</c>; <c>p ← p − lr·sign(c)</c> (sign(0) = 0, NaN propagates);
    /// <c>m ← β2·m + (1−β2)·g</c>.
    /// </summary>
    /// <remarks>Hyper-parameters are doubles for the same reason as in <see cref="AdamWStep(Tensor, Tensor, Tensor, Tensor, double, double, double, double, double, double, double)"/>.</remarks>
    void LionStep(Tensor param, Tensor grad, Tensor expAvg, double lr, double beta1, double beta2, double weightDecay);

    /// <summary>
    /// <see cref="AdamWStep(Tensor, Tensor, Tensor, Tensor, double, double, double, double, double, double, double)"/>
    /// over every parameter of <paramref name="updates"/> at once (one kernel launch on the GPU, however many
    /// tensors: a LoRA step on ChatGLM-6B updates 56 small ones). Each element's result is the single-tensor one.
    /// </summary>
    void AdamWStep(IReadOnlyList<AdamWUpdate> updates, double lr, double beta1, double beta2, double eps, double weightDecay);

    /// <summary><see cref="LionStep(Tensor, Tensor, Tensor, double, double, double, double)"/> over every parameter of <paramref name="updates"/> at once.</summary>
    void LionStep(IReadOnlyList<LionUpdate> updates, double lr, double beta1, double beta2, double weightDecay);

    /// <summary>Σ over all tensors of Σ x², accumulated in double, in one pass (one launch and one synchronisation on the GPU).</summary>
    double SumOfSquares(IReadOnlyList<Tensor> xs);
}

/// <summary>One parameter of a multi-tensor AdamW step: contiguous fp32 tensors of equal length and the bias
/// corrections of this parameter's own step count (1 − β1ᵗ, 1 − β2ᵗ).</summary>
/// <param name="Param">Updated in place.</param>
/// <param name="Grad">Its gradient.</param>
/// <param name="ExpAvg">First moment, updated in place.</param>
/// <param name="ExpAvgSq">Second moment, updated in place.</param>
/// <param name="BiasCorrection1">1 − β1ᵗ.</param>
/// <param name="BiasCorrection2">1 − β2ᵗ.</param>
public readonly record struct AdamWUpdate(Tensor Param, Tensor Grad, Tensor ExpAvg, Tensor ExpAvgSq, double BiasCorrection1, double BiasCorrection2);

/// <summary>One parameter of a multi-tensor Lion step (contiguous fp32 tensors of equal length).</summary>
/// <param name="Param">Updated in place.</param>
/// <param name="Grad">Its gradient.</param>
/// <param name="ExpAvg">Momentum, updated in place.</param>
public readonly record struct LionUpdate(Tensor Param, Tensor Grad, Tensor ExpAvg);
