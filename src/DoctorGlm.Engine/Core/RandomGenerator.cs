namespace DoctorGlm.Engine;

/// <summary>
/// A seeded, counter-based random source. Each draw takes a fresh 64-bit stream id; a kernel then derives the
/// value for element i from <c>Hash(seed, stream, i)</c>, so the CPU and GPU backends produce the same dropout
/// masks and initial weights, results do not depend on thread scheduling, and a run can be resumed or a
/// checkpointed block recomputed bit-identically by restoring <see cref="State"/>.
/// </summary>
public sealed class RandomGenerator
{
    /// <summary>Creates a generator from a seed.</summary>
    public RandomGenerator(ulong seed) { Seed = seed; }

    /// <summary>The seed.</summary>
    public ulong Seed { get; private set; }

    /// <summary>Number of streams drawn so far.</summary>
    public ulong Counter { get; private set; }

    /// <summary>The full state, to save and restore.</summary>
    public (ulong Seed, ulong Counter) State
    {
        get => (Seed, Counter);
        set => (Seed, Counter) = value;
    }

    /// <summary>Takes the next stream key (what a kernel hashes with the element index).</summary>
    public ulong NextStream() => Mix(Seed ^ Mix(++Counter));

    /// <summary>SplitMix64's finaliser: a bijective 64-bit mix with full avalanche.</summary>
    public static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 24 random bits (exactly representable in fp32) for element <paramref name="index"/> of stream <paramref name="stream"/>.</summary>
    public static float Uniform(ulong stream, ulong index) => (Mix(stream ^ (index * 0xD1B54A32D192ED03UL)) >> 40) * (1f / (1 << 24));

    /// <summary>Standard normal for element <paramref name="index"/> of a stream (Box–Muller on two hashed uniforms).</summary>
    public static float Normal(ulong stream, ulong index)
    {
        ulong h = Mix(stream ^ (index * 0xD1B54A32D192ED03UL));
        double u1 = ((h >> 40) + 1) * (1.0 / ((1 << 24) + 1)); // (0, 1): log is finite
        double u2 = ((h & 0xFFFFFF) ) * (1.0 / (1 << 24));
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>A new fp32 tensor of normal(0, <paramref name="std"/>) values.</summary>
    public Tensor Normal(Shape shape, float std = 1f, Device? device = null)
    {
        ulong s = NextStream();
        var v = new float[shape.NumElements];
        for (long i = 0; i < v.LongLength; i++) v[i] = std * Normal(s, (ulong)i);
        return Tensor.FromArray(v, shape, DType.F32, device);
    }

    /// <summary>A new fp32 tensor of uniform values in [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public Tensor Uniform(Shape shape, float low, float high, Device? device = null)
    {
        ulong s = NextStream();
        var v = new float[shape.NumElements];
        for (long i = 0; i < v.LongLength; i++) v[i] = low + (high - low) * Uniform(s, (ulong)i);
        return Tensor.FromArray(v, shape, DType.F32, device);
    }
}
