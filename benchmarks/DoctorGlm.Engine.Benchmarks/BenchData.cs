using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Benchmarks;

/// <summary>
/// Random inputs for benchmarks, made fast enough for multi-gigabyte tensors: a counter-based hash (the engine's
/// <see cref="RandomGenerator.Uniform"/>) evaluated in parallel chunks, uploaded a slice at a time. Never zeros:
/// zeros hide unwritten outputs and can run faster than real data.
/// </summary>
public static class BenchData
{
    /// <summary>Elements generated and uploaded per slice (64 MiB of fp32): bounds the host buffer for huge tensors.</summary>
    private const int SliceElements = 16 << 20;

    /// <summary>Fills <paramref name="dst"/> (host) with uniform values in [−<paramref name="scale"/>, <paramref name="scale"/>) from stream <paramref name="seed"/>, starting at element <paramref name="first"/>.</summary>
    public static void Fill(Span<float> dst, ulong seed, float scale, long first = 0)
    {
        ulong stream = RandomGenerator.Mix(seed);
        int n = dst.Length;
        int chunks = Math.Max(1, Math.Min(Environment.ProcessorCount * 4, n / 65536));
        unsafe
        {
            fixed (float* p0 = dst)
            {
                float* p = p0;
                Parallel.For(0, chunks, c =>
                {
                    long lo = (long)n * c / chunks, hi = (long)n * (c + 1) / chunks;
                    for (long i = lo; i < hi; i++)
                        p[i] = scale * (2f * RandomGenerator.Uniform(stream, (ulong)(first + i)) - 1f);
                });
            }
        }
    }

    /// <summary>
    /// Writes uniform values in [−<paramref name="scale"/>, <paramref name="scale"/>) into a contiguous float tensor of
    /// any float dtype on any device (F16/BF16 are converted on the device by <see cref="Backends.IBackend.Copy"/>).
    /// </summary>
    public static void Fill(Tensor dst, ulong seed, float scale = 1f)
    {
        if (!dst.IsContiguous) throw new ArgumentException($"BenchData.Fill: {dst.Describe("tensor")} must be contiguous");
        if (!dst.DType.IsFloat()) throw new ArgumentException($"BenchData.Fill: {dst.Describe("tensor")} must have a float dtype");
        long total = dst.NumElements;
        if (total > int.MaxValue) throw new ArgumentException($"BenchData.Fill: {dst.Describe("tensor")} has more than 2^31 elements");
        var flat = dst.Reshape((int)total);
        var buffer = new float[(int)Math.Min(total, SliceElements)];
        for (long start = 0; start < total; start += buffer.Length)
        {
            int n = (int)Math.Min(buffer.Length, total - start);
            var span = buffer.AsSpan(0, n);
            Fill(span, seed, scale, start);
            using var slice = flat.Narrow(0, (int)start, n);
            if (dst.DType == DType.F32)
                dst.Backend.CopyFromHost(MemoryMarshal.AsBytes(span), slice);
            else
            {
                using var staged = Tensor.FromArray(span, new Shape(n), DType.F32, dst.Device);
                dst.Backend.Copy(staged, slice);
            }
        }
        if (!ReferenceEquals(flat, dst)) flat.Dispose();
    }

    /// <summary>A new tensor of uniform values in [−<paramref name="scale"/>, <paramref name="scale"/>).</summary>
    public static Tensor Uniform(Shape shape, ulong seed, float scale = 1f, DType dtype = DType.F32, Device? device = null)
    {
        var t = Tensor.Empty(shape, dtype, device);
        Fill(t, seed, scale);
        return t;
    }

    /// <summary>Uniform ids in [0, <paramref name="vocab"/>) as an I32 tensor.</summary>
    public static Tensor Ids(Shape shape, int vocab, ulong seed, Device? device = null)
    {
        var ids = new int[shape.NumElements];
        ulong stream = RandomGenerator.Mix(seed ^ 0x1D5UL);
        for (int i = 0; i < ids.Length; i++) ids[i] = (int)(RandomGenerator.Uniform(stream, (ulong)i) * vocab) % vocab;
        return Tensor.FromArray(ids, shape, device);
    }
}
