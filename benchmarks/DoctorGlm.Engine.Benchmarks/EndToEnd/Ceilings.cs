using System.Diagnostics;
using DoctorGlm.Engine.Backends.Cpu;
using System.Runtime.Intrinsics.X86;
using DoctorGlm.Engine.Backends.Cuda;
using DoctorGlm.Engine.Benchmarks.Cpu;

using DoctorGlm.Engine.Benchmarks.Cuda;

namespace DoctorGlm.Engine.Benchmarks.EndToEnd;

/// <summary>
/// Quick in-process measurements of the two ceilings the end-to-end figures are put against (the BenchmarkDotNet
/// suites measure the same things with full statistics): copy bandwidth, and the matrix-multiply rate.
/// </summary>
public static class Ceilings
{
    /// <summary>
    /// Copy bandwidth in GB/s counting bytes read plus written, best of five. CPU: 2 × 512 MiB (far beyond any cache),
    /// one chunk per core; GPU: a 1 GiB device-to-device copy timed with CUDA events.
    /// </summary>
    public static double CopyGBps(Device device)
    {
        if (device.Kind == DeviceKind.Cpu)
        {
            double gbps = CpuCopyGBps(512L << 20);
            CpuAllocator.Trim(); // the two 512 MiB buffers would otherwise stay pooled and count in the process's memory
            return gbps;
        }
        var gpu = CudaAvailability.Require();
        int n = 1 << 28; // 1 GiB of fp32
        using var src = BenchData.Uniform(new Shape(n), 7, device: device);
        using var dst = Tensor.Empty(src.Shape, DType.F32, device);
        gpu.Copy(src, dst); // first touch outside the timing
        double best = TimeGpu(gpu, () => gpu.Copy(src, dst), 5).Min();
        return 2.0 * n * sizeof(float) / (best * 1e6);
    }

    private static unsafe double CpuCopyGBps(long bytes)
    {
        int floats = checked((int)(bytes / sizeof(float)));
        using var src = BenchData.Uniform(new Shape(floats), 7);
        using var dst = Tensor.Empty(src.Shape);
        byte* s = (byte*)src.Ptr<float>(), d = (byte*)dst.Ptr<float>();
        int chunks = Environment.ProcessorCount;
        double best = double.MaxValue;
        for (int rep = 0; rep < 6; rep++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
            {
                long lo = bytes * c / chunks, hi = bytes * (c + 1) / chunks;
                Buffer.MemoryCopy(s + lo, d + lo, hi - lo, hi - lo);
            });
            if (rep > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds); // the first pass also faults the pages in
        }
        return 2.0 * bytes / best / 1e9;
    }

    /// <summary>
    /// Peak matrix rate in TFLOP/s for <paramref name="dtype"/> operands. GPU: an 8192³ cuBLAS GEMM (fp32 pedantic,
    /// or bf16 with fp32 accumulation), median of three after a warm-up. CPU: the fp32 FMA peak of all cores (register-only
    /// FMA chains, the widest vector unit), which bounds any kernel there (bf16 weights are multiplied in fp32).
    /// </summary>
    public static double MatmulTflops(Device device, DType dtype)
    {
        if (device.Kind == DeviceKind.Cpu)
        {
            // The CPU multiplies 16-bit weights in fp32 (converted while packing), so fp32 FMA is its ceiling for any dtype.
            return CpuFmaTflops();
        }
        var gpu = CudaAvailability.Require();
        const int n = 8192;
        using var a = BenchData.Uniform(new Shape(n, n), 8, 1f, dtype, device);
        using var b = BenchData.Uniform(new Shape(n, n), 9, 1f, dtype, device);
        using var c = Tensor.Empty(new Shape(n, n), DType.F32, device);
        void Run() => gpu.Gemm(false, false, n, n, n, 1f, a, 0, n, 0, b, 0, n, 0, 0f, c, 0, n, 0, 1);
        Run();
        var ms = TimeGpu(gpu, Run, 3);
        Array.Sort(ms);
        return 2.0 * n * n * (double)n / (ms[1] * 1e9);
    }

    private static double CpuFmaTflops()
    {
        bool wide = Avx512F.IsSupported;
        int threads = Environment.ProcessorCount;
        double flops = (double)threads * PeakFlopsBenchmarks.Iterations * PeakFlopsBenchmarks.Chains * (wide ? 16 : 8) * 2;
        double best = double.MaxValue;
        for (int rep = 0; rep < 4; rep++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads },
                t => { _ = wide ? PeakFlopsBenchmarks.Loop512() : PeakFlopsBenchmarks.Loop256(); });
            if (rep > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds); // the first pass pays for JIT and thread start
        }
        return flops / best / 1e12;
    }

    /// <summary>Milliseconds of each of <paramref name="reps"/> runs of <paramref name="work"/>, each between two events.</summary>
    public static double[] TimeGpu(CudaBackend gpu, Action work, int reps)
    {
        var events = Enumerable.Range(0, 2 * reps).Select(_ => gpu.CreateEvent()).ToArray();
        try
        {
            for (int r = 0; r < reps; r++)
            {
                gpu.Record(events[2 * r]);
                work();
                gpu.Record(events[2 * r + 1]);
            }
            events[^1].Synchronize();
            return Enumerable.Range(0, reps).Select(r => (double)CudaEvent.ElapsedMilliseconds(events[2 * r], events[2 * r + 1])).ToArray();
        }
        finally
        {
            foreach (var e in events) e.Dispose();
        }
    }

    /// <summary>Waits for the device of <paramref name="device"/> (a no-op on the CPU, whose kernels are synchronous).</summary>
    public static void Synchronize(Device device)
    {
        if (device.Kind != DeviceKind.Cpu) CudaAvailability.Require().Synchronize();
    }

    /// <summary>Starts a new peak for <paramref name="device"/>'s allocator (<c>Memory.PeakBytes</c> = what is in use now).</summary>
    public static void ResetPeak(Device device)
    {
        if (device.Kind == DeviceKind.Cpu) CpuAllocator.ResetPeak();
        else CudaAvailability.Require().ResetPeak();
    }

    /// <summary>The device a "--device" value names: cpu, or cuda (device 0; fails with the reason when there is none).</summary>
    public static Device Parse(string spec)
    {
        switch (spec)
        {
            case "cpu": return Device.Cpu;
            case "cuda" or "cuda:0": return CudaAvailability.Require().Device;
            default: throw new ArgumentException($"--device must be cpu or cuda, not '{spec}'");
        }
    }

    /// <summary>A human name for the device.</summary>
    public static string Name(Device device) =>
        device.Kind == DeviceKind.Cpu ? $"CPU, {Environment.ProcessorCount} cores" : CudaAvailability.Require().DeviceName;
}
