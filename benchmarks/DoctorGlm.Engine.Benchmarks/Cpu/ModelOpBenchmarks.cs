using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// The memory ceiling of this machine: copying 256 MiB (far beyond the caches), by the backend's single-threaded copy
/// and split over every core. The all-core figure is the ceiling the other CPU GB/s figures are compared with.
/// </summary>
public unsafe class CpuMemoryBandwidthBenchmarks : IByteCount
{
    private const int Floats = 64 << 20;
    private Tensor _src = null!, _dst = null!;

    public double Bytes(string method) => 2.0 * Floats * sizeof(float);

    [GlobalSetup]
    public void Setup()
    {
        _src = BenchData.Uniform(new Shape(Floats), 1);
        _dst = Tensor.Zeros(new Shape(Floats));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _src.Dispose();
        _dst.Dispose();
    }

    [Benchmark]
    public void CopySingleThread() => CpuBackend.Instance.Copy(_src, _dst);

    [Benchmark]
    public void CopyAllCores()
    {
        byte* s = (byte*)_src.Ptr<float>(), d = (byte*)_dst.Ptr<float>();
        long bytes = (long)Floats * sizeof(float);
        int chunks = Environment.ProcessorCount;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
        {
            long lo = bytes * c / chunks, hi = bytes * (c + 1) / chunks;
            Buffer.MemoryCopy(s + lo, d + lo, hi - lo, hi - lo);
        });
    }
}

/// <summary>
/// 2D rotary on [1, 2048, 32, 128] (8.4 M elements): the kernel on a contiguous q, and what a GLM block does — q and k
/// taken from the fused qkv activation [1, 2048, 32, 384] (strided views): through <see cref="Ops.Rotary2D"/>, which
/// makes each contiguous first and rotates it (what the model did before), and fused — the kernel reading the strided
/// slices straight into contiguous q and k, as <see cref="Ops.GlmSelfAttention"/> does now.
/// </summary>
public class CpuRotaryBenchmarks : IByteCount
{
    private const int Seq = 2048, Heads = 32, D = 128;
    private Tensor _q = null!, _qkv = null!, _pos = null!, _y = null!;

    /// <summary>Storage of the activations (q, k, the qkv projection and y), as <c>GlmModel.ActivationDType</c> keeps them.</summary>
    [Params(DType.F32, DType.BF16)]
    public DType Activation { get; set; } = DType.F32;

    public double Bytes(string method)
    {
        double n = (double)Activation.SizeOf() * Seq * Heads * D;
        return method == nameof(Kernel) ? 2 * n : 4 * n; // split: q and k each read once and written once
    }

    [GlobalSetup]
    public void Setup()
    {
        _q = BenchData.Uniform(new Shape(1, Seq, Heads, D), 21, dtype: Activation);
        _qkv = BenchData.Uniform(new Shape(1, Seq, Heads, 3 * D), 22, dtype: Activation);
        _pos = PositionIds.Glm([Seq / 2], [Seq / 2 - 2], Seq);
        _y = Tensor.Empty(_q.Shape, Activation);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _q, _qkv, _pos, _y }) t.Dispose();
    }

    [Benchmark]
    public void Kernel() => CpuBackend.Instance.Rotary2D(_q, _pos, _y, inverse: false);

    [Benchmark]
    public void SplitAndRotate()
    {
        using var grad = GradMode.NoGrad();
        using var scope = TensorScope.Begin();
        Ops.Rotary2D(_qkv.Narrow(3, 0, D), _pos);
        Ops.Rotary2D(_qkv.Narrow(3, D, D), _pos);
    }

    [Benchmark]
    public void SplitAndRotateFused()
    {
        using var grad = GradMode.NoGrad();
        using var q = _qkv.Narrow(3, 0, D);
        using var k = _qkv.Narrow(3, D, D);
        CpuBackend.Instance.Rotary2D(q, _pos, _y, inverse: false);
        CpuBackend.Instance.Rotary2D(k, _pos, _y, inverse: false);
    }
}

