using System.Reflection;
using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Backends.Cuda.Native;

/// <summary>
/// Maps the logical library names our <c>[LibraryImport]</c> declarations use ("cuda", "nvrtc", "cublas",
/// "cublasLt") to the files of whichever CUDA release (11.8, 12 or 13) is installed. The runtime's own probing
/// only knows one exact file name; CUDA versions its sonames, so we try every known name in every likely folder
/// and, when nothing loads, throw one exception listing all of them.
/// </summary>
internal static class NativeLibraries
{
    /// <summary>Environment variable naming extra folders (path-separator list) searched before all others.</summary>
    public const string PathVariable = "DOCTORGLM_CUDA_PATH";

    private static int s_installed;
    private static readonly Dictionary<string, nint> s_loaded = new();
    private static readonly object s_lock = new();

    /// <summary>Installs the resolver on this assembly (idempotent; called by each binding class's static constructor).</summary>
    public static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref s_installed, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!IsLogical(name)) return 0; // not ours: let the runtime probe as usual
        lock (s_lock)
        {
            if (s_loaded.TryGetValue(name, out var h)) return h;
            var search = LibrarySearch.ForThisProcess();
            h = search.Load(name, out var file);
            s_loaded[name] = h;
            RecordLoaded(name, file);
            return h;
        }
    }

    /// <summary>True for the names our bindings use.</summary>
    public static bool IsLogical(string name) => name is "cuda" or "nvrtc" or "cublas" or "cublasLt";

    /// <summary>The file each logical library was loaded from ("cuda" → ".../libcuda.so.1"), as far as loaded yet.</summary>
    public static IReadOnlyDictionary<string, string> LoadedFiles
    {
        get { lock (s_files) return new Dictionary<string, string>(s_files); }
    }

    private static readonly Dictionary<string, string> s_files = new();

    /// <summary>Records where <paramref name="logical"/> came from (the real process's loads only).</summary>
    private static void RecordLoaded(string logical, string file)
    {
        lock (s_files) s_files[logical] = file;
    }

    /// <summary>The folder libcuda was loaded from, once it has been (the driver's folder is searched for the others).</summary>
    internal static string? DriverFolder { get; set; }

    /// <summary>
    /// The driver's CUDA version (cuDriverGetVersion, e.g. 12040), once the backend has read it: NVRTC releases of a
    /// newer major version are then skipped, since a driver cannot load the CUBINs they produce.
    /// </summary>
    internal static int? DriverVersion { get; set; }
}

