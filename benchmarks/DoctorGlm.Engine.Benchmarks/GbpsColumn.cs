using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace DoctorGlm.Engine.Benchmarks;

/// <summary>
/// Marks a benchmark class whose cases move a known number of bytes to and from memory (each input read once, each
/// output written once: the minimum traffic), so <see cref="GbpsColumn"/> can report effective bandwidth.
/// </summary>
public interface IByteCount
{
    /// <summary>Bytes read plus bytes written by one invocation with the current parameters and benchmark method.</summary>
    double Bytes(string method);
}

/// <summary>Summary-table column: minimum bytes moved per invocation / mean time, in GB/s.</summary>
public sealed class GbpsColumn : IColumn
{
    public string Id => nameof(GbpsColumn);
    public string ColumnName => "GB/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 1;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Effective bandwidth: minimum bytes read and written per second, in 1e9";

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => typeof(IByteCount).IsAssignableFrom(c.Descriptor.Type));
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        var type = benchmarkCase.Descriptor.Type;
        if (meanNs is not > 0 || !typeof(IByteCount).IsAssignableFrom(type)) return "-";
        var instance = (IByteCount)Activator.CreateInstance(type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
        {
            var prop = type.GetProperty(p.Name);
            if (prop is not null) prop.SetValue(instance, p.Value);
            else type.GetField(p.Name)?.SetValue(instance, p.Value);
        }
        return (instance.Bytes(benchmarkCase.Descriptor.WorkloadMethod.Name) / meanNs.Value).ToString("F1", style.CultureInfo);
    }

    public override string ToString() => ColumnName;
}
