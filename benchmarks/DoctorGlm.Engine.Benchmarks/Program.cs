using System.Reflection;
using System.Text.RegularExpressions;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using DoctorGlm.Engine.Benchmarks;
using DoctorGlm.Engine.Benchmarks.Cuda;
using DoctorGlm.Engine.Benchmarks.EndToEnd;

// Modes in one executable, so the GPU runner carries one program:
//   --cuda-info             the device, driver, NVRTC and the CUDA library files resolved
//   --lora-step [options]   one LoRA training step, checkpointing off/on (EndToEnd/LoraStepBenchmark.cs)
//   --decode [options]      batch-1 decoding, fp32/INT8/INT4, against the bandwidth bound (EndToEnd/DecodeBenchmark.cs)
//   anything else           BenchmarkDotNet (--filter, --join, …) plus --short, --fast and --cuda-report FILE.
// --cuda-info: the device and the CUDA libraries this process resolved (the GPU runner's first line of evidence).
if (args.Length > 0 && args[0] == "--cuda-info")
{
    if (CudaAvailability.Backend is { } gpu)
    {
        Console.WriteLine(gpu.Describe());
        return 0;
    }
    Console.Error.WriteLine($"--cuda-info: no CUDA device ({CudaAvailability.Reason})");
    return 1;
}

if (args.Length > 0 && args[0] is "--lora-step" or "--decode")
{
    try
    {
        return args[0] == "--lora-step" ? LoraStepBenchmark.Run(args[1..]) : DecodeBenchmark.Run(args[1..]);
    }
    catch (Exception e) when (e is ArgumentException or NotSupportedException or InvalidOperationException or OutOfMemoryException)
    {
        // Bad options, no CUDA device, a model that does not fit: one line, not a stack trace.
        Console.Error.WriteLine(e.Message.StartsWith(args[0], StringComparison.Ordinal) ? e.Message : $"{args[0]}: {e.Message}");
        return 2;
    }
}

var rest = args.ToList();
bool shortRun = rest.Remove("--short");
bool fast = rest.Remove("--fast");
string? cudaReport = null;
int reportAt = rest.IndexOf("--cuda-report");
if (reportAt >= 0)
{
    if (reportAt + 1 >= rest.Count) { Console.Error.WriteLine("--cuda-report needs a file name"); return 2; }
    cudaReport = rest[reportAt + 1];
    rest.RemoveRange(reportAt, 2);
    CudaReport.LivePath = cudaReport; // rewritten after every case, so a run cut short keeps what finished
}

// In-process toolchain: benchmarks run inside this process instead of a generated, separately built project, so they
// also work from the self-contained publish on a machine without the .NET SDK. --short: BenchmarkDotNet's short job
// (3 warm-ups, 3 iterations). --fast: a fixed, tiny job (1 warm-up, 3 iterations of 2 invocations, no pilot) for a
// smoke run inside one device call; the CUDA cases still time every launch with events.
Job job = (fast
        ? Job.Default.WithWarmupCount(1).WithIterationCount(3).WithInvocationCount(2).WithUnrollFactor(1).WithId("Fast")
        : shortRun ? Job.ShortRun : Job.Default)
    .WithToolchain(InProcessEmitToolchain.Instance);

IConfig config = DefaultConfig.Instance
    .AddJob(job)
    .AddColumn(new GflopsColumn(), new GbpsColumn(), new CudaTimeColumn(), new CudaRateColumn(), new CudaCeilingColumn());

// Without a GPU the CUDA classes are left out with one line, instead of failing one by one in their global setup
// (listing them with --list needs no GPU).
var types = typeof(GflopsColumn).Assembly.GetTypes()
    .Where(t => t is { IsClass: true, IsAbstract: false, IsPublic: true } && t.GetMethods().Any(m => m.GetCustomAttribute<BenchmarkAttribute>() is not null))
    .ToList();
var filters = FilterPatterns(rest);
bool Selected(Type t) => filters.Count == 0 || t.GetMethods().Where(m => m.GetCustomAttribute<BenchmarkAttribute>() is not null)
    .Any(m => filters.Any(f => f.IsMatch($"{t.FullName}.{m.Name}")));
var cudaTypes = types.Where(t => typeof(ICudaWork).IsAssignableFrom(t)).ToList();
if (!rest.Contains("--list") && cudaTypes.Any(Selected) && CudaAvailability.Backend is null)
{
    Console.WriteLine($"CUDA benchmarks skipped: no CUDA device ({CudaAvailability.Reason})");
    types = types.Except(cudaTypes).ToList();
    if (filters.Count > 0 && !types.Any(Selected)) return 0;
}

// The ceilings run first: every other figure is a ratio to them, and a run cut short should still have them.
static bool IsCeiling(Type t) => t == typeof(CudaCeilingBenchmarks) || t.Name is "CpuMemoryBandwidthBenchmarks" or "PeakFlopsBenchmarks";
types = [.. types.OrderBy(t => IsCeiling(t) ? 0 : 1).ThenBy(t => t.FullName, StringComparer.Ordinal)];

var summaries = BenchmarkSwitcher.FromTypes([.. types]).Run([.. rest], config).ToList();

if (CudaReport.Build() is { } table)
{
    Console.WriteLine();
    Console.WriteLine(table);
    if (cudaReport is not null) File.WriteAllText(cudaReport, table);
}
int failed = summaries.Sum(s => s.Reports.Count(r => !r.Success)) + summaries.Count(s => s.HasCriticalValidationErrors);
if (failed > 0) Console.Error.WriteLine($"{failed} benchmark case(s) or validation(s) failed; see the log above");
return failed > 0 ? 1 : 0;

// BenchmarkDotNet's --filter (or -f) globs, which match "Namespace.Type.Method" ignoring case.
static List<Regex> FilterPatterns(List<string> args)
{
    var patterns = new List<Regex>();
    for (int i = 0; i < args.Count; i++)
    {
        if (args[i] is not ("--filter" or "-f")) continue;
        for (int j = i + 1; j < args.Count && !args[j].StartsWith('-'); j++)
            patterns.Add(new Regex("^" + Regex.Escape(args[j]).Replace("\\*", ".*").Replace("\\?", ".") + "$",
                RegexOptions.IgnoreCase | RegexOptions.CultureInvariant));
    }
    return patterns;
}
