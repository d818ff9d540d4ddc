using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// The memory-bound kernels of a GLM block on the CPU backend, at the hidden width of a small model
/// (tokens × hidden). Compare the GB/s column with a plain copy of the same size (<see cref="Copy"/>), the
/// practical ceiling of a memory-bound kernel here.
/// </summary>
public class CpuOpBenchmarks : IByteCount
{
    /// <summary>Tokens (rows).</summary>
    [Params(512)]
    public int Tokens { get; set; } = 512;

    /// <summary>Row width.</summary>
    [Params(1024)]
    public int Hidden { get; set; } = 1024;

    private Tensor _x = null!, _y = null!, _dy = null!, _dx = null!, _w = null!, _b = null!, _dw = null!, _db = null!, _mean = null!, _rstd = null!;
    private Tensor _m = null!, _v = null!;
    private readonly CpuBackend _cpu = CpuBackend.Instance;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new RandomGenerator(7);
        var shape = new Shape(Tokens, Hidden);
        _x = rng.Normal(shape); _dy = rng.Normal(shape);
        _y = Tensor.Empty(shape); _dx = Tensor.Empty(shape);
        _m = Tensor.Zeros(shape); _v = Tensor.Zeros(shape);
        _w = rng.Normal(new Shape(Hidden)); _b = rng.Normal(new Shape(Hidden));
        _dw = Tensor.Empty(new Shape(Hidden)); _db = Tensor.Empty(new Shape(Hidden));
        _mean = Tensor.Empty(new Shape(Tokens)); _rstd = Tensor.Empty(new Shape(Tokens));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _y, _dy, _dx, _w, _b, _dw, _db, _mean, _rstd, _m, _v }) t.Dispose();
    }

    public double Bytes(string method)
    {
        double n = (double)Tokens * Hidden * sizeof(float);
        return method switch
        {
            nameof(Copy) => 2 * n,
            nameof(LayerNormForward) => 2 * n,          // read x, write y
            nameof(LayerNormBackward) => 3 * n,         // read dy, x; write dx
            nameof(GeluForward) => 2 * n,
            nameof(GeluBackward) => 3 * n,
            nameof(AdamWStep) => 7 * n,                 // read p, g, m, v; write p, m, v
            _ => 0,
        };
    }

    [Benchmark(Baseline = true)]
    public void Copy() => _cpu.Copy(_x, _y);

    [Benchmark]
    public void LayerNormForward() => _cpu.LayerNormForward(_x, _w, _b, 1e-5f, _y, _mean, _rstd);

    [Benchmark]
    public void LayerNormBackward() => _cpu.LayerNormBackward(_dy, _x, _w, _mean, _rstd, _dx, _dw, _db);

    [Benchmark]
    public void GeluForward() => _cpu.GeluForward(_x, _y);

    [Benchmark]
    public void GeluBackward() => _cpu.GeluBackward(_x, _dy, _dx);

    [Benchmark]
    public void AdamWStep() => _cpu.AdamWStep(_y, _dy, _m, _v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 0.5, 0.5);
}

/// <summary>GLM attention on the CPU backend (prefix-LM mask, B=1, 8 heads of 64): shared setup.</summary>
public abstract class CpuAttentionBenchmarkBase
{
    /// <summary>Sequence length.</summary>
    [Params(256)]
    public int Seq { get; set; } = 256;

    protected const int Heads = 8, HeadDim = 64;
    protected Tensor Q = null!, K = null!, V = null!, O = null!, Lse = null!, Mask = null!, DO = null!, DQ = null!, DK = null!, DV = null!;

    /// <summary>Matrix FLOPs of the forward pass (QKᵀ and PV).</summary>
    protected double ForwardFlops => 4.0 * Heads * Seq * Seq * HeadDim;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new RandomGenerator(3);
        var s = new Shape(1, Seq, Heads, HeadDim);
        Q = rng.Normal(s); K = rng.Normal(s); V = rng.Normal(s); DO = rng.Normal(s);
        O = Tensor.Empty(s); DQ = Tensor.Empty(s); DK = Tensor.Empty(s); DV = Tensor.Empty(s);
        Lse = Tensor.Empty(new Shape(1, Heads, Seq));
        Mask = AttentionMask.PrefixLm([Seq / 4], Seq);
    }

    protected void RunForward() => CpuBackend.Instance.AttentionForward(Q, K, V, null, null, Mask, 0.125f, -10000f, O, Lse);
}

/// <summary>Attention forward.</summary>
public class CpuAttentionForwardBenchmarks : CpuAttentionBenchmarkBase, IFlopCount
{
    /// <inheritdoc />
    public double Flops => ForwardFlops;

    [Benchmark]
    public void Forward() => RunForward();
}

/// <summary>Attention forward + backward (backward recomputes the scores: 2.5× the forward's FLOPs, 3.5× in all).</summary>
public class CpuAttentionForwardBackwardBenchmarks : CpuAttentionBenchmarkBase, IFlopCount
{
    /// <inheritdoc />
    public double Flops => 3.5 * ForwardFlops;

    [Benchmark]
    public void ForwardBackward()
    {
        RunForward();
        CpuBackend.Instance.AttentionBackward(Q, K, V, null, null, Mask, 0.125f, -10000f, O, Lse, DO, DQ, DK, DV, null, null);
    }
}
