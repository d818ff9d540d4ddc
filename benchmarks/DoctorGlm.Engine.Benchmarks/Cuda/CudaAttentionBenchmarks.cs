using BenchmarkDotNet.Attributes;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>
/// GLM attention (fp32, 32 heads × 128) with a prefix-LM mask (the first half of each sequence is context, the rest
/// causal), 8192 tokens per launch as B × S. FLOPs count the whole S × S score matrix: the mask is a dense U8 tensor
/// and the kernel computes every tile, blocked or not. Forward = 4·B·nh·S²·d (QKᵀ and PV); backward recomputes the
/// scores and forms dV, dP, dQ, dK: 2.5× the forward, 3.5× for forward + backward.
/// </summary>
public class CudaAttentionBenchmarks : CudaBenchmark
{
    /// <summary>Tokens per launch (B = this / Seq).</summary>
    public const int Tokens = 8192;

    [Params(512, 1024, 2048)]
    public int Seq { get; set; } = 512;

    private int Batch => Tokens / Seq;

    private Tensor[] _q = [], _k = [], _v = [], _do = [];
    private Tensor _mask = null!, _o = null!, _lse = null!, _dq = null!, _dk = null!, _dv = null!;
    private static readonly float s_scale = 1f / MathF.Sqrt(Glm6B.HeadDim);

    private double ForwardFlops => 4.0 * Batch * Glm6B.Heads * Seq * (double)Seq * Glm6B.HeadDim;

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
    protected override void Cleanup() => Free(_q, _k, _v, _do, [_mask, _o, _lse, _dq, _dk, _dv]);

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
