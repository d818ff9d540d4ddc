using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// The machine's practical fp32 FMA peak, to put the GEMM figures in context: independent FMA chains on
/// registers only (no memory traffic), on 1 thread and on all cores. 12 independent accumulators cover
/// FMA latency × throughput on current cores (4 cycles × 2 pipes = 8 in flight).
/// </summary>
public class PeakFlopsBenchmarks : IFlopCount
{
    internal const int Iterations = 1 << 20;
    internal const int Chains = 12;

    /// <summary>Threads running the FMA loop concurrently (1, or every core).</summary>
    [ParamsSource(nameof(ThreadCounts))]
    public int Threads { get; set; } = 1;

    /// <summary>Vector width in bits of the FMA used (256: AVX2 FMA3, 512: AVX-512F).</summary>
    [Params(256, 512)]
    public int Bits { get; set; } = 512;

    public static IEnumerable<int> ThreadCounts() => Environment.ProcessorCount > 1 ? [1, Environment.ProcessorCount] : [1];

    public double Flops => (double)Threads * Iterations * Chains * (Bits / 32) * 2;

    [Benchmark]
    public float FmaLoop()
    {
        if (Threads == 1) return Bits == 512 ? Loop512() : Loop256();
        var results = new float[Threads];
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads },
            t => results[t] = Bits == 512 ? Loop512() : Loop256());
        return results.Sum();
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static float Loop512()
    {
        if (!Avx512F.IsSupported) return float.NaN;
        var m = Vector512.Create(0.999999f);
        var x = Vector512.Create(1e-7f);
        Vector512<float> a0 = m, a1 = m, a2 = m, a3 = m, a4 = m, a5 = m, a6 = m, a7 = m, a8 = m, a9 = m, a10 = m, a11 = m;
        for (int i = 0; i < Iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, x); a1 = Avx512F.FusedMultiplyAdd(a1, m, x);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, x); a3 = Avx512F.FusedMultiplyAdd(a3, m, x);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, x); a5 = Avx512F.FusedMultiplyAdd(a5, m, x);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, x); a7 = Avx512F.FusedMultiplyAdd(a7, m, x);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, x); a9 = Avx512F.FusedMultiplyAdd(a9, m, x);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, x); a11 = Avx512F.FusedMultiplyAdd(a11, m, x);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static float Loop256()
    {
        if (!Fma.IsSupported) return float.NaN;
        var m = Vector256.Create(0.999999f);
        var x = Vector256.Create(1e-7f);
        Vector256<float> a0 = m, a1 = m, a2 = m, a3 = m, a4 = m, a5 = m, a6 = m, a7 = m, a8 = m, a9 = m, a10 = m, a11 = m;
        for (int i = 0; i < Iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, x); a1 = Fma.MultiplyAdd(a1, m, x);
            a2 = Fma.MultiplyAdd(a2, m, x); a3 = Fma.MultiplyAdd(a3, m, x);
            a4 = Fma.MultiplyAdd(a4, m, x); a5 = Fma.MultiplyAdd(a5, m, x);
            a6 = Fma.MultiplyAdd(a6, m, x); a7 = Fma.MultiplyAdd(a7, m, x);
            a8 = Fma.MultiplyAdd(a8, m, x); a9 = Fma.MultiplyAdd(a9, m, x);
            a10 = Fma.MultiplyAdd(a10, m, x); a11 = Fma.MultiplyAdd(a11, m, x);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