/// <summary>
/// The search itself, with the file system and the loader passed in so that unit tests can run it without CUDA.
/// </summary>
/// <param name="Windows">Whether to use Windows DLL names.</param>
/// <param name="GetEnv">Reads an environment variable.</param>
/// <param name="ListCudaRoots">Lists folders matching <c>/usr/local/cuda*</c>.</param>
/// <param name="TryLoad">Tries to load a library by full path or bare name; returns 0 on failure.</param>
/// <param name="ListFiles">Lists the files of a folder matching a wildcard pattern (none when the folder is missing).</param>
/// <param name="DriverVersion">The driver's CUDA version (e.g. 12040) when known: NVRTC of a newer major is skipped.</param>
internal sealed record LibrarySearch(bool Windows, Func<string, string?> GetEnv, Func<IEnumerable<string>> ListCudaRoots, Func<string, nint> TryLoad,
    Func<string, string, IEnumerable<string>>? ListFiles = null, int? DriverVersion = null)
{
    /// <summary>The real process: real environment, real <c>/usr/local</c>, <see cref="NativeLibrary.TryLoad(string, out nint)"/>.</summary>
    public static LibrarySearch ForThisProcess() => new(
        OperatingSystem.IsWindows(),
        Environment.GetEnvironmentVariable,
        () => Directory.Exists("/usr/local") ? Directory.EnumerateDirectories("/usr/local", "cuda*") : [],
        p => NativeLibrary.TryLoad(p, out var h) ? h : 0,
        (folder, pattern) => Directory.Exists(folder) ? Directory.EnumerateFiles(folder, pattern).Order(StringComparer.Ordinal) : [],
        NativeLibraries.DriverVersion);

    /// <summary>The CUDA major version a candidate file name belongs to (libnvrtc.so.12 → 12, nvrtc64_112_0.dll → 11), or null.</summary>
    internal static int? MajorOf(string name)
    {
        var m = System.Text.RegularExpressions.Regex.Match(name, @"\.so\.(\d+)|64_(\d+)");
        if (!m.Success) return null;
        int v = int.Parse(m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
        return v >= 100 ? v / 10 : v; // DLL names carry major·10 + minor (112 → 11, 130 → 13)
    }

    /// <summary>A library that must be loaded before <paramref name="name"/> when it sits in a folder the system
    /// loader does not search: libcublas needs the libcublasLt of its own release.</summary>
    internal string? Prerequisite(string logical, string name) => logical == "cublas" && MajorOf(name) is int major
        ? (Windows ? $"cublasLt64_{major}.dll" : $"libcublasLt.so.{major}") : null;

    /// <summary>File names for a logical library, newest CUDA release first.</summary>
    public static IReadOnlyList<string> CandidateNames(string logical, bool windows) => (logical, windows) switch
    {
        ("cuda", false) => ["libcuda.so.1", "libcuda.so"],
        ("cuda", true) => ["nvcuda.dll"],
        ("nvrtc", false) => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
        // NVRTC 11.x DLLs are named after the minor version they are compatible from (nvrtc64_112_0.dll for all 11.2+).
        ("nvrtc", true) => ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"],
        ("cublas", false) => ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
        ("cublas", true) => ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"],
        ("cublasLt", false) => ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"],
        ("cublasLt", true) => ["cublasLt64_13.dll", "cublasLt64_12.dll", "cublasLt64_11.dll"],
        _ => throw new ArgumentException($"unknown CUDA library '{logical}'", nameof(logical)),
    };

    /// <summary>
    /// Folders to search, in order: <c>DOCTORGLM_CUDA_PATH</c> entries (each also with lib64/ and bin/),
    /// <c>LD_LIBRARY_PATH</c> (or <c>PATH</c> on Windows, plus <c>CUDA_PATH\bin</c>), <c>/usr/local/cuda*/lib64</c>
    /// newest version first, the distribution's library folders, and the folder the driver was loaded from.
    /// </summary>
    public IReadOnlyList<string> Folders(string? driverFolder)
    {
        var list = new List<string>();
        void Add(string? f) { if (!string.IsNullOrWhiteSpace(f) && !list.Contains(f)) list.Add(f); }
        foreach (var f in Split(GetEnv(NativeLibraries.PathVariable)))
        {
            Add(f);
            Add(Path.Combine(f, Windows ? "bin" : "lib64"));
        }
        if (Windows)
        {
            var cudaPath = GetEnv("CUDA_PATH");
            if (!string.IsNullOrEmpty(cudaPath)) { Add(Path.Combine(cudaPath, "bin")); Add(Path.Combine(cudaPath, "bin", "x64")); }
            foreach (var f in Split(GetEnv("PATH"))) Add(f);
        }
        else
        {
            foreach (var f in Split(GetEnv("LD_LIBRARY_PATH"))) Add(f);
            foreach (var root in ListCudaRoots().OrderByDescending(VersionOf).ThenByDescending(r => r, StringComparer.Ordinal))
                Add(Path.Combine(root, "lib64"));
            Add("/usr/lib/x86_64-linux-gnu");
            Add("/usr/lib64");
            Add("/usr/lib/wsl/lib"); // WSL2 puts the driver's libcuda here
        }
        Add(driverFolder);
        return list;
    }

    /// <summary>Loads the first candidate that works; throws <see cref="DllNotFoundException"/> listing everything tried.</summary>
    public nint Load(string logical) => Load(logical, out _);

    /// <summary><see cref="Load(string)"/>, also saying which file it loaded (a bare name: found by the system loader).</summary>
    public nint Load(string logical, out string file)
    {
        var names = CandidateNames(logical, Windows);
        // A driver cannot load CUBINs from a newer NVRTC major (the soname without a number stays, as a last resort).
        if (logical == "nvrtc" && DriverVersion is int dv)
            names = names.Where(n => MajorOf(n) is not int major || major <= dv / 1000).ToList();
        var folders = Folders(NativeLibraries.DriverFolder);
        foreach (var folder in folders)
            foreach (var name in names)
            {
                var full = Path.Combine(folder, name);
                var h = TryLoad(full);
                if (h == 0 && Prerequisite(logical, name) is { } pre && TryLoad(Path.Combine(folder, pre)) != 0)
                    h = TryLoad(full); // its dependency was not on the loader's path; now it is loaded
                if (h != 0)
                {
                    file = full;
                    if (logical == "cuda") NativeLibraries.DriverFolder = folder;
                    // NVRTC dlopens libnvrtc-builtins by soname when it compiles; loaded now from the same folder, the
                    // loader finds it even where that folder is on no search path.
                    if (logical == "nvrtc" && ListFiles is not null)
                        foreach (var b in ListFiles(folder, Windows ? "nvrtc-builtins64_*.dll" : "libnvrtc-builtins.so*")) TryLoad(b);
                    return h;
                }
            }
        // Last: the system loader's own search (ldconfig cache, rpath), by bare name.
        foreach (var name in names)
        {
            var h = TryLoad(name);
            if (h != 0) { file = name + " (found by the system loader)"; return h; }
        }
        throw new DllNotFoundException(
            $"CUDA library '{logical}' was not found. Tried the names {string.Join(", ", names)} " +
            $"in the folders {(folders.Count == 0 ? "(none)" : string.Join(", ", folders))}, then through the system loader. " +
            $"Set {NativeLibraries.PathVariable} to the folder that holds it.");
    }

    // The target platform's list separator (not the host's: the tests describe Windows environments on Linux).
    private IEnumerable<string> Split(string? value) =>
        string.IsNullOrEmpty(value) ? [] : value.Split(Windows ? ';' : ':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>The version in a <c>cuda-12.4</c> style folder name (<c>cuda</c> alone counts as newest: it is the symlink to the default).</summary>
    internal static Version VersionOf(string root)
    {
        var name = Path.GetFileName(root.TrimEnd('/', '\\'));
        if (name == "cuda") return new Version(int.MaxValue, 0);
        var v = name.StartsWith("cuda-", StringComparison.Ordinal) ? name[5..] : "";
        return Version.TryParse(v.Contains('.') ? v : v + ".0", out var parsed) ? parsed : new Version(0, 0);
    }
}
