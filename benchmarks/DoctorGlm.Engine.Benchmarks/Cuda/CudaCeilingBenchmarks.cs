using BenchmarkDotNet.Attributes;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>
/// The two ceilings every CUDA figure is compared with, measured in the same run: a 1 GiB device-to-device copy
/// (cuMemcpyDtoDAsync; bytes read + written), and 8192³ cuBLAS GEMMs through <see cref="Backends.IBackend.Gemm"/> with
/// bf16 A and B and fp32 C (tensor cores), and with fp32 A, B, C (pedantic math, no TF32: the ceiling of the fp32
/// kernels, which run on the CUDA cores).
/// </summary>
public class CudaCeilingBenchmarks : CudaBenchmark
{
    /// <summary>Bytes of the copy's source (and destination).</summary>
    public const long CopyBytes = 1L << 30;

    /// <summary>GEMM size n (m = n = k).</summary>
    public const int GemmN = 8192;

    private Tensor _src = null!, _dst = null!, _a16 = null!, _b16 = null!, _a32 = null!, _b32 = null!, _c = null!;

    /// <inheritdoc />
    public override Work Work(string method) => method switch
    {
        nameof(CopyDeviceToDevice) => new Work(2.0 * CopyBytes, 0, Bound.Memory),
        _ => new Work(0, 2.0 * GemmN * GemmN * GemmN, Bound.Compute),
    };

    /// <inheritdoc />
    protected override void Setup()
    {
        _src = BenchData.Uniform(new Shape((int)(CopyBytes / 4)), 1, device: Dev);
        _dst = Tensor.Empty(_src.Shape, DType.F32, Dev);
        var s = new Shape(GemmN, GemmN);
        _a32 = BenchData.Uniform(s, 2, device: Dev);
        _b32 = BenchData.Uniform(s, 3, device: Dev);
        _a16 = Tensor.Empty(s, DType.BF16, Dev);
        _b16 = Tensor.Empty(s, DType.BF16, Dev);
        Gpu.Copy(_a32, _a16);
        Gpu.Copy(_b32, _b16);
        _c = Tensor.Empty(s, DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free([_src, _dst, _a16, _b16, _a32, _b32, _c]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void CopyDeviceToDevice() => Time(_ => Gpu.Copy(_src, _dst));

    [Benchmark(OperationsPerInvoke = FewLaunches)]
    public void GemmBf16() => Time(_ => Gemm(_a16, _b16), FewLaunches);

    [Benchmark(OperationsPerInvoke = FewLaunches)]
    public void GemmF32() => Time(_ => Gemm(_a32, _b32), FewLaunches);

    private void Gemm(Tensor a, Tensor b) =>
        Gpu.Gemm(false, false, GemmN, GemmN, GemmN, 1f, a, 0, GemmN, 0, b, 0, GemmN, 0, 0f, _c, 0, GemmN, 0, 1);

    /// <summary>Measured copy bandwidth in GB/s (bytes read + written), or null when the ceiling has not run.</summary>
    public static double? CopyGBps => Rate(nameof(CopyDeviceToDevice), 2.0 * CopyBytes);

    /// <summary>Measured bf16 GEMM rate in TFLOP/s, or null.</summary>
    public static double? GemmBf16Tflops => Rate(nameof(GemmBf16), 2.0 * GemmN * GemmN * GemmN) / 1000;

    /// <summary>Measured fp32 GEMM rate in TFLOP/s, or null.</summary>
    public static double? GemmF32Tflops => Rate(nameof(GemmF32), 2.0 * GemmN * GemmN * GemmN) / 1000;

    /// <summary>amount per ns (GB/s or GFLOP/s) from the median launch time.</summary>
    private static double? Rate(string method, double amount) =>
        CudaResults.Stats(CudaResults.Key(nameof(CudaCeilingBenchmarks), method, [])) is { } s ? amount / s.MedianNs : null;
}
