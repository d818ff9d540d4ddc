using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace DoctorGlm.Engine.Benchmarks;

/// <summary>
/// Marks a benchmark class whose cases do a known number of floating-point operations, so
/// <see cref="GflopsColumn"/> can turn the measured mean time into GFLOP/s.
/// </summary>
public interface IFlopCount
{
    /// <summary>Floating-point operations done by one invocation of the benchmark with the current parameters.</summary>
    double Flops { get; }
}

/// <summary>Summary-table column: FLOPs per invocation / mean time, in GFLOP/s.</summary>
public sealed class GflopsColumn : IColumn
{
    public string Id => nameof(GflopsColumn);
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Throughput: floating-point operations (2·m·n·k for GEMM) per second, in 1e9";

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => typeof(IFlopCount).IsAssignableFrom(c.Descriptor.Type));
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? gflops = Compute(summary, benchmarkCase);
        return gflops is double g ? g.ToString("F1", style.CultureInfo) : "-";
    }

    /// <summary>GFLOP/s of one case, or null when it has no result or no FLOP count.</summary>
    public static double? Compute(Summary summary, BenchmarkCase benchmarkCase)
    {
        var report = summary[benchmarkCase];
        double? meanNs = report?.ResultStatistics?.Mean;
        if (meanNs is not > 0) return null;

        // Instantiate the benchmark class and apply this case's [Params] to read its FLOP count.
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(IFlopCount).IsAssignableFrom(type)) return null;
        var instance = (IFlopCount)Activator.CreateInstance(type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
        {
            var prop = type.GetProperty(p.Name);
            if (prop is not null) prop.SetValue(instance, p.Value);
            else type.GetField(p.Name)?.SetValue(instance, p.Value);
        }
        return instance.Flops / meanNs.Value; // FLOP per ns == GFLOP/s
    }

    public override string ToString() => ColumnName;
}
