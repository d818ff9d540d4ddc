using DoctorGlm.Engine.Backends.Cuda.Native;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>The CUDA library search, run against a fake environment and loader (no CUDA needed).</summary>
public class LibraryResolutionTests
{
    private static LibrarySearch Fake(Dictionary<string, string> env, string[] roots, Func<string, bool> exists, List<string>? tried = null, bool windows = false) =>
        new(windows, n => env.TryGetValue(n, out var v) ? v : null, () => roots,
            p => { tried?.Add(p); return exists(p) ? 42 : 0; });

    [Fact]
    public void CandidateNamesCoverCuda13To11NewestFirst()
    {
        Assert.Equal(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"], LibrarySearch.CandidateNames("nvrtc", false));
        Assert.Equal(["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"], LibrarySearch.CandidateNames("cublas", false));
        Assert.Equal(["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"], LibrarySearch.CandidateNames("cublasLt", false));
        Assert.Equal("libcuda.so.1", LibrarySearch.CandidateNames("cuda", false)[0]);
        Assert.Equal(["nvcuda.dll"], LibrarySearch.CandidateNames("cuda", true));
        Assert.Contains("nvrtc64_120_0.dll", LibrarySearch.CandidateNames("nvrtc", true));
        Assert.Contains("cublas64_12.dll", LibrarySearch.CandidateNames("cublas", true));
        Assert.Throws<ArgumentException>(() => LibrarySearch.CandidateNames("cudnn", false));
    }

    [Fact]
    public void FolderOrderIsOurVariableThenLdLibraryPathThenNewestToolkit()
    {
        var env = new Dictionary<string, string> { ["DOCTORGLM_CUDA_PATH"] = "/opt/mine", ["LD_LIBRARY_PATH"] = "/ld/a:/ld/b" };
        var folders = Fake(env, ["/usr/local/cuda-11.8", "/usr/local/cuda-12.4", "/usr/local/cuda-12.10", "/usr/local/cuda"], _ => false)
            .Folders(driverFolder: "/drv");
        Assert.Equal(["/opt/mine", "/opt/mine/lib64", "/ld/a", "/ld/b",
            "/usr/local/cuda/lib64", "/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.4/lib64", "/usr/local/cuda-11.8/lib64",
            "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib", "/drv"], folders);
    }

    [Fact]
    public void OurVariableWinsOverAnInstalledToolkit()
    {
        var env = new Dictionary<string, string> { ["DOCTORGLM_CUDA_PATH"] = "/opt/mine" };
        var tried = new List<string>();
        var s = Fake(env, ["/usr/local/cuda-12.4"], p => p is "/opt/mine/libnvrtc.so.11.2" or "/usr/local/cuda-12.4/lib64/libnvrtc.so.12", tried);
        Assert.Equal(42, s.Load("nvrtc"));
        Assert.Equal("/opt/mine/libnvrtc.so.11.2", tried[^1]);
    }

    [Fact]
    public void NewestSonameInAFolderIsPreferred()
    {
        var tried = new List<string>();
        var s = Fake([], ["/usr/local/cuda-12.4"], p => p.StartsWith("/usr/local/cuda-12.4/lib64/libcublas.so.1", StringComparison.Ordinal), tried);
        s.Load("cublas");
        Assert.Equal("/usr/local/cuda-12.4/lib64/libcublas.so.13", tried[^1]);
    }

    [Fact]
    public void NvrtcNewerThanTheDriverIsSkipped()
    {
        // A 12.4 driver cannot load CUBINs from NVRTC 13, even when a CUDA 13 toolkit is installed next to 12.
        var tried = new List<string>();
        var present = new[] { "/usr/local/cuda-13.0/lib64/libnvrtc.so.13", "/usr/local/cuda-12.4/lib64/libnvrtc.so.12" };
        var s = Fake([], ["/usr/local/cuda-13.0", "/usr/local/cuda-12.4"], present.Contains, tried) with { DriverVersion = 12040 };
        s.Load("nvrtc");
        Assert.Equal("/usr/local/cuda-12.4/lib64/libnvrtc.so.12", tried[^1]);
        Assert.DoesNotContain(tried, p => p.EndsWith(".so.13", StringComparison.Ordinal));
        // Unknown driver version (not initialised yet): newest first, as before.
        tried.Clear();
        Fake([], ["/usr/local/cuda-13.0", "/usr/local/cuda-12.4"], present.Contains, tried).Load("nvrtc");
        Assert.Equal("/usr/local/cuda-13.0/lib64/libnvrtc.so.13", tried[^1]);
        Assert.Equal(13, LibrarySearch.MajorOf("libnvrtc.so.13"));
        Assert.Equal(11, LibrarySearch.MajorOf("libnvrtc.so.11.2"));
        Assert.Equal(11, LibrarySearch.MajorOf("nvrtc64_112_0.dll"));
        Assert.Equal(12, LibrarySearch.MajorOf("cublas64_12.dll"));
        Assert.Null(LibrarySearch.MajorOf("libnvrtc.so"));
    }

    [Fact]
    public void CublasLtOfTheSameReleaseIsLoadedFirstWhenCublasNeedsIt()
    {
        // libcublas.so.12 in a folder on no loader path fails until its libcublasLt.so.12 is loaded from there.
        var loaded = new List<string>();
        var s = new LibrarySearch(false, n => n == "DOCTORGLM_CUDA_PATH" ? "/opt/cu12" : null, () => [], p =>
        {
            if (p == "/opt/cu12/libcublasLt.so.12") { loaded.Add(p); return 7; }
            if (p == "/opt/cu12/libcublas.so.12" && loaded.Contains("/opt/cu12/libcublasLt.so.12")) { loaded.Add(p); return 8; }
            return 0;
        });
        Assert.Equal(8, s.Load("cublas"));
        Assert.Equal(["/opt/cu12/libcublasLt.so.12", "/opt/cu12/libcublas.so.12"], loaded);
    }

    [Fact]
    public void NvrtcBuiltinsAreLoadedFromTheFolderNvrtcCameFrom()
    {
        var tried = new List<string>();
        var s = Fake(new() { ["DOCTORGLM_CUDA_PATH"] = "/opt/cu" }, [], p => p.StartsWith("/opt/cu/", StringComparison.Ordinal), tried) with
        {
            ListFiles = (folder, pattern) => folder == "/opt/cu" && pattern == "libnvrtc-builtins.so*" ? ["/opt/cu/libnvrtc-builtins.so.13.0"] : [],
        };
        s.Load("nvrtc");
        Assert.Equal(["/opt/cu/libnvrtc.so.13", "/opt/cu/libnvrtc-builtins.so.13.0"], tried);
    }

    [Fact]
    public void FallsBackToTheSystemLoaderByBareName()
    {
        var tried = new List<string>();
        var s = Fake([], [], p => p == "libcuda.so.1", tried);
        Assert.Equal(42, s.Load("cuda", out var file));
        Assert.Equal("libcuda.so.1", tried[^1]);
        Assert.Equal("libcuda.so.1 (found by the system loader)", file);
    }

    [Fact]
    public void SaysWhichFileItLoaded()
    {
        var s = Fake(new() { ["DOCTORGLM_CUDA_PATH"] = "/opt/a:/opt/b" }, [], p => p == "/opt/b/libnvrtc.so.12", []);
        s.Load("nvrtc", out var file);
        Assert.Equal("/opt/b/libnvrtc.so.12", file);
    }

    [Fact]
    public void FailureListsEveryNameAndFolderTried()
    {
        var env = new Dictionary<string, string> { ["DOCTORGLM_CUDA_PATH"] = "/opt/mine", ["LD_LIBRARY_PATH"] = "/ld/a" };
        var e = Assert.Throws<DllNotFoundException>(() => Fake(env, ["/usr/local/cuda-12.4"], _ => false).Load("nvrtc"));
        foreach (var name in LibrarySearch.CandidateNames("nvrtc", false)) Assert.Contains(name, e.Message);
        foreach (var folder in new[] { "/opt/mine", "/ld/a", "/usr/local/cuda-12.4/lib64", "/usr/lib/x86_64-linux-gnu" }) Assert.Contains(folder, e.Message);
        Assert.Contains("DOCTORGLM_CUDA_PATH", e.Message);
    }

    [Fact]
    public void WindowsSearchesCudaPathBin()
    {
        var env = new Dictionary<string, string> { ["CUDA_PATH"] = @"C:\CUDA\v12.4", ["PATH"] = @"C:\Windows" };
        var folders = Fake(env, [], _ => false, windows: true).Folders(null);
        Assert.Equal(Path.Combine(@"C:\CUDA\v12.4", "bin"), folders[0]);
        Assert.Contains(@"C:\Windows", folders);
    }
}
