using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>fp32 GEMM C[m×n] = A[m×k]·B[k×n] (row-major, no transposes, beta = 0) through <see cref="CpuGemm"/>.</summary>
public unsafe class GemmBenchmarks : IFlopCount
{
    /// <summary>"m×k×n" shape.</summary>
    [Params("512x512x512", "1024x4096x1024")]
    public string Shape { get; set; } = "512x512x512";

    private int _m, _k, _n;
    private float* _a, _b, _c;

    private (int M, int K, int N) Parse()
    {
        var parts = Shape.Split('x');
        return (int.Parse(parts[0]), int.Parse(parts[1]), int.Parse(parts[2]));
    }

    public double Flops
    {
        get
        {
            var (m, k, n) = Parse();
            return 2.0 * m * n * k;
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        (_m, _k, _n) = Parse();
        _a = Alloc((long)_m * _k);
        _b = Alloc((long)_k * _n);
        _c = Alloc((long)_m * _n);
        var rng = new Random(42);
        for (long i = 0; i < (long)_m * _k; i++) _a[i] = (float)(rng.NextDouble() - 0.5);
        for (long i = 0; i < (long)_k * _n; i++) _b[i] = (float)(rng.NextDouble() - 0.5);
    }

    private static float* Alloc(long count) => (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
    }

    [Benchmark]
    public void Sgemm() => CpuGemm.Sgemm(false, false, _m, _n, _k, 1f, _a, _k, _b, _n, 0f, _c, _n);
}
