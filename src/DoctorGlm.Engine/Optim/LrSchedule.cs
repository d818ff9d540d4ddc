namespace DoctorGlm.Engine.Optim;

/// <summary>
/// Learning-rate schedules with the formulas of Hugging Face transformers' <c>get_*_schedule_with_warmup</c>
/// (a <c>LambdaLR</c> factor times the base rate). <see cref="LearningRate"/>(i) is the rate for optimizer step i,
/// i.e. after i <c>scheduler.step()</c> calls, so with warm-up the very first step uses 0.
/// </summary>
public abstract class LrSchedule
{
    private protected LrSchedule(double baseLearningRate, int warmupSteps)
    {
        if (!double.IsFinite(baseLearningRate) || baseLearningRate < 0) throw new ArgumentOutOfRangeException(nameof(baseLearningRate), baseLearningRate, "base learning rate must be finite and non-negative");
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        BaseLearningRate = baseLearningRate;
        WarmupSteps = warmupSteps;
    }

    /// <summary>The peak rate the factor multiplies.</summary>
    public double BaseLearningRate { get; }

    /// <summary>Steps of linear warm-up from 0 (0 for none).</summary>
    public int WarmupSteps { get; }

    /// <summary>The learning rate for optimizer step <paramref name="step"/> (0-based).</summary>
    public double LearningRate(int step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        return BaseLearningRate * Factor(step);
    }

    /// <summary>Sets <paramref name="optimizer"/>'s rate for step <paramref name="step"/>.</summary>
    public void Apply(Optimizer optimizer, int step)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        optimizer.LearningRate = LearningRate(step);
    }

    /// <summary>The multiplier of the base rate (the <c>lr_lambda</c>) at <paramref name="step"/> ≥ 0.</summary>
    protected abstract double Factor(int step);

    /// <summary>Warm-up factor i / max(1, warmup) for i &lt; warmup (transformers' integer-to-float division).</summary>
    private protected double Warmup(int step) => step / (double)Math.Max(1, WarmupSteps);

    /// <summary>Always <paramref name="baseLr"/> (<c>get_constant_schedule</c>).</summary>
    public static LrSchedule Constant(double baseLr) => new ConstantSchedule(baseLr, 0);

    /// <summary>Linear warm-up from 0, then <paramref name="baseLr"/> (<c>get_constant_schedule_with_warmup</c>).</summary>
    public static LrSchedule ConstantWithWarmup(double baseLr, int warmupSteps) => new ConstantSchedule(baseLr, warmupSteps);

    /// <summary>Linear warm-up, then linear decay to 0 at <paramref name="totalSteps"/> (<c>get_linear_schedule_with_warmup</c>).</summary>
    public static LrSchedule LinearWithWarmup(double baseLr, int warmupSteps, int totalSteps) => new LinearSchedule(baseLr, warmupSteps, totalSteps);

    /// <summary>
    /// Linear warm-up, then a cosine from the base rate; with <paramref name="numCycles"/> = 0.5 it reaches 0 at
    /// <paramref name="totalSteps"/> (<c>get_cosine_schedule_with_warmup</c>).
    /// </summary>
    public static LrSchedule CosineWithWarmup(double baseLr, int warmupSteps, int totalSteps, double numCycles = 0.5) =>
        new CosineSchedule(baseLr, warmupSteps, totalSteps, numCycles);

    private sealed class ConstantSchedule(double baseLr, int warmup) : LrSchedule(baseLr, warmup)
    {
        protected override double Factor(int step) => step < WarmupSteps ? Warmup(step) : 1.0;
        public override string ToString() => $"constant(lr={BaseLearningRate}, warmup={WarmupSteps})";
    }

    private abstract class DecaySchedule : LrSchedule
    {
        protected DecaySchedule(double baseLr, int warmup, int total) : base(baseLr, warmup)
        {
            if (total < warmup) throw new ArgumentOutOfRangeException(nameof(total), total, $"total steps ({total}) must be at least the warm-up steps ({warmup})");
            TotalSteps = total;
        }

        public int TotalSteps { get; }

        /// <summary>Fraction of the decay phase done (transformers' <c>(i − warmup) / max(1, total − warmup)</c>).</summary>
        protected double Progress(int step) => (step - WarmupSteps) / (double)Math.Max(1, TotalSteps - WarmupSteps);
    }

    private sealed class LinearSchedule(double baseLr, int warmup, int total) : DecaySchedule(baseLr, warmup, total)
    {
        protected override double Factor(int step) =>
            step < WarmupSteps ? Warmup(step) : Math.Max(0.0, (TotalSteps - step) / (double)Math.Max(1, TotalSteps - WarmupSteps));
        public override string ToString() => $"linear(lr={BaseLearningRate}, warmup={WarmupSteps}, total={TotalSteps})";
    }

    private sealed class CosineSchedule : DecaySchedule
    {
        private readonly double _numCycles;

        public CosineSchedule(double baseLr, int warmup, int total, double numCycles) : base(baseLr, warmup, total)
        {
            if (!double.IsFinite(numCycles) || numCycles < 0) throw new ArgumentOutOfRangeException(nameof(numCycles), numCycles, "numCycles must be finite and non-negative");
            _numCycles = numCycles;
        }

        protected override double Factor(int step) =>
            step < WarmupSteps ? Warmup(step) : Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * _numCycles * 2.0 * Progress(step))));
        public override string ToString() => $"cosine(lr={BaseLearningRate}, warmup={WarmupSteps}, total={TotalSteps}, cycles={_numCycles})";
    }
}
