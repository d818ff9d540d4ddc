using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>ChatGLM-6B sizes the CUDA suite uses.</summary>
internal static class Glm6B
{
    public const int Hidden = 4096, Heads = 32, HeadDim = 128, Ffn = 16384, Vocab = 130528, Layers = 28, LoraRank = 8;

    /// <summary>Training sequence length of the batch-shaped kernels (tokens = batch × this).</summary>
    public const int Seq = 512;
}

/// <summary>
/// LayerNorm over hidden 4096: forward; backward to the input only (LoRA: the weights are frozen) and to everything.
/// x and y are activations (fp32, or bf16 as <c>GlmModel.ActivationDType</c> keeps them); dy and dx are fp32.
/// </summary>
public class CudaLayerNormBenchmarks : CudaBenchmark
{
    [Params(2048, 8192)]
    public int Tokens { get; set; } = 2048;

    [Params(DType.F32, DType.BF16)]
    public DType Activation { get; set; } = DType.F32;

    private const int H = Glm6B.Hidden;
    private Tensor[] _x = [], _dy = [];
    private Tensor _w = null!, _b = null!, _y = null!, _dx = null!, _dw = null!, _db = null!, _mean = null!, _rstd = null!, _copy = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double a = (double)Activation.SizeOf() * Tokens * H, n = 4.0 * Tokens * H, stats = 2 * 4.0 * Tokens, vec = 4.0 * H;
        return method switch
        {
            nameof(Forward) => new(2 * a + 2 * vec + stats, 0, Bound.Memory),                 // x, w, b → y, mean, rstd
            nameof(ForwardWithCopy) => new(2 * a + 2.0 * Tokens * H + 2 * vec + stats, 0, Bound.Memory), // … and the bf16 copy
            nameof(BackwardInput) => new(2 * n + a + vec + stats, 0, Bound.Memory),           // dy, x, w, mean, rstd → dx
            _ => new(2 * n + a + 3 * vec + stats, 0, Bound.Memory),                           // … and dweight, dbias
        };
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        var s = new Shape(Tokens, H);
        _x = Sets(i => BenchData.Uniform(s, 10 + (ulong)i, dtype: Activation, device: Dev));
        _dy = Sets(i => BenchData.Uniform(s, 20 + (ulong)i, device: Dev));
        _w = BenchData.Uniform(new Shape(H), 30, device: Dev);
        _b = BenchData.Uniform(new Shape(H), 31, device: Dev);
        _y = Tensor.Empty(s, Activation, Dev);
        _dx = Tensor.Empty(s, DType.F32, Dev);
        _dw = Tensor.Empty(new Shape(H), DType.F32, Dev);
        _db = Tensor.Empty(new Shape(H), DType.F32, Dev);
        _mean = Tensor.Empty(new Shape(Tokens), DType.F32, Dev);
        _rstd = Tensor.Empty(new Shape(Tokens), DType.F32, Dev);
        _copy = Tensor.Empty(s, DType.BF16, Dev);
        // The backward launches read statistics of their own input set: compute them once for set 0 (values only
        // need to be finite and plausible; every set has the same distribution).
        Gpu.LayerNormForward(_x[0], _w, _b, 1e-5f, _y, _mean, _rstd);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_x, _dy, [_w, _b, _y, _dx, _dw, _db, _mean, _rstd, _copy]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Forward() => Time(i => Gpu.LayerNormForward(_x[i], _w, _b, 1e-5f, _y, _mean, _rstd));

    /// <summary>The forward with a bf16 copy of y beside it (a KV-cached step's LayerNorm feeding a bf16 GEMM).</summary>
    [Benchmark(OperationsPerInvoke = Launches)]
    public void ForwardWithCopy() => Time(i => Gpu.LayerNormForward(_x[i], _w, _b, 1e-5f, _y, _mean, _rstd, _copy));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void BackwardInput() => Time(i => Gpu.LayerNormBackward(_dy[i], _x[i], _w, _mean, _rstd, _dx, null, null));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void BackwardAll() => Time(i => Gpu.LayerNormBackward(_dy[i], _x[i], _w, _mean, _rstd, _dx, _dw, _db));
}

