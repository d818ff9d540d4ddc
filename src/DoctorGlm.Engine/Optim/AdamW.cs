using DoctorGlm.Engine.Backends;

namespace DoctorGlm.Engine.Optim;

/// <summary>
/// AdamW with decoupled weight decay, exactly PyTorch 1.13's <c>torch.optim.AdamW</c> without amsgrad:
/// <c>p ← p·(1 − lr·wd)</c>; <c>m ← β1 m + (1−β1) g</c>; <c>v ← β2 v + (1−β2) g²</c>;
/// <c>p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)</c>. State buffers: <c>exp_avg</c>, <c>exp_avg_sq</c>.
/// </summary>
public sealed class AdamW : Optimizer
{
    private static readonly string[] s_stateNames = ["exp_avg", "exp_avg_sq"];

    /// <summary>Builds AdamW over the trainable ones of <paramref name="parameters"/> (defaults as in PyTorch).</summary>
    /// <param name="parameters">Named parameters (only those with RequiresGrad are trained).</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">Decay of the first moment.</param>
    /// <param name="beta2">Decay of the second moment.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weightDecay">Decoupled weight decay coefficient.</param>
    public AdamW(IEnumerable<(string Name, Tensor Param)> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weightDecay = 0.01) : base(parameters, lr)
    {
        Validate(beta1, beta2, eps, weightDecay);
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    private static void Validate(double beta1, double beta2, double eps, double weightDecay)
    {
        if (!(beta1 is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "AdamW: beta1 must be in [0, 1)");
        if (!(beta2 is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "AdamW: beta2 must be in [0, 1)");
        if (!(eps >= 0) || !double.IsFinite(eps)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "AdamW: eps must be finite and non-negative");
        if (!(weightDecay >= 0) || !double.IsFinite(weightDecay)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "AdamW: weight decay must be finite and non-negative");
    }

    /// <summary>Decay of the first moment.</summary>
    public double Beta1 { get; private set; }

    /// <summary>Decay of the second moment.</summary>
    public double Beta2 { get; private set; }

    /// <summary>Added to the denominator for stability.</summary>
    public double Eps { get; private set; }

    /// <summary>Decoupled weight decay coefficient.</summary>
    public double WeightDecay { get; private set; }

    /// <inheritdoc />
    protected override string TypeName => "AdamW";

    /// <inheritdoc />
    protected override IReadOnlyList<string> StateNames => s_stateNames;

    /// <inheritdoc />
    protected override void Update(IBackend backend, IReadOnlyList<ParameterUpdate> updates) =>
        // Bias corrections in double from the double betas, as PyTorch computes them from Python floats.
        backend.AdamWStep(updates.Select(u => new AdamWUpdate(u.Param, u.Grad, u.State[0], u.State[1],
            1 - Math.Pow(Beta1, u.Step), 1 - Math.Pow(Beta2, u.Step))).ToList(), LearningRate, Beta1, Beta2, Eps, WeightDecay);

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, string> HyperParameters() => new Dictionary<string, string>
    {
        ["beta1"] = Format(Beta1), ["beta2"] = Format(Beta2), ["eps"] = Format(Eps), ["weight_decay"] = Format(WeightDecay),
    };

    /// <inheritdoc />
    protected override void RestoreHyperParameters(IReadOnlyDictionary<string, string> metadata, string path)
    {
        double b1 = ReadHyper(metadata, "beta1", path), b2 = ReadHyper(metadata, "beta2", path);
        double eps = ReadHyper(metadata, "eps", path), wd = ReadHyper(metadata, "weight_decay", path);
        try { Validate(b1, b2, eps, wd); }
        catch (ArgumentOutOfRangeException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        (Beta1, Beta2, Eps, WeightDecay) = (b1, b2, eps, wd);
    }
}
