using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>One CUDA case's event-timed result and its figure against the ceilings measured in the same process.</summary>
/// <param name="MedianUs">Median per-launch GPU time.</param>
/// <param name="MinUs">Fastest launch.</param>
/// <param name="Samples">Launches timed.</param>
/// <param name="Work">Minimum bytes and FLOPs of one launch.</param>
public sealed record CudaFigure(double MedianUs, double MinUs, int Samples, Work Work)
{
    /// <summary>GB/s at the median time.</summary>
    public double GBps => Work.Bytes / (MedianUs * 1e3);

    /// <summary>TFLOP/s at the median time.</summary>
    public double Tflops => Work.Flops / (MedianUs * 1e6);

    /// <summary>"812 GB/s" or "95.1 TFLOP/s", by the bound.</summary>
    public string Rate => Work.Bound == Bound.Memory
        ? GBps.ToString("F0", CultureInfo.InvariantCulture) + " GB/s"
        : Tflops.ToString("F1", CultureInfo.InvariantCulture) + " TFLOP/s";

    /// <summary>The ratio to the matching ceiling ("27% of copy"), or "-" when that ceiling has not run in this process.</summary>
    public string OfCeiling
    {
        get
        {
            if (Work.Bound == Bound.Memory)
                return CudaCeilingBenchmarks.CopyGBps is double c ? $"{100 * GBps / c:F0}% of copy" : "-";
            var parts = new List<string>();
            if (CudaCeilingBenchmarks.GemmBf16Tflops is double b) parts.Add($"{100 * Tflops / b:F1}% of bf16 GEMM");
            if (CudaCeilingBenchmarks.GemmF32Tflops is double f) parts.Add($"{100 * Tflops / f:F0}% of fp32 GEMM");
            return parts.Count > 0 ? string.Join("; ", parts) : "-";
        }
    }

    /// <summary>The figure of a summary row, or null for a non-CUDA case or one without samples.</summary>
    public static CudaFigure? Of(BenchmarkCase benchmarkCase)
    {
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(ICudaWork).IsAssignableFrom(type)) return null;
        string method = benchmarkCase.Descriptor.WorkloadMethod.Name;
        var parameters = benchmarkCase.Parameters.Items.Select(p => new KeyValuePair<string, object?>(p.Name, p.Value)).ToList();
        var stats = CudaResults.Stats(CudaResults.Key(type.Name, method, parameters));
        if (stats is not { } s) return null;
        // A fresh instance with this case's parameters states the work (nothing is allocated: Setup is not called).
        var instance = (ICudaWork)Activator.CreateInstance(type)!;
        foreach (var p in parameters) type.GetProperty(p.Key)?.SetValue(instance, p.Value);
        return new CudaFigure(s.MedianNs / 1e3, s.MinNs / 1e3, s.Count, instance.Work(method));
    }
}

/// <summary>Summary column "GPU µs": median per-launch time measured with CUDA events.</summary>
public sealed class CudaTimeColumn : CudaColumn
{
    /// <inheritdoc />
    public override string ColumnName => "GPU µs";

    /// <inheritdoc />
    public override string Legend => "Median per-launch GPU time from CUDA events (L2 scrubbed before each launch); the figure the rates use";

    /// <inheritdoc />
    protected override string Value(CudaFigure f) => f.MedianUs.ToString("F1", CultureInfo.InvariantCulture);
}

/// <summary>Summary column "GPU rate": GB/s or TFLOP/s at the median GPU time.</summary>
public sealed class CudaRateColumn : CudaColumn
{
    /// <inheritdoc />
    public override string ColumnName => "GPU rate";

    /// <inheritdoc />
    public override string Legend => "Minimum bytes (read + written) or FLOPs per launch over the median GPU time";

    /// <inheritdoc />
    protected override string Value(CudaFigure f) => f.Rate;
}

/// <summary>Summary column "of ceiling": the rate over the ceiling measured in this run.</summary>
public sealed class CudaCeilingColumn : CudaColumn
{
    /// <inheritdoc />
    public override string ColumnName => "of ceiling";

    /// <inheritdoc />
    public override string Legend => "Rate over the same run's 1 GiB device copy (memory-bound) or 8192³ cuBLAS GEMM (compute-bound)";

    /// <inheritdoc />
    protected override string Value(CudaFigure f) => f.OfCeiling;
}

/// <summary>Shared plumbing of the CUDA columns ("-" on CPU rows).</summary>
public abstract class CudaColumn : IColumn
{
    /// <inheritdoc />
    public string Id => GetType().Name;

    /// <inheritdoc />
    public abstract string ColumnName { get; }

    /// <inheritdoc />
    public abstract string Legend { get; }

    /// <inheritdoc />
    public bool AlwaysShow => true;

    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;

    /// <inheritdoc />
    public int PriorityInCategory => 10;

    /// <inheritdoc />
    public bool IsNumeric => false;

    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;

    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => typeof(ICudaWork).IsAssignableFrom(c.Descriptor.Type));

    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        CudaFigure.Of(benchmarkCase) is { } f ? Value(f) : "-";

    /// <summary>The cell for a CUDA case that has samples.</summary>
    protected abstract string Value(CudaFigure f);

    /// <inheritdoc />
    public override string ToString() => ColumnName;
}