/// <summary>
/// tanh-GELU over the MLP's inner activation, tokens × 16384, alone and with dense_h_to_4h's bias fused in (the
/// model's path: the bias vector's bytes are negligible, so the same traffic is counted). x and the forward's y are
/// activations (fp32, or bf16 as <c>GlmModel.ActivationDType</c> keeps them); dy and dx are fp32.
/// </summary>
public class CudaGeluBenchmarks : CudaBenchmark
{
    [Params(2048, 8192)]
    public int Tokens { get; set; } = 2048;

    [Params(DType.F32, DType.BF16)]
    public DType Activation { get; set; } = DType.F32;

    private Tensor[] _x = [], _dy = [];
    private Tensor _y = null!, _dx = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double a = (double)Activation.SizeOf() * Tokens * Glm6B.Ffn, n = 4.0 * Tokens * Glm6B.Ffn;
        return new(method is nameof(Forward) or nameof(BiasForward) ? 2 * a : a + 2 * n, 0, Bound.Memory); // x → y; x, dy → dx
    }

    private Tensor _bias = null!;

    /// <inheritdoc />
    protected override void Setup()
    {
        var s = new Shape(Tokens, Glm6B.Ffn);
        _x = Sets(i => BenchData.Uniform(s, 40 + (ulong)i, 3f, Activation, Dev));
        _dy = Sets(i => BenchData.Uniform(s, 50 + (ulong)i, device: Dev));
        _y = Tensor.Empty(s, Activation, Dev);
        _dx = Tensor.Empty(s, DType.F32, Dev);
        _bias = BenchData.Uniform(new Shape(Glm6B.Ffn), 60, device: Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_x, _dy, [_y, _dx, _bias]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Forward() => Time(i => Gpu.GeluForward(_x[i], _y));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Backward() => Time(i => Gpu.GeluBackward(_x[i], _dy[i], _dx));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void BiasForward() => Time(i => Gpu.BiasGeluForward(_x[i], _bias, _y));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void BiasBackward() => Time(i => Gpu.BiasGeluBackward(_x[i], _bias, _dy[i], _dx));
}

/// <summary>
/// 2D rotary on [B, 512, 32, 128] (B = tokens / 512): the kernel on a contiguous q, and what a GLM block does — q and k
/// taken from the fused qkv activation [B, 512, 32, 384] (strided views) through <see cref="Ops.Rotary2D"/>, which makes
/// each contiguous first (the "QKV split") and rotates it — and the KV-cached step's split
/// (<see cref="Backends.IBackend.SplitQkvRotary"/>: bias added, q and k rotated, q, k and v written in bf16 as a bf16
/// cache keeps them, one pass).
/// </summary>
public class CudaRotaryBenchmarks : CudaBenchmark
{
    [Params(512, 2048, 8192)]
    public int Tokens { get; set; } = 512;

    private Tensor[] _q = [], _qkv = [];
    private Tensor _pos = null!, _y = null!, _bias = null!, _q16 = null!, _k16 = null!, _v16 = null!;

    private int Batch => Tokens / Glm6B.Seq;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double n = 4.0 * Tokens * Glm6B.Hidden, pos = 2 * 4.0 * Tokens;
        // Kernel: read x, write y. Split + rotate: read the q and k thirds of qkv, write rotated q and k. Cached split:
        // read all of qkv (fp32) and the bias, write q, k and v in bf16.
        return new(method switch
        {
            nameof(Kernel) => 2 * n + pos,
            nameof(CachedSplit) => 3 * n + 1.5 * n + 3 * 4.0 * Glm6B.Hidden + pos,
            _ => 4 * n + pos,
        }, 0, Bound.Memory);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        int b = Batch, s = Glm6B.Seq;
        _q = Sets(i => BenchData.Uniform(new Shape(b, s, Glm6B.Heads, Glm6B.HeadDim), 60 + (ulong)i, device: Dev));
        _qkv = Sets(i => BenchData.Uniform(new Shape(b, s, Glm6B.Heads, 3 * Glm6B.HeadDim), 70 + (ulong)i, device: Dev));
        var ctx = Enumerable.Repeat(s / 2, b).ToArray();
        _pos = PositionIds.Glm(ctx, ctx.Select(c => c - 2).ToArray(), s, device: Dev);
        _y = Tensor.Empty(_q[0].Shape, DType.F32, Dev);
        _bias = BenchData.Uniform(new Shape(3 * Glm6B.Hidden), 80, device: Dev);
        _q16 = Tensor.Empty(_q[0].Shape, DType.BF16, Dev);
        _k16 = Tensor.Empty(_q[0].Shape, DType.BF16, Dev);
        _v16 = Tensor.Empty(_q[0].Shape, DType.BF16, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_q, _qkv, [_pos, _y, _bias, _q16, _k16, _v16]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Kernel() => Time(i => Gpu.Rotary2D(_q[i], _pos, _y, inverse: false));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void SplitAndRotate() => Time(i =>
    {
        using var grad = GradMode.NoGrad();
        using var scope = TensorScope.Begin();
        int d = Glm6B.HeadDim;
        Ops.Rotary2D(_qkv[i].Narrow(3, 0, d), _pos);
        Ops.Rotary2D(_qkv[i].Narrow(3, d, d), _pos);
    });

    [Benchmark(OperationsPerInvoke = Launches)]
    public void CachedSplit() => Time(i => Gpu.SplitQkvRotary(_qkv[i], _bias, _pos, _q16, _k16, _v16));
}

/// <summary>
/// A block's residual add with its linear's bias (<see cref="Backends.IBackend.AddScaledRowBias"/>) over tokens ×
/// 4096: the residual a and y in the activation dtype, the linear's fp32 product b. One pass where the unfused path
/// made three (bias into b, b rounded to the activation dtype, the scaled add).
/// </summary>
public class CudaResidualBenchmarks : CudaBenchmark
{
    [Params(1, 2048)]
    public int Tokens { get; set; } = 2048;

    [Params(DType.F32, DType.BF16)]
    public DType Activation { get; set; } = DType.F32;

    private const int H = Glm6B.Hidden;
    private Tensor[] _a = [], _b = [];
    private Tensor _bias = null!, _y = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double act = (double)Activation.SizeOf() * Tokens * H;
        return new(2 * act + 4.0 * Tokens * H + 4.0 * H, 0, Bound.Memory); // a, b, bias → y
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        var s = new Shape(Tokens, H);
        _a = Sets(i => BenchData.Uniform(s, 90 + (ulong)i, dtype: Activation, device: Dev));
        _b = Sets(i => BenchData.Uniform(s, 95 + (ulong)i, device: Dev));
        _bias = BenchData.Uniform(new Shape(H), 99, device: Dev);
        _y = Tensor.Empty(s, Activation, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_a, _b, [_bias, _y]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void AddScaledRowBias() => Time(i => Gpu.AddScaledRowBias(_a[i], 7.483315f, _b[i], _bias, _y));
}

/// <summary>Softmax cross-entropy over the 130528-word vocabulary (fp32 logits): forward, and forward + backward.</summary>
public class CudaCrossEntropyBenchmarks : CudaBenchmark
{
    [Params(512, 2048)]
    public int Rows { get; set; } = 512;

    private Tensor[] _logits = [], _labels = [];
    private Tensor _rowLoss = null!, _lse = null!, _dloss = null!, _dlogits = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double n = 4.0 * Rows * Glm6B.Vocab, rows = 3 * 4.0 * Rows; // labels in; row loss, lse out
        // Forward reads the logits once; backward reads them again and writes dlogits.
        return new(method == nameof(Forward) ? n + rows : 3 * n + rows + 4.0 * Rows, 0, Bound.Memory);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        _logits = Sets(i => BenchData.Uniform(new Shape(Rows, Glm6B.Vocab), 80 + (ulong)i, 4f, device: Dev));
        _labels = Sets(i => BenchData.Ids(new Shape(Rows), Glm6B.Vocab, 90 + (ulong)i, Dev));
        _rowLoss = Tensor.Empty(new Shape(Rows), DType.F32, Dev);
        _lse = Tensor.Empty(new Shape(Rows), DType.F32, Dev);
        _dloss = Tensor.Full(new Shape(1), 1f, DType.F32, Dev);
        _dlogits = Tensor.Empty(_logits[0].Shape, DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_logits, _labels, [_rowLoss, _lse, _dloss, _dlogits]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Forward() => Time(i => Gpu.CrossEntropyForward(_logits[i], _labels[i], -100, _rowLoss, _lse));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void ForwardBackward() => Time(i =>
    {
        Gpu.CrossEntropyForward(_logits[i], _labels[i], -100, _rowLoss, _lse);
        Gpu.CrossEntropyBackward(_logits[i], _labels[i], _lse, -100, _dloss, 1f / Rows, _dlogits);
    });
}

/// <summary>
/// A decoding step's pick, the device half (<c>IBackend.SelectCandidates</c>, kernels/sampling.cu) with <c>chat()</c>'s
/// settings (repetition penalty 1.1 over 300 ids, temperature 0.95, top-k 50) over the 130528-word vocabulary, for
/// the batch sizes a server decodes. GB/s counts one read of the logits (the least any pick must read); the kernel
/// reads each row about six times (one block per row, the passes mostly from L2), so at small batches it sits far
/// from the copy ceiling. What it replaces is the copy of every logit to the host (B × 522 KB) and about 1 ms of host
/// work per row (<c>CpuSamplingBenchmarks</c>).
/// </summary>
public class CudaSamplingBenchmarks : CudaBenchmark
{
    [Params(1, 8, 32)]
    public int Rows { get; set; } = 8;

    private const int Penalised = 300, TopK = 50, Capacity = TopK + 64;
    private Tensor[] _logits = [];
    private Tensor _ids = null!, _settings = null!, _topK = null!, _candIds = null!, _candScores = null!, _counts = null!;

    /// <inheritdoc />
    public override Work Work(string method) => new(4.0 * Rows * Glm6B.Vocab + 8.0 * Rows * Capacity, 0, Bound.Memory);

    /// <inheritdoc />
    protected override void Setup()
    {
        _logits = Sets(i => BenchData.Uniform(new Shape(Rows, Glm6B.Vocab), 120 + (ulong)i, 8f, device: Dev));
        var ids = new int[Rows * Penalised];
        for (int r = 0; r < Rows; r++)
            for (int j = 0; j < Penalised; j++) ids[r * Penalised + j] = (j * 7919 + r * 13) % Glm6B.Vocab; // distinct within a row
        _ids = Tensor.FromArray(ids, new Shape(Rows, Penalised), Dev);
        _settings = Tensor.FromArray([.. Enumerable.Range(0, Rows).SelectMany(_ => new[] { 1.1f, 0.95f })], new Shape(Rows, 2), DType.F32, Dev);
        _topK = Tensor.FromArray([.. Enumerable.Repeat(TopK, Rows)], new Shape(Rows), Dev);
        _candIds = Tensor.Empty(new Shape(Rows, Capacity), DType.I32, Dev);
        _candScores = Tensor.Empty(new Shape(Rows, Capacity), DType.F32, Dev);
        _counts = Tensor.Empty(new Shape(Rows), DType.I32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_logits, [_ids, _settings, _topK, _candIds, _candScores, _counts]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void SelectCandidates() => Time(i => Gpu.SelectCandidates(_logits[i], _ids, _settings, _topK, _candIds, _candScores, _counts));
}

/// <summary>
/// Embedding gather from the 130528 × 4096 fp32 table (forward, which validates the ids on the device and reads one
/// flag back: a host round trip inside the timed region, as in the model), and the dense scatter-add backward (zeroes
/// the whole table gradient, then adds the rows).
/// </summary>
public class CudaEmbeddingBenchmarks : CudaBenchmark
{
    [Params(512, 8192)]
    public int Tokens { get; set; } = 512;

    private const int H = Glm6B.Hidden;
    private Tensor[] _ids = [], _dy = [];
    private Tensor _table = null!, _y = null!, _dtable = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double rows = 4.0 * Tokens * H, ids = 4.0 * Tokens, table = 4.0 * Glm6B.Vocab * H;
        return new(method == nameof(Forward) ? 2 * rows + ids : table + rows + ids, 0, Bound.Memory);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        _table = BenchData.Uniform(new Shape(Glm6B.Vocab, H), 100, device: Dev);
        _ids = Sets(i => BenchData.Ids(new Shape(Tokens), Glm6B.Vocab, 110 + (ulong)i, Dev));
        _dy = Sets(i => BenchData.Uniform(new Shape(Tokens, H), 120 + (ulong)i, device: Dev));
        _y = Tensor.Empty(new Shape(Tokens, H), DType.F32, Dev);
        _dtable = Tensor.Empty(_table.Shape, DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_ids, _dy, [_table, _y, _dtable]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Forward() => Time(i => Gpu.EmbeddingForward(_ids[i], _table, _y));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Backward() => Time(i => Gpu.EmbeddingBackward(_ids[i], _dy[i], _dtable));
}

/// <summary>
/// AdamW over the LoRA parameters of ChatGLM-6B (r = 8 on query_key_value: A [8, 4096] and B [12288, 8] in 28 layers,
/// 3,670,016 values): one launch over a flat buffer (the fused ideal), and one launch per tensor (56, what
/// <see cref="Optim.AdamW"/> does today).
/// </summary>
public class CudaAdamWBenchmarks : CudaBenchmark
{
    private static readonly int[] s_sizes = Enumerable.Range(0, Glm6B.Layers)
        .SelectMany(_ => new[] { Glm6B.LoraRank * Glm6B.Hidden, 3 * Glm6B.Hidden * Glm6B.LoraRank }).ToArray();

    private static long Total => s_sizes.Sum(s => (long)s);

    private Tensor[] _p = [], _g = [], _m = [], _v = [];
    private Tensor[][] _views = [];

    /// <inheritdoc />
    public override Work Work(string method) => new(7 * 4.0 * Total, 0, Bound.Memory); // p, g, m, v in; p, m, v out

    /// <inheritdoc />
    protected override void Setup()
    {
        var s = new Shape((int)Total);
        _p = Sets(i => BenchData.Uniform(s, 130 + (ulong)i, 0.02f, device: Dev));
        _g = Sets(i => BenchData.Uniform(s, 140 + (ulong)i, 0.01f, device: Dev));
        _m = Sets(i => BenchData.Uniform(s, 150 + (ulong)i, 0.01f, device: Dev));
        _v = Sets(i => Tensor.Full(s, 1e-4f, DType.F32, Dev));
        // Per-tensor views: [p, g, m, v] slices of each set, laid out as the 56 LoRA tensors.
        _views = Enumerable.Range(0, Copies).Select(c =>
        {
            var list = new List<Tensor>();
            int offset = 0;
            foreach (int n in s_sizes)
            {
                list.AddRange([_p[c].Narrow(0, offset, n), _g[c].Narrow(0, offset, n), _m[c].Narrow(0, offset, n), _v[c].Narrow(0, offset, n)]);
                offset += n;
            }
            return list.ToArray();
        }).ToArray();
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free([.. _views.SelectMany(v => v)], _p, _g, _m, _v);

    private void Step(Tensor p, Tensor g, Tensor m, Tensor v) => Gpu.AdamWStep(p, g, m, v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Flat() => Time(i => Step(_p[i], _g[i], _m[i], _v[i]));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void PerTensor() => Time(i =>
    {
        var v = _views[i];
        for (int t = 0; t < v.Length; t += 4) Step(v[t], v[t + 1], v[t + 2], v[t + 3]);
    });
}