/// <summary>Softmax cross-entropy over ChatGLM's 130528-word vocabulary, 64 rows (8.4 M fp32 logits): forward, and forward + backward.</summary>
public class CpuCrossEntropyBenchmarks : IByteCount
{
    private const int Rows = 64, Vocab = 130528;
    private Tensor _logits = null!, _labels = null!, _rowLoss = null!, _lse = null!, _dloss = null!, _dlogits = null!;

    public double Bytes(string method)
    {
        double n = 4.0 * Rows * Vocab;
        return method == nameof(Forward) ? n : 3 * n; // backward reads the logits again and writes dlogits
    }

    [GlobalSetup]
    public void Setup()
    {
        _logits = BenchData.Uniform(new Shape(Rows, Vocab), 31, 4f);
        _labels = BenchData.Ids(new Shape(Rows), Vocab, 32);
        _rowLoss = Tensor.Empty(new Shape(Rows));
        _lse = Tensor.Empty(new Shape(Rows));
        _dloss = Tensor.Scalar(1f);
        _dlogits = Tensor.Empty(_logits.Shape);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _logits, _labels, _rowLoss, _lse, _dloss, _dlogits }) t.Dispose();
    }

    [Benchmark]
    public void Forward() => CpuBackend.Instance.CrossEntropyForward(_logits, _labels, -100, _rowLoss, _lse);

    [Benchmark]
    public void ForwardBackward()
    {
        CpuBackend.Instance.CrossEntropyForward(_logits, _labels, -100, _rowLoss, _lse);
        CpuBackend.Instance.CrossEntropyBackward(_logits, _labels, _lse, -100, _dloss, 1f / Rows, _dlogits);
    }
}

/// <summary>
/// Embedding gather of 2048 tokens from the 130528 × 4096 fp32 table (2.1 GB), and the dense scatter-add backward
/// (zeroes the whole table gradient, then adds the rows).
/// </summary>
public class CpuEmbeddingBenchmarks : IByteCount
{
    private const int Tokens = 2048, Vocab = 130528, Hidden = 4096;
    private Tensor _table = null!, _ids = null!, _y = null!, _dy = null!, _dtable = null!;

    public double Bytes(string method)
    {
        double rows = 4.0 * Tokens * Hidden, table = 4.0 * Vocab * Hidden;
        return method == nameof(Forward) ? 2 * rows : table + rows;
    }

    [GlobalSetup]
    public void Setup()
    {
        _table = BenchData.Uniform(new Shape(Vocab, Hidden), 41);
        _ids = BenchData.Ids(new Shape(Tokens), Vocab, 42);
        _y = Tensor.Empty(new Shape(Tokens, Hidden));
        _dy = BenchData.Uniform(new Shape(Tokens, Hidden), 43);
        _dtable = Tensor.Empty(_table.Shape);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _table, _ids, _y, _dy, _dtable }) t.Dispose();
    }

    [Benchmark]
    public void Forward() => CpuBackend.Instance.EmbeddingForward(_ids, _table, _y);

    [Benchmark]
    public void Backward() => CpuBackend.Instance.EmbeddingBackward(_ids, _dy, _dtable);
}

/// <summary>
/// AdamW over ChatGLM-6B's LoRA parameters (r = 8 on query_key_value in 28 layers: 3,670,016 values, 103 MB of traffic
/// per step): one call over a flat buffer, and one per tensor (56, as <see cref="Optim.AdamW"/> does).
/// </summary>
public class CpuAdamWLoraBenchmarks : IByteCount
{
    private static readonly int[] s_sizes = Enumerable.Range(0, 28).SelectMany(_ => new[] { 8 * 4096, 3 * 4096 * 8 }).ToArray();
    private Tensor _p = null!, _g = null!, _m = null!, _v = null!;
    private Tensor[] _views = [];

    public double Bytes(string method) => 7 * 4.0 * s_sizes.Sum(s => (long)s); // p, g, m, v in; p, m, v out

