using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cuda;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>The CUDA backend of this process, or why there is none (looked up once).</summary>
public static class CudaAvailability
{
    private static readonly Lazy<(CudaBackend? Backend, string? Reason)> s_state = new(() =>
    {
        if (Environment.GetEnvironmentVariable("DOCTORGLM_BENCH_CUDA") == "0") return (null, "disabled by DOCTORGLM_BENCH_CUDA=0");
        var backend = CudaBackend.TryInitialize(0, out var reason);
        return (backend, reason);
    });

    /// <summary>The backend of device 0, or null.</summary>
    public static CudaBackend? Backend => s_state.Value.Backend;

    /// <summary>Why <see cref="Backend"/> is null.</summary>
    public static string? Reason => s_state.Value.Reason;

    /// <summary>The backend, or an exception with the one-line reason (what a benchmark's setup throws without a GPU).</summary>
    public static CudaBackend Require() =>
        Backend ?? throw new InvalidOperationException("no CUDA device: " + Reason);
}

/// <summary>What limits a kernel, and so which ceiling its figure is compared with.</summary>
public enum Bound
{
    /// <summary>Bytes moved: GB/s against the device-to-device copy.</summary>
    Memory,

    /// <summary>Arithmetic: TFLOP/s against the bf16 cuBLAS GEMM (and the fp32 one for fp32 kernels).</summary>
    Compute,
}

/// <summary>The minimum work of one launch: bytes read plus written (each input once, each output once) and FLOPs.</summary>
public readonly record struct Work(double Bytes, double Flops, Bound Bound);

/// <summary>A CUDA benchmark class states the work of each of its methods for the current parameters.</summary>
public interface ICudaWork
{
    /// <summary>Work of one launch of <paramref name="method"/>.</summary>
    Work Work(string method);
}

/// <summary>
/// Per-launch GPU times (ns) of every CUDA benchmark case run in this process, keyed by
/// <see cref="Key(string, string, IEnumerable{KeyValuePair{string, object?}})"/>.
/// </summary>
public static class CudaResults
{
    private static readonly Dictionary<string, List<double>> s_samples = new();
    private static readonly Dictionary<string, (Type Type, string Method, string Params)> s_cases = new();
    private static readonly object s_lock = new();

    /// <summary>"Type.Method(Name=Value, …)" with parameters ordered by name and formatted invariantly.</summary>
    public static string Key(string type, string method, IEnumerable<KeyValuePair<string, object?>> parameters) =>
        $"{type}.{method}({ParamText(parameters)})";

    /// <summary>"Name=Value, …" ordered by name.</summary>
    public static string ParamText(IEnumerable<KeyValuePair<string, object?>> parameters) =>
        string.Join(", ", parameters.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => $"{p.Key}={Convert.ToString(p.Value, CultureInfo.InvariantCulture)}"));

    /// <summary>Adds samples for a case.</summary>
    public static void Add(Type type, string method, string parameters, ReadOnlySpan<double> ns)
    {
        string key = $"{type.Name}.{method}({parameters})";
        lock (s_lock)
        {
            if (!s_samples.TryGetValue(key, out var list))
            {
                s_samples[key] = list = [];
                s_cases[key] = (type, method, parameters);
            }
            foreach (var v in ns) list.Add(v);
        }
    }

    /// <summary>Median and minimum per-launch time in ns and the sample count, or null when the case has not run.</summary>
    public static (double MedianNs, double MinNs, int Count)? Stats(string key)
    {
        lock (s_lock)
        {
            if (!s_samples.TryGetValue(key, out var list) || list.Count == 0) return null;
            var sorted = list.ToArray();
            Array.Sort(sorted);
            int n = sorted.Length;
            double median = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
            return (median, sorted[0], n);
        }
    }

    /// <summary>Every case that ran, in order of first appearance.</summary>
    public static IReadOnlyList<(string Key, Type Type, string Method, string Params)> Cases()
    {
        lock (s_lock) return s_cases.Select(kv => (kv.Key, kv.Value.Type, kv.Value.Method, kv.Value.Params)).ToList();
    }
}

/// <summary>
/// Base of the CUDA kernel benchmarks. Each benchmark method calls <see cref="Time"/>, which for each of its launches
/// (1) overwrites a scratch buffer larger than L2 with a memset, (2) records a start event, (3) launches the kernel on
/// the next of <see cref="Copies"/> input sets, (4) records an end event; after the last launch it waits for the device
/// and stores each launch's event-measured time in <see cref="CudaResults"/>.
/// </summary>
/// <remarks>
/// Why this shape: BenchmarkDotNet measures host wall time, which for asynchronous GPU work is either the launch cost
/// (no synchronisation) or launch + synchronisation latency + the L2 scrub (with one). The GPU's own clock is the
/// honest figure, so the kernels are timed with events and the summary's "GPU µs" column (median of every launch's
/// event time) is the number the GB/s and TFLOP/s columns use. BenchmarkDotNet still drives warm-up, iteration counts
/// and the report; its own Mean column (with OperationsPerInvoke = launches, so per launch) is host time per launch
/// including the scrub and the final wait, and is not a kernel time. The memset is enqueued before the start event, so
/// the device is busy with it while the host enqueues the start event and the kernel: the event pair then brackets the
/// kernel alone, not the host's launch latency. The first call of each method runs one untimed launch and waits, so
/// NVRTC compilation and module loading stay out of the samples. No [IterationSetup]: it would force one invocation per
/// iteration and put BenchmarkDotNet's bookkeeping between scrub and kernel.
/// </remarks>
public abstract class CudaBenchmark : ICudaWork
{
    /// <summary>Launches per invocation of a memory-bound or small kernel (the methods' OperationsPerInvoke).</summary>
    public const int Launches = 8;

