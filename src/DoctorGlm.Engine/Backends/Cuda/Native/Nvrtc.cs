using System.Runtime.InteropServices;
using System.Text;

namespace DoctorGlm.Engine.Backends.Cuda.Native;

/// <summary>NVRTC, the runtime CUDA C++ compiler: only the calls the kernel compiler makes.</summary>
internal static unsafe partial class Nvrtc
{
    private const string Lib = "nvrtc";

    static Nvrtc() => NativeLibraries.EnsureResolver();

    public const int NVRTC_SUCCESS = 0;
    public const int NVRTC_ERROR_COMPILATION = 6;

    [LibraryImport(Lib)] private static partial int nvrtcVersion(int* major, int* minor);
    [LibraryImport(Lib)] private static partial int nvrtcGetNumSupportedArchs(int* count);
    [LibraryImport(Lib)] private static partial int nvrtcGetSupportedArchs(int* archs);
    [LibraryImport(Lib)] private static partial int nvrtcCreateProgram(nint* prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Lib)] private static partial int nvrtcCompileProgram(nint prog, int numOptions, byte** options);
    [LibraryImport(Lib)] private static partial int nvrtcGetProgramLogSize(nint prog, nuint* size);
    [LibraryImport(Lib)] private static partial int nvrtcGetProgramLog(nint prog, byte* log);
    [LibraryImport(Lib)] private static partial int nvrtcGetPTXSize(nint prog, nuint* size);
    [LibraryImport(Lib)] private static partial int nvrtcGetPTX(nint prog, byte* ptx);
    [LibraryImport(Lib)] private static partial int nvrtcGetCUBINSize(nint prog, nuint* size);
    [LibraryImport(Lib)] private static partial int nvrtcGetCUBIN(nint prog, byte* cubin);
    [LibraryImport(Lib)] private static partial int nvrtcDestroyProgram(nint* prog);
    [LibraryImport(Lib)] private static partial byte* nvrtcGetErrorString(int result);

    /// <summary>Throws <see cref="CudaException"/> for a non-success status.</summary>
    public static void Check(int status, string call)
    {
        if (status == NVRTC_SUCCESS) return;
        var p = nvrtcGetErrorString(status);
        throw new CudaException(call, status, p == null ? "NVRTC_ERROR_UNKNOWN" : Marshal.PtrToStringUTF8((nint)p)!);
    }

    /// <summary>The NVRTC release (major, minor).</summary>
    public static (int Major, int Minor) Version()
    {
        int a, b;
        Check(nvrtcVersion(&a, &b), nameof(nvrtcVersion));
        return (a, b);
    }

    /// <summary>The sm_XX numbers this NVRTC can produce SASS (a CUBIN) for.</summary>
    public static int[] SupportedArchs()
    {
        int n;
        Check(nvrtcGetNumSupportedArchs(&n), nameof(nvrtcGetNumSupportedArchs));
        var a = new int[n];
        fixed (int* p = a) Check(nvrtcGetSupportedArchs(p), nameof(nvrtcGetSupportedArchs));
        return a;
    }

    /// <summary>Result of one compilation: success flag, the log, and the PTX or CUBIN image.</summary>
    public readonly record struct Output(bool Success, string Log, byte[]? Image);

    /// <summary>
    /// Compiles <paramref name="source"/> named <paramref name="name"/> with the given in-memory headers and options;
    /// a compilation error is returned (with its log), every other failure throws.
    /// </summary>
    public static Output Compile(string source, string name, IReadOnlyList<(string Name, string Text)> headers, IReadOnlyList<string> options, bool cubin)
    {
        var pinned = new List<nint>();
        nint Utf8(string s) { var p = Marshal.StringToCoTaskMemUTF8(s); pinned.Add(p); return p; }
        nint prog = 0;
        try
        {
            var hdr = stackalloc byte*[Math.Max(1, headers.Count)];
            var inc = stackalloc byte*[Math.Max(1, headers.Count)];
            for (int i = 0; i < headers.Count; i++) { hdr[i] = (byte*)Utf8(headers[i].Text); inc[i] = (byte*)Utf8(headers[i].Name); }
            Check(nvrtcCreateProgram(&prog, (byte*)Utf8(source), (byte*)Utf8(name), headers.Count, hdr, inc), nameof(nvrtcCreateProgram));
            var opts = stackalloc byte*[Math.Max(1, options.Count)];
            for (int i = 0; i < options.Count; i++) opts[i] = (byte*)Utf8(options[i]);
            int status = nvrtcCompileProgram(prog, options.Count, opts);
            string log = ReadLog(prog);
            if (status == NVRTC_ERROR_COMPILATION) return new Output(false, log, null);
            Check(status, nameof(nvrtcCompileProgram));
            nuint size;
            byte[] image;
            if (cubin)
            {
                Check(nvrtcGetCUBINSize(prog, &size), nameof(nvrtcGetCUBINSize));
                image = new byte[size];
                fixed (byte* p = image) Check(nvrtcGetCUBIN(prog, p), nameof(nvrtcGetCUBIN));
            }
            else
            {
                Check(nvrtcGetPTXSize(prog, &size), nameof(nvrtcGetPTXSize));
                image = new byte[size]; // includes the terminating NUL cuModuleLoadData needs
                fixed (byte* p = image) Check(nvrtcGetPTX(prog, p), nameof(nvrtcGetPTX));
            }
            return new Output(true, log, image);
        }
        finally
        {
            if (prog != 0) nvrtcDestroyProgram(&prog);
            foreach (var p in pinned) Marshal.FreeCoTaskMem(p);
        }
    }

    private static string ReadLog(nint prog)
    {
        nuint size;
        Check(nvrtcGetProgramLogSize(prog, &size), nameof(nvrtcGetProgramLogSize));
        if (size <= 1) return "";
        var buf = new byte[size];
        fixed (byte* p = buf) Check(nvrtcGetProgramLog(prog, p), nameof(nvrtcGetProgramLog));
        return Encoding.UTF8.GetString(buf, 0, (int)size - 1);
    }
}