    [GlobalSetup]
    public void Setup()
    {
        var s = new Shape(s_sizes.Sum());
        _p = BenchData.Uniform(s, 51, 0.02f);
        _g = BenchData.Uniform(s, 52, 0.01f);
        _m = BenchData.Uniform(s, 53, 0.01f);
        _v = Tensor.Full(s, 1e-4f);
        var views = new List<Tensor>();
        int offset = 0;
        foreach (int n in s_sizes)
        {
            views.AddRange([_p.Narrow(0, offset, n), _g.Narrow(0, offset, n), _m.Narrow(0, offset, n), _v.Narrow(0, offset, n)]);
            offset += n;
        }
        _views = [.. views];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in _views.Concat([_p, _g, _m, _v])) t.Dispose();
    }

    private static void Step(Tensor p, Tensor g, Tensor m, Tensor v) =>
        CpuBackend.Instance.AdamWStep(p, g, m, v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001);

    [Benchmark]
    public void Flat() => Step(_p, _g, _m, _v);

    [Benchmark]
    public void PerTensor()
    {
        for (int t = 0; t < _views.Length; t += 4) Step(_views[t], _views[t + 1], _views[t + 2], _views[t + 3]);
    }
}

/// <summary>
/// Decoding's matrix-vector products at batch 1 for the 6B MLP linears (out × in): the fused INT8 and INT4
/// de-quantize-and-multiply (<see cref="Backends.IBackend.QuantizedMatVec"/>) and the fp32 GEMM with m = 1. The
/// figure is the bytes that must stream (weights, scales, x, y) per second.
/// </summary>
public class CpuMatVecBenchmarks : IByteCount
{
    /// <summary>"out×in": dense_h_to_4h and dense_4h_to_h.</summary>
    [Params("16384x4096", "4096x16384")]
    public string Shape { get; set; } = "16384x4096";

    private int Out => int.Parse(Shape.Split('x')[0]);
    private int In => int.Parse(Shape.Split('x')[1]);
    private Tensor _x = null!, _y = null!, _q8 = null!, _q4 = null!, _scale = null!, _w = null!;

    public double Bytes(string method)
    {
        double e = (double)Out * In;
        double w = method switch { nameof(Int8) => e + 2.0 * Out, nameof(Int4) => e / 2 + 2.0 * Out, _ => 4 * e };
        return w + 4.0 * In + 4.0 * Out;
    }

    [GlobalSetup]
    public void Setup()
    {
        int o = Out, n = In;
        _x = BenchData.Uniform(new Shape(1, n), 61);
        _y = Tensor.Empty(new Shape(1, o));
        _w = BenchData.Uniform(new Shape(o, n), 62, 0.02f);
        _q8 = RandomBytes(new Shape(o, n), 63);
        _q4 = RandomBytes(new Shape(o, n / 2), 64);
        var scales = new float[o];
        BenchData.Fill(scales, 65, 1f);
        for (int i = 0; i < o; i++) scales[i] = 1e-3f * (1.5f + scales[i]);
        _scale = Tensor.FromArray(scales, new Shape(o), DType.F16);
    }

    private static Tensor RandomBytes(Shape shape, ulong seed)
    {
        var f = new float[shape.NumElements];
        BenchData.Fill(f, seed, 128f);
        var bytes = new byte[f.Length];
        for (int i = 0; i < f.Length; i++) bytes[i] = unchecked((byte)(sbyte)Math.Clamp(MathF.Floor(f[i]), -128f, 127f));
        return Tensor.FromBytes(bytes, shape, DType.I8);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _y, _w, _q8, _q4, _scale }) t.Dispose();
    }

    [Benchmark]
    public void Int8() => CpuBackend.Instance.QuantizedMatVec(_x, _q8, _scale, 8, _y);

    [Benchmark]
    public void Int4() => CpuBackend.Instance.QuantizedMatVec(_x, _q4, _scale, 4, _y);

    [Benchmark]
    public void F32() => CpuBackend.Instance.Gemm(false, true, 1, Out, In, 1f, _x, 0, In, 0, _w, 0, In, 0, 0f, _y, 0, Out, 0, 1);
}