    /// <summary>Launches per invocation of the long kernels (attention fwd+bwd, 8192³ GEMMs): one invocation stays under a second.</summary>
    public const int FewLaunches = 2;

    /// <summary>Input sets rotated between launches, so consecutive launches never read the same buffers.</summary>
    protected const int Copies = 3;

    private Tensor? _scrub;
    private CudaEvent[] _events = [];
    private readonly HashSet<string> _warmed = [];
    private int _rotation;
    private string? _params;

    /// <summary>The GPU.</summary>
    protected CudaBackend Gpu { get; private set; } = null!;

    /// <summary>The GPU's device.</summary>
    protected Device Dev => Gpu.Device;

    /// <inheritdoc />
    public abstract Work Work(string method);

    /// <summary>Allocates the benchmark's inputs (called after the GPU is known).</summary>
    protected abstract void Setup();

    /// <summary>Frees the benchmark's inputs.</summary>
    protected abstract void Cleanup();

    [GlobalSetup]
    public void GlobalSetup()
    {
        Gpu = CudaAvailability.Require();
        // 4× L2 (50 MB on an H100) and at least 256 MB: every line of L2 is evicted by the memset.
        long scrubBytes = Math.Max(256L << 20, 4 * Gpu.L2CacheBytes);
        _scrub = Tensor.Empty(new Shape(checked((int)(scrubBytes / sizeof(float)))), DType.F32, Dev);
        _events = new CudaEvent[2 * Launches];
        for (int i = 0; i < _events.Length; i++) _events[i] = Gpu.CreateEvent();
        Setup();
        Gpu.Synchronize();
    }

    [GlobalCleanup]
    public void GlobalCleanup()
    {
        if (Gpu is null) return;
        Gpu.Synchronize();
        Cleanup();
        _scrub?.Dispose();
        foreach (var e in _events) e.Dispose();
        // Give the pooled blocks back to the driver: the next benchmark class may need the memory for other shapes.
        Gpu.TrimPool();
        CudaReport.WriteLive();
    }

    /// <summary>Times <paramref name="launches"/> launches of <paramref name="launch"/> (argument: which input set) with events.</summary>
    protected void Time(Action<int> launch, int launches = Launches, [CallerMemberName] string method = "")
    {
        if (launches > Launches) throw new ArgumentOutOfRangeException(nameof(launches), launches, $"at most {Launches} launches per invocation");
        if (_warmed.Add(method))
        {
            launch(0);
            Gpu.Synchronize();
        }
        for (int j = 0; j < launches; j++)
        {
            Gpu.Fill(_scrub!, j + 1);
            Gpu.Record(_events[2 * j]);
            _rotation = (_rotation + 1) % Copies;
            launch(_rotation);
            Gpu.Record(_events[2 * j + 1]);
        }
        _events[2 * launches - 1].Synchronize();
        Span<double> ns = stackalloc double[launches];
        for (int j = 0; j < launches; j++) ns[j] = CudaEvent.ElapsedMilliseconds(_events[2 * j], _events[2 * j + 1]) * 1e6;
        CudaResults.Add(DeclaredType(GetType()), method, _params ??= ParamText(this), ns);
    }

    /// <summary>
    /// The benchmark class as written: BenchmarkDotNet's in-process emit toolchain runs a generated subclass
    /// ("Runnable_N"), while the summary's columns know the declared type.
    /// </summary>
    internal static Type DeclaredType(Type type)
    {
        var t = type;
        while (t.Assembly != typeof(CudaBenchmark).Assembly && t.BaseType is not null) t = t.BaseType;
        return t.Assembly == typeof(CudaBenchmark).Assembly ? t : type;
    }

    /// <summary>The instance's BenchmarkDotNet parameters as <see cref="CudaResults.ParamText"/> formats them.</summary>
    internal static string ParamText(object instance) =>
        CudaResults.ParamText(instance.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.GetCustomAttributes().Any(a => a is ParamsAttribute or ParamsSourceAttribute or ParamsAllValuesAttribute))
            .Select(p => new KeyValuePair<string, object?>(p.Name, p.GetValue(instance))));

    /// <summary>Makes <see cref="Copies"/> tensors with <paramref name="make"/>(copy index).</summary>
    protected static Tensor[] Sets(Func<int, Tensor> make) => Enumerable.Range(0, Copies).Select(make).ToArray();

    /// <summary>Disposes every tensor given (nulls skipped).</summary>
    protected static void Free(params IEnumerable<Tensor?>[] groups)
    {
        foreach (var g in groups)
            foreach (var t in g) t?.Dispose();
    }
}
