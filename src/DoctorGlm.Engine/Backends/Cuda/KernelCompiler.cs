using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using DoctorGlm.Engine.Backends.Cuda.Native;

namespace DoctorGlm.Engine.Backends.Cuda;

/// <summary>A compiled kernel file: a CUBIN for the exact architecture, or PTX the driver JIT-compiles.</summary>
/// <param name="File">The kernel file (e.g. <c>layernorm.cu</c>).</param>
/// <param name="Arch">The compute capability it was built for, as 80, 90, ….</param>
/// <param name="Image">What <c>cuModuleLoadData</c> takes (PTX is NUL-terminated).</param>
/// <param name="IsCubin">True for SASS, false for PTX.</param>
/// <param name="Log">NVRTC's log (warnings), empty when loaded from the cache.</param>
/// <param name="FromCache">True when the binary came from the disk cache.</param>
public sealed record CompiledKernel(string File, int Arch, byte[] Image, bool IsCubin, string Log, bool FromCache);

/// <summary>
/// Compiles the kernels embedded in this assembly (<c>kernels/*.cu</c>, which may include only
/// <c>common.cuh</c>) with NVRTC at run time, and caches the binaries on disk. Run-time compilation means the
/// package carries no per-architecture binaries and works with any CUDA 11.8–13 install; the cache makes every
/// start after the first free.
/// </summary>
/// <remarks>
/// Options: <c>-std=c++17</c>, no <c>--use_fast_math</c> and <c>--fmad=false</c>, so division, square root,
/// exp and multiply-add round as the CPU reference does (the optimizer updates match it bit for bit).
/// The cache key is SHA-256 over the source, every header, the options, the architecture and the NVRTC version.
/// </remarks>
public sealed class KernelCompiler
{
    private const string ResourcePrefix = "kernels/";

    /// <summary>Environment variable overriding the cache folder.</summary>
    public const string CacheVariable = "DOCTORGLM_KERNEL_CACHE";

    private static readonly string[] s_baseOptions = ["-std=c++17", "--fmad=false", "-default-device"];

    private readonly Lazy<(int Major, int Minor)> _version = new(Nvrtc.Version);
    private readonly Lazy<int[]> _archs = new(Nvrtc.SupportedArchs);

    /// <summary>Creates a compiler caching in <paramref name="cacheFolder"/> (default: <see cref="DefaultCacheFolder"/>).</summary>
    public KernelCompiler(string? cacheFolder = null) => CacheFolder = cacheFolder ?? DefaultCacheFolder();

    /// <summary>Where binaries are cached.</summary>
    public string CacheFolder { get; }

    /// <summary><c>$DOCTORGLM_KERNEL_CACHE</c>, else <c>~/.cache/doctorglm/kernels</c>.</summary>
    public static string DefaultCacheFolder()
    {
        var env = Environment.GetEnvironmentVariable(CacheVariable);
        if (!string.IsNullOrEmpty(env)) return env;
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache", "doctorglm", "kernels");
    }

    /// <summary>NVRTC's version (loads libnvrtc).</summary>
    public (int Major, int Minor) NvrtcVersion => _version.Value;

    /// <summary>The kernel files embedded in the assembly (not the header).</summary>
    public static IReadOnlyList<string> KernelFiles { get; } = typeof(KernelCompiler).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".cu", StringComparison.Ordinal))
        .Select(n => n[ResourcePrefix.Length..]).Order(StringComparer.Ordinal).ToArray();

    /// <summary>The text of an embedded kernel file or header.</summary>
    public static string ReadSource(string file)
    {
        using var s = typeof(KernelCompiler).Assembly.GetManifestResourceStream(ResourcePrefix + file)
            ?? throw new FileNotFoundException($"kernel source '{file}' is not embedded in {typeof(KernelCompiler).Assembly.GetName().Name}");
        using var r = new StreamReader(s, Encoding.UTF8);
        return r.ReadToEnd();
    }

    /// <summary>The headers a kernel may include (only ours).</summary>
    public static IReadOnlyList<(string Name, string Text)> Headers { get; } =
        typeof(KernelCompiler).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".cuh", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).Select(n => (n[ResourcePrefix.Length..], ReadSource(n[ResourcePrefix.Length..]))).ToArray();

    /// <summary>Compiles an embedded kernel file for compute capability <paramref name="arch"/> (e.g. 80).</summary>
    public CompiledKernel CompileEmbedded(string file, int arch) => Compile(file, ReadSource(file), arch);

    /// <summary>
    /// Compiles <paramref name="source"/> (named <paramref name="file"/> in diagnostics) for <paramref name="arch"/>:
    /// a CUBIN when this NVRTC knows the architecture, else PTX for the newest one it knows (the driver JIT-compiles
    /// it for the newer device). Throws <see cref="KernelCompilationException"/> with NVRTC's log on an error.
    /// </summary>
    public CompiledKernel Compile(string file, string source, int arch)
    {
        var (major, minor) = NvrtcVersion;
        bool cubin = _archs.Value.Contains(arch);
        int target = cubin ? arch : _archs.Value.Where(a => a < arch).DefaultIfEmpty(_archs.Value.Max()).Max();
        var options = s_baseOptions.Append(cubin ? $"--gpu-architecture=sm_{arch}" : $"--gpu-architecture=compute_{target}").ToArray();
        string key = CacheKey(source, options, arch, major, minor);
        string path = Path.Combine(CacheFolder, $"{Path.GetFileNameWithoutExtension(file)}-sm{arch}-{key}.{(cubin ? "cubin" : "ptx")}");
        if (File.Exists(path))
        {
            try { return new CompiledKernel(file, arch, File.ReadAllBytes(path), cubin, "", FromCache: true); }
            catch (IOException) { } // being replaced by another process: compile instead
        }
        var result = Nvrtc.Compile(source, file, Headers, options, cubin);
        if (!result.Success) throw new KernelCompilationException(file, arch, result.Log);
        Store(path, result.Image!);
        return new CompiledKernel(file, arch, result.Image!, cubin, result.Log, FromCache: false);
    }

    internal static string CacheKey(string source, IReadOnlyList<string> options, int arch, int nvrtcMajor, int nvrtcMinor)
    {
        var sb = new StringBuilder();
        sb.Append(source).Append('\0');
        foreach (var (n, t) in Headers) sb.Append(n).Append('\0').Append(t).Append('\0');
        foreach (var o in options) sb.Append(o).Append('\0');
        sb.Append(arch).Append('\0').Append(nvrtcMajor).Append('.').Append(nvrtcMinor);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>Writes to a temporary name then renames, so a reader never sees half a binary.</summary>
    private static void Store(string path, byte[] image)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var tmp = path + "." + Environment.ProcessId + "." + Guid.NewGuid().ToString("N") + ".tmp";
            File.WriteAllBytes(tmp, image);
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only or full cache only costs a recompile next time; it must not fail the run.
        }
    }
}

/// <summary>NVRTC rejected a kernel source: the message carries the compiler log (file(line): error …).</summary>
public sealed class KernelCompilationException : Exception
{
    /// <summary>Creates the exception.</summary>
    public KernelCompilationException(string file, int arch, string log)
        : base($"NVRTC could not compile {file} for sm_{arch}:\n{log}")
    {
        File = file;
        Log = log;
    }

    /// <summary>The kernel file.</summary>
    public string File { get; }

    /// <summary>NVRTC's log.</summary>
    public string Log { get; }
}
