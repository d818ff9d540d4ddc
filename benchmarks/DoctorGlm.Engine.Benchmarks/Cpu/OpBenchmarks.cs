using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// The memory-bound kernels of a GLM block on the CPU backend, on 8.4 M fp32 elements per tensor (2048 tokens × hidden
/// 4096 for LayerNorm; the same count as 512 tokens × FFN 16384 for GELU): 33.5 MB per tensor, more than this
/// machine's 32 MB L3, so they stream from memory as at the 6B shape; x and y in fp32 and in bf16 (16-bit activations:
/// GB/s counts each tensor at its own size). Compare the GB/s column with
/// <see cref="CpuMemoryBandwidthBenchmarks"/> (the all-core copy is the ceiling) and with <see cref="Copy"/>, the backend's
/// own single-threaded copy of one tensor.
/// </summary>
public class CpuOpBenchmarks : IByteCount
{
    /// <summary>Tokens (rows).</summary>
    [Params(2048)]
    public int Tokens { get; set; } = 2048;

    /// <summary>Row width.</summary>
    [Params(4096)]
    public int Hidden { get; set; } = 4096;

    /// <summary>Storage of x and y (the activations; dy and dx stay fp32), as <c>GlmModel.ActivationDType</c> keeps them.</summary>
    [Params(DType.F32, DType.BF16)]
    public DType Activation { get; set; } = DType.F32;

    private Tensor _x = null!, _y = null!, _dy = null!, _dx = null!, _w = null!, _b = null!, _dw = null!, _db = null!, _mean = null!, _rstd = null!;
    private readonly CpuBackend _cpu = CpuBackend.Instance;

    [GlobalSetup]
    public void Setup()
    {
        var shape = new Shape(Tokens, Hidden);
        _x = BenchData.Uniform(shape, 1, 3f, Activation);
        _dy = BenchData.Uniform(shape, 2);
        _y = Tensor.Empty(shape, Activation);
        _dx = Tensor.Empty(shape);
        _w = BenchData.Uniform(new Shape(Hidden), 3);
        _b = BenchData.Uniform(new Shape(Hidden), 4);
        _dw = Tensor.Empty(new Shape(Hidden));
        _db = Tensor.Empty(new Shape(Hidden));
        _mean = Tensor.Empty(new Shape(Tokens));
        _rstd = Tensor.Empty(new Shape(Tokens));
        _cpu.LayerNormForward(_x, _w, _b, 1e-5f, _y, _mean, _rstd);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _y, _dy, _dx, _w, _b, _dw, _db, _mean, _rstd }) t.Dispose();
    }

    public double Bytes(string method)
    {
        double n = (double)Tokens * Hidden * sizeof(float), a = (double)Tokens * Hidden * Activation.SizeOf();
        return method switch
        {
            nameof(Copy) => 2 * a,
            nameof(LayerNormForward) => 2 * a,          // read x, write y
            nameof(LayerNormBackwardInput) => 2 * n + a, // read dy, x; write dx
            nameof(LayerNormBackward) => 2 * n + a,     // … and dweight, dbias (negligible)
            nameof(GeluForward) => 2 * a,
            nameof(GeluBackward) => 2 * n + a,
            _ => 0,
        };
    }

    [Benchmark(Baseline = true)]
    public void Copy() => _cpu.Copy(_x, _y);

    [Benchmark]
    public void LayerNormForward() => _cpu.LayerNormForward(_x, _w, _b, 1e-5f, _y, _mean, _rstd);

    [Benchmark]
    public void LayerNormBackwardInput() => _cpu.LayerNormBackward(_dy, _x, _w, _mean, _rstd, _dx, null, null);

    [Benchmark]
    public void LayerNormBackward() => _cpu.LayerNormBackward(_dy, _x, _w, _mean, _rstd, _dx, _dw, _db);

    [Benchmark]
    public void GeluForward() => _cpu.GeluForward(_x, _y);

    [Benchmark]
    public void GeluBackward() => _cpu.GeluBackward(_x, _dy, _dx);
}

/// <summary>GLM attention on the CPU backend (prefix-LM mask, B = 1, ChatGLM's 32 heads of 128): shared setup.</summary>
public abstract class CpuAttentionBenchmarkBase
{
    /// <summary>Sequence length.</summary>
    [Params(256, 512)]
    public int Seq { get; set; } = 256;

    protected const int Heads = 32, HeadDim = 128;
    protected static readonly float Scale = 1f / MathF.Sqrt(HeadDim);
    protected Tensor Q = null!, K = null!, V = null!, O = null!, Lse = null!, Mask = null!, DO = null!, DQ = null!, DK = null!, DV = null!;

    /// <summary>Matrix FLOPs of the forward pass (QKᵀ and PV over the whole S × S matrix: the kernel skips no blocked score).</summary>
    protected double ForwardFlops => 4.0 * Heads * Seq * Seq * HeadDim;

    [GlobalSetup]
    public void Setup()
    {
        var s = new Shape(1, Seq, Heads, HeadDim);
        Q = BenchData.Uniform(s, 11); K = BenchData.Uniform(s, 12); V = BenchData.Uniform(s, 13); DO = BenchData.Uniform(s, 14);
        O = Tensor.Empty(s); DQ = Tensor.Empty(s); DK = Tensor.Empty(s); DV = Tensor.Empty(s);
        Lse = Tensor.Empty(new Shape(1, Heads, Seq));
        Mask = AttentionMask.PrefixLm([Seq / 2], Seq);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { Q, K, V, O, Lse, Mask, DO, DQ, DK, DV }) t.Dispose();
    }

    protected void RunForward() => CpuBackend.Instance.AttentionForward(Q, K, V, null, null, Mask, Scale, -10000f, O, Lse);
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
        CpuBackend.Instance.AttentionBackward(Q, K, V, null, null, Mask, Scale, -10000f, O, Lse, DO, DQ, DK, DV, null, null);
    }
}
