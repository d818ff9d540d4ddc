namespace DoctorGlm.Engine.Optim;

/// <summary>Gradient clipping as in <c>torch.nn.utils.clip_grad_norm_</c>.</summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> in place so that their global L2 norm is at most
    /// <paramref name="maxNorm"/>: <c>coef = min(maxNorm / (total + 1e-6), 1)</c>, every gradient × coef.
    /// Parameters without a gradient are ignored.
    /// </summary>
    /// <returns>The global L2 norm before clipping (accumulated in double).</returns>
    /// <exception cref="InvalidOperationException">A gradient holds NaN or ±Inf (the message names the parameter):
    /// clipping would spread the NaN to every gradient, so the step must be skipped or the run stopped instead.</exception>
    public static double ClipByGlobalNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(maxNorm > 0) || !float.IsFinite(maxNorm)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "ClipByGlobalNorm: maxNorm must be finite and positive");
        var grads = new List<(int Index, Tensor Param, Tensor Grad)>();
        int index = 0;
        foreach (var p in parameters)
        {
            ArgumentNullException.ThrowIfNull(p, nameof(parameters));
            var g = p.Grad;
            if (g is not null && !g.IsDisposed)
            {
                if (g.DType != DType.F32 || !g.IsContiguous)
                    throw new InvalidOperationException($"ClipByGlobalNorm: gradient of {p.Describe($"parameter {index}")} must be contiguous F32");
                grads.Add((index, p, g));
            }
            index++;
        }

        // One multi-tensor reduction per device (one synchronisation on the GPU, not one per parameter).
        double sumSq = 0;
        foreach (var group in grads.GroupBy(e => e.Grad.Device))
            sumSq += group.First().Grad.Backend.SumOfSquares(group.Select(e => e.Grad).ToList());
        // Squares of finite floats cannot overflow a double, so a non-finite sum means a NaN/Inf element: find it.
        if (!double.IsFinite(sumSq))
            foreach (var (i, p, g) in grads)
                if (!double.IsFinite(g.Backend.SumOfSquares(g)))
                    throw new InvalidOperationException($"ClipByGlobalNorm: the gradient of {p.Describe($"parameter {i}")} has {g.Backend.CountNonFinite(g)} non-finite value(s) (NaN or Inf); the global norm is undefined");
        if (!double.IsFinite(sumSq)) throw new InvalidOperationException($"ClipByGlobalNorm: the sum of squares is {sumSq}; the global norm is undefined");
        double total = Math.Sqrt(sumSq);
        double coef = Math.Min(maxNorm / (total + 1e-6), 1.0);
        // torch 1.13 multiplies even when coef is 1; skipping that is exact (x·1 = x) and saves a pass.
        if (coef < 1.0)
            foreach (var (_, _, g) in grads) g.Backend.AddScaled(g, (float)coef, g, 0f, g);
        return total;
    }
}
