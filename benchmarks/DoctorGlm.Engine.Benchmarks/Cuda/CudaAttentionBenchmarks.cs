using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Backends.Cuda;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>
/// GLM attention (32 heads × 128) with a prefix-LM mask (the first half of each sequence is context, the rest
/// causal), 8192 tokens per launch as B × S, on both kernel sets: <see cref="CudaAttentionKernel.Fp32"/> and
/// <see cref="CudaAttentionKernel.TensorCores"/>. FLOPs count the score entries the mask leaves open (the
/// FlashAttention convention for causal attention): with context S/2 that is S²/2 + (S/2)²/2 = 0.625·S² of the S²
/// matrix. Forward = 4·B·nh·open·d (QKᵀ and PV); backward recomputes the scores and forms dV, dP, dQ, dK: 2.5× the
/// forward, 3.5× for forward + backward. The fp32 kernels compute every tile, so their figure is useful work; the
/// tensor-core kernels skip all-blocked tiles.
/// </summary>
public class CudaAttentionBenchmarks : CudaBenchmark
{
    /// <summary>Tokens per launch (B = this / Seq).</summary>
    public const int Tokens = 8192;

    [Params(512, 1024, 2048)]
    public int Seq { get; set; } = 512;

    [Params(CudaAttentionKernel.Fp32, CudaAttentionKernel.TensorCores)]
    public CudaAttentionKernel Kernel { get; set; } = CudaAttentionKernel.TensorCores;

    private int Batch => Tokens / Seq;

    private Tensor[] _q = [], _k = [], _v = [], _do = [];
    private Tensor _mask = null!, _o = null!, _lse = null!, _dq = null!, _dk = null!, _dv = null!;
    private static readonly float s_scale = 1f / MathF.Sqrt(Glm6B.HeadDim);

    /// <summary>Score entries the prefix-LM mask leaves open per sequence: every row sees the S/2 context keys, the second half also a causal triangle.</summary>
    private double OpenScores => Seq * (Seq / 2.0) + (Seq / 2.0) * (Seq / 2.0 + 1) / 2;

    private double ForwardFlops => 4.0 * Batch * Glm6B.Heads * OpenScores * Glm6B.HeadDim;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double act = 4.0 * Tokens * Glm6B.Hidden;
        return method == nameof(Forward)
            ? new(4 * act, ForwardFlops, Bound.Compute)
            : new(11 * act, 3.5 * ForwardFlops, Bound.Compute);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        Gpu.AttentionKernel = Kernel;
        var s = new Shape(Batch, Seq, Glm6B.Heads, Glm6B.HeadDim);
        _q = Sets(i => BenchData.Uniform(s, 200 + (ulong)i, device: Dev));
        _k = Sets(i => BenchData.Uniform(s, 210 + (ulong)i, device: Dev));
        _v = Sets(i => BenchData.Uniform(s, 220 + (ulong)i, device: Dev));
        _do = Sets(i => BenchData.Uniform(s, 230 + (ulong)i, device: Dev));
        _mask = AttentionMask.PrefixLm(Enumerable.Repeat(Seq / 2, Batch).ToArray(), Seq, device: Dev);
        _o = Tensor.Empty(s, DType.F32, Dev);
        _dq = Tensor.Empty(s, DType.F32, Dev);
        _dk = Tensor.Empty(s, DType.F32, Dev);
        _dv = Tensor.Empty(s, DType.F32, Dev);
        _lse = Tensor.Empty(new Shape(Batch, Glm6B.Heads, Seq), DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup()
    {
        Free(_q, _k, _v, _do, [_mask, _o, _lse, _dq, _dk, _dv]);
        Gpu.AttentionKernel = CudaAttentionKernel.Fp32;
    }

    private void RunForward(int i) => Gpu.AttentionForward(_q[i], _k[i], _v[i], null, null, _mask, s_scale, -10000f, _o, _lse);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Forward() => Time(RunForward);

    [Benchmark(OperationsPerInvoke = FewLaunches)]
    public void ForwardBackward() => Time(i =>
    {
        RunForward(i);
        Gpu.AttentionBackward(_q[i], _k[i], _v[i], null, null, _mask, s_scale, -10000f, _o, _lse, _do[i], _dq, _dk, _dv, null, null);
    }, FewLaunches);
}

/// <summary>
/// One decoding step's attention (attention_decode: a single query per row and head) over a bf16 KV cache of
/// <see cref="Past"/> positions, read in place as the cache hands it over (the first positions of a buffer with room
/// for more), for the batch sizes a server decodes. Memory-bound: GB/s counts the past's keys and values (2 bytes
/// each), the figure to hold against the copy ceiling. The 6B model runs this 28 times per token.
/// </summary>
public class CudaDecodeAttentionBenchmarks : CudaBenchmark
{
    [Params(512, 2048)]
    public int Past { get; set; } = 512;

    [Params(1, 8)]
    public int Batch { get; set; } = 1;

    private Tensor[] _q = [], _k = [], _v = [];
    private Tensor _cacheK = null!, _cacheV = null!, _pastK = null!, _pastV = null!, _o = null!, _lse = null!;
    private static readonly float s_scale = 1f / MathF.Sqrt(Glm6B.HeadDim);

    /// <inheritdoc />
    public override Work Work(string method) => new(2.0 * 2 * Batch * Past * Glm6B.Hidden, 4.0 * Batch * Glm6B.Heads * (Past + 1) * Glm6B.HeadDim, Bound.Memory);

    /// <inheritdoc />
    protected override void Setup()
    {
        var one = new Shape(Batch, 1, Glm6B.Heads, Glm6B.HeadDim);
        _q = Sets(i => BenchData.Uniform(one, 300 + (ulong)i, device: Dev));
        _k = Sets(i => BenchData.Uniform(one, 310 + (ulong)i, device: Dev));
        _v = Sets(i => BenchData.Uniform(one, 320 + (ulong)i, device: Dev));
        var buffer = new Shape(Batch, Past + Past / 2, Glm6B.Heads, Glm6B.HeadDim); // grown by doubling: room left
        _cacheK = BenchData.Uniform(buffer, 330, dtype: DType.BF16, device: Dev);
        _cacheV = BenchData.Uniform(buffer, 340, dtype: DType.BF16, device: Dev);
        _pastK = _cacheK.Narrow(1, 0, Past);
        _pastV = _cacheV.Narrow(1, 0, Past);
        _o = Tensor.Empty(one, DType.F32, Dev);
        _lse = Tensor.Empty(new Shape(Batch, Glm6B.Heads, 1), DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_q, _k, _v, [_pastK, _pastV, _cacheK, _cacheV, _o, _lse]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Step() => Time(i => Gpu.AttentionForward(_q[i], _k[i], _v[i], _pastK, _pastV, null, s_scale, -10000f, _o, _lse));
}
