using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using DoctorGlm.Engine.Benchmarks;

// In-process toolchain: benchmarks run inside this process instead of a generated, separately
// built project, so the benchmarks also work from a self-contained single-file publish on a
// machine without the .NET SDK. "--short" swaps in a shorter job for quick runs.
bool shortRun = args.Contains("--short");
args = args.Where(a => a != "--short").ToArray();

Job job = shortRun
    ? Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance)
    : Job.Default.WithToolchain(InProcessEmitToolchain.Instance);

IConfig config = DefaultConfig.Instance
    .AddJob(job)
    .AddColumn(new GflopsColumn())
    .AddColumn(new GbpsColumn());

BenchmarkSwitcher.FromAssembly(typeof(GflopsColumn).Assembly).Run(args, config);
