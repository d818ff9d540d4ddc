using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// 512³ fp32 GEMM for each transpose combination ("NT" = op(A)=A, op(B)=Bᵀ, as in Q·Kᵀ), to show the
/// cost of the transposing pack routines relative to the plain NN case.
/// </summary>
public unsafe class GemmTransposeBenchmarks : IFlopCount
{
    private const int Size = 512;
    private float* _a, _b, _c;

    /// <summary>Transposes: first letter for A, second for B (N = as stored, T = transposed).</summary>
    [Params("NN", "NT", "TN", "TT")]
    public string Op { get; set; } = "NN";

    public double Flops => 2.0 * Size * Size * Size;

    [GlobalSetup]
    public void Setup()
    {
        _a = (float*)NativeMemory.AlignedAlloc(Size * Size * sizeof(float), 64);
        _b = (float*)NativeMemory.AlignedAlloc(Size * Size * sizeof(float), 64);
        _c = (float*)NativeMemory.AlignedAlloc(Size * Size * sizeof(float), 64);
        var rng = new Random(7);
        for (int i = 0; i < Size * Size; i++)
        {
            _a[i] = (float)(rng.NextDouble() - 0.5);
            _b[i] = (float)(rng.NextDouble() - 0.5);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
    }

    [Benchmark]
    public void Sgemm() => CpuGemm.Sgemm(Op[0] == 'T', Op[1] == 'T', Size, Size, Size, 1f, _a, Size, _b, Size, 0f, _c, Size);
}
