using DoctorGlm.Engine.Backends.Cuda;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// NVRTC compiles every embedded kernel file to SASS for the GPUs we target, with no GPU needed; compile errors
/// carry file:line; the disk cache is hit on the second compile. Skipped only where no libnvrtc is installed.
/// </summary>
public sealed class KernelCompilerTests : IDisposable
{
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "doctorglm-kernel-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose() { if (Directory.Exists(_cache)) Directory.Delete(_cache, recursive: true); }

    private KernelCompiler Compiler()
    {
        var c = new KernelCompiler(_cache);
        try { _ = c.NvrtcVersion; }
        catch (DllNotFoundException e) { Assert.Skip("no libnvrtc on this machine: " + e.Message); }
        return c;
    }

    public static TheoryData<string, int> KernelsAndArchs()
    {
        var data = new TheoryData<string, int>();
        foreach (var f in KernelCompiler.KernelFiles)
            foreach (int arch in new[] { 80, 90 })
                data.Add(f, arch);
        return data;
    }

    [Fact]
    public void EveryKernelFamilyIsEmbedded()
    {
        string[] expected = ["attention.cu", "attention_mma.cu", "cross_entropy.cu", "dropout.cu", "elementwise.cu", "embedding.cu", "gelu.cu",
            "layernorm.cu", "optim.cu", "quant.cu", "rotary.cu", "sampling.cu", "tanh.cu"];
        Assert.Equal(expected, KernelCompiler.KernelFiles);
        Assert.Contains(KernelCompiler.Headers, h => h.Name == "common.cuh");
    }

    [Theory]
    [MemberData(nameof(KernelsAndArchs))]
    public void CompilesToCubin(string file, int arch)
    {
        var k = Compiler().CompileEmbedded(file, arch);
        Assert.True(k.IsCubin, $"{file}: expected a CUBIN for sm_{arch}, got PTX");
        Assert.False(k.FromCache);
        // An ELF image: what cuModuleLoadData loads without JIT.
        Assert.True(k.Image.Length > 4 && k.Image[0] == 0x7F && k.Image[1] == (byte)'E' && k.Image[2] == (byte)'L' && k.Image[3] == (byte)'F',
            $"{file}: the CUBIN for sm_{arch} is not an ELF image");
        Assert.DoesNotContain("warning", k.Log, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Threads per block each kernel is launched with (CudaBackend's Launch calls): 256 or fewer unless listed.</summary>
    private static int LaunchThreads(string kernel) => kernel switch
    {
        "cross_entropy_forward" or "select_candidates" or "attention_decode" => 512,
        _ => 256,
    };

    /// <summary>
    /// Every kernel fits the 64K-register file of an SM at the block size it is launched with (registers are given out
    /// in multiples of 8 a thread). A kernel that does not fails only when launched, on a GPU; the compiler plans for
    /// its block size only when told (__launch_bounds__). Register counts come from the CUBIN's .nv.info attributes.
    /// </summary>
    [Theory]
    [MemberData(nameof(KernelsAndArchs))]
    public void EveryKernelFitsTheRegisterFileAtItsLaunchSize(string file, int arch)
    {
        var regs = CubinInfo.RegisterCounts(Compiler().CompileEmbedded(file, arch).Image);
        Assert.NotEmpty(regs);
        foreach (var (kernel, count) in regs)
        {
            int threads = LaunchThreads(kernel), perThread = (count + 7) / 8 * 8;
            Assert.True(count > 0 && perThread * threads <= 65536, $"{file} sm_{arch}: {kernel} uses {count} registers a thread; {threads} threads allow {65536 / threads}");
        }
    }

    [Fact]
    public void CompileErrorReportsFileAndLine()
    {
        var c = Compiler();
        const string broken = "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* y) {\n  y[0] = undefined_name;\n}\n";
        var e = Assert.Throws<KernelCompilationException>(() => c.Compile("broken.cu", broken, 80));
        Assert.Contains("broken.cu(3)", e.Message);
        Assert.Contains("undefined_name", e.Message);
        Assert.Equal("broken.cu", e.File);
    }

    [Fact]
    public void SecondCompileHitsTheDiskCache()
    {
        var c = Compiler();
        var first = c.CompileEmbedded("gelu.cu", 80);
        var second = c.CompileEmbedded("gelu.cu", 80);
        Assert.False(first.FromCache);
        Assert.True(second.FromCache);
        Assert.Equal(first.Image, second.Image);
        Assert.Single(Directory.GetFiles(_cache, "gelu-sm80-*.cubin"));
        Assert.Empty(Directory.GetFiles(_cache, "*.tmp"));
        // Another architecture is another key.
        Assert.False(c.CompileEmbedded("gelu.cu", 90).FromCache);
    }

    [Fact]
    public void CacheKeyCoversSourceOptionsArchAndVersion()
    {
        string k = KernelCompiler.CacheKey("src", ["-a"], 80, 12, 4);
        Assert.NotEqual(k, KernelCompiler.CacheKey("src ", ["-a"], 80, 12, 4));
        Assert.NotEqual(k, KernelCompiler.CacheKey("src", ["-b"], 80, 12, 4));
        Assert.NotEqual(k, KernelCompiler.CacheKey("src", ["-a"], 90, 12, 4));
        Assert.NotEqual(k, KernelCompiler.CacheKey("src", ["-a"], 80, 12, 5));
        Assert.Equal(k, KernelCompiler.CacheKey("src", ["-a"], 80, 12, 4));
    }

    [Fact]
    public void NewerDeviceThanNvrtcGetsPtx()
    {
        // sm_990 is beyond every NVRTC: the compiler must fall back to PTX for the newest architecture it knows.
        var k = Compiler().CompileEmbedded("dropout.cu", 990);
        Assert.False(k.IsCubin);
        var text = System.Text.Encoding.ASCII.GetString(k.Image);
        Assert.Contains(".entry dropout_forward", text);
        Assert.Equal(0, k.Image[^1]);
    }
}
