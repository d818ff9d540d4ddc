namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// One fused AdamW update (PyTorch 1.13 <c>torch.optim.AdamW</c>, amsgrad off) over equal-length contiguous fp32
    /// tensors, all updated in place: <c>p ← p·(1 − lr·wd)</c>; <c>m ← β1·m + (1−β1)·g</c>;
    /// <c>v ← β2·v + (1−β2)·g²</c>; <c>p ← p − (lr/bc1)·m / (√v/√bc2 + eps)</c>, where
    /// <paramref name="biasCorrection1"/> = 1 − β1ᵗ and <paramref name="biasCorrection2"/> = 1 − β2ᵗ for step t.
    /// </summary>
    void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, float lr, float beta1, float beta2,
        float eps, float weightDecay, float biasCorrection1, float biasCorrection2);

    /// <summary>
    /// One fused Lion update (lucidrains/lion-pytorch) over equal-length contiguous fp32 tensors, in place:
    /// <c>p ← p·(1 − lr·wd)</c>; <c>c = β1·m + (1−β1)·g</c>; <c>p ← p − lr·sign(c)</c> (sign(0) = 0, NaN propagates);
    /// <c>m ← β2·m + (1−β2)·g</c>.
    /// </summary>
    void LionStep(Tensor param, Tensor grad, Tensor expAvg, float lr, float beta1, float beta2, float weightDecay);
}
