using DoctorGlm.Engine.Backends;

namespace DoctorGlm.Engine.Optim;

/// <summary>
/// Lion (Chen et al. 2023), the lucidrains/lion-pytorch update: <c>p ← p·(1 − lr·wd)</c>;
/// <c>c = β1 m + (1−β1) g</c>; <c>p ← p − lr·sign(c)</c>; <c>m ← β2 m + (1−β2) g</c>. State buffer: <c>exp_avg</c>.
/// </summary>
public sealed class Lion : Optimizer
{
    private static readonly string[] s_stateNames = ["exp_avg"];

    /// <summary>Builds Lion over the trainable ones of <paramref name="parameters"/> (defaults as in lion-pytorch).</summary>
    /// <param name="parameters">Named parameters (only those with RequiresGrad are trained).</param>
    /// <param name="lr">Learning rate (typically 3–10× smaller than AdamW's).</param>
    /// <param name="beta1">Interpolation between momentum and gradient for the update direction.</param>
    /// <param name="beta2">Decay of the momentum.</param>
    /// <param name="weightDecay">Decoupled weight decay coefficient.</param>
    public Lion(IEnumerable<(string Name, Tensor Param)> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99,
        double weightDecay = 0) : base(parameters, lr)
    {
        Validate(beta1, beta2, weightDecay);
        Beta1 = beta1;
        Beta2 = beta2;
        WeightDecay = weightDecay;
    }

    private static void Validate(double beta1, double beta2, double weightDecay)
    {
        if (!(beta1 is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "Lion: beta1 must be in [0, 1]");
        if (!(beta2 is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "Lion: beta2 must be in [0, 1]");
        if (!(weightDecay >= 0) || !double.IsFinite(weightDecay)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "Lion: weight decay must be finite and non-negative");
    }

    /// <summary>Interpolation factor of the update direction.</summary>
    public double Beta1 { get; private set; }

    /// <summary>Decay of the momentum.</summary>
    public double Beta2 { get; private set; }

    /// <summary>Decoupled weight decay coefficient.</summary>
    public double WeightDecay { get; private set; }

    /// <inheritdoc />
    protected override string TypeName => "Lion";

    /// <inheritdoc />
    protected override IReadOnlyList<string> StateNames => s_stateNames;

    /// <inheritdoc />
    protected override void Update(IBackend backend, IReadOnlyList<ParameterUpdate> updates) =>
        backend.LionStep(updates.Select(u => new LionUpdate(u.Param, u.Grad, u.State[0])).ToList(), LearningRate, Beta1, Beta2, WeightDecay);

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, string> HyperParameters() => new Dictionary<string, string>
    {
        ["beta1"] = Format(Beta1), ["beta2"] = Format(Beta2), ["weight_decay"] = Format(WeightDecay),
    };

    /// <inheritdoc />
    protected override void RestoreHyperParameters(IReadOnlyDictionary<string, string> metadata, string path)
    {
        double b1 = ReadHyper(metadata, "beta1", path), b2 = ReadHyper(metadata, "beta2", path), wd = ReadHyper(metadata, "weight_decay", path);
        try { Validate(b1, b2, wd); }
        catch (ArgumentOutOfRangeException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        (Beta1, Beta2, WeightDecay) = (b1, b2, wd);
    }
}
