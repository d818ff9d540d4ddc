using System.Globalization;
using System.Text;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>
/// The CUDA suite's closing table: every case that ran in this process with its event-timed median, its figure and
/// the ratio to the ceilings measured in the same process (BenchmarkDotNet prints one summary per class unless
/// <c>--join</c> is given, and a class's summary is printed before later classes run; this table comes last and sees
/// them all).
/// </summary>
public static class CudaReport
{
    /// <summary>
    /// A file the table is rewritten to after every CUDA case (<c>--cuda-report</c>), so a run stopped by a time limit
    /// still leaves the cases that finished; null: only the closing table.
    /// </summary>
    public static string? LivePath { get; set; }

    /// <summary>Rewrites <see cref="LivePath"/> with the cases so far (atomically: a reader never sees half a table).</summary>
    public static void WriteLive()
    {
        if (LivePath is null || Build() is not { } table) return;
        string temp = LivePath + ".tmp";
        File.WriteAllText(temp, table);
        File.Move(temp, LivePath, overwrite: true);
    }

    /// <summary>The markdown table, or null when no CUDA case ran.</summary>
    public static string? Build()
    {
        var cases = CudaResults.Cases();
        if (cases.Count == 0) return null;
        var backend = CudaAvailability.Backend;
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"CUDA kernels on {backend?.DeviceName ?? "?"} (sm_{backend?.ComputeCapability}), {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        sb.AppendLine(inv, $"ceilings in this run: copy {Fmt(CudaCeilingBenchmarks.CopyGBps, "F0")} GB/s, bf16 GEMM {Fmt(CudaCeilingBenchmarks.GemmBf16Tflops, "F1")} TFLOP/s, fp32 GEMM {Fmt(CudaCeilingBenchmarks.GemmF32Tflops, "F1")} TFLOP/s");
        sb.AppendLine();
        sb.AppendLine("| kernel | parameters | GPU µs (median) | min µs | launches | rate | of ceiling |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var (key, type, method, parameters) in cases)
        {
            var stats = CudaResults.Stats(key);
            if (stats is not { } s) continue;
            var instance = (ICudaWork)Activator.CreateInstance(type)!;
            foreach (var part in parameters.Split(", ", StringSplitOptions.RemoveEmptyEntries))
            {
                var (name, value) = (part[..part.IndexOf('=')], part[(part.IndexOf('=') + 1)..]);
                var prop = type.GetProperty(name);
                if (prop is null) continue;
                object v = prop.PropertyType.IsEnum ? Enum.Parse(prop.PropertyType, value) : Convert.ChangeType(value, prop.PropertyType, inv);
                prop.SetValue(instance, v);
            }
            var f = new CudaFigure(s.MedianNs / 1e3, s.MinNs / 1e3, s.Count, instance.Work(method));
            string name2 = type.Name.Replace("Cuda", "", StringComparison.Ordinal).Replace("Benchmarks", "", StringComparison.Ordinal);
            sb.AppendLine(inv, $"| {name2}.{method} | {(parameters.Length == 0 ? "-" : parameters)} | {f.MedianUs:F1} | {f.MinUs:F1} | {f.Samples} | {f.Rate} | {f.OfCeiling} |");
        }
        return sb.ToString();
    }

    private static string Fmt(double? v, string format) => v is double d ? d.ToString(format, CultureInfo.InvariantCulture) : "(not run)";
}
