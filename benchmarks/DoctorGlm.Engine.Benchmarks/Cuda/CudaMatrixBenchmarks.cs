using BenchmarkDotNet.Attributes;

namespace DoctorGlm.Engine.Benchmarks.Cuda;

/// <summary>
/// Decoding's matrix-vector products at batch 1 for the 6B block linears (out × in): the fused INT8 and INT4
/// de-quantize-and-multiply (<see cref="Backends.IBackend.QuantizedMatVec"/>), and cuBLAS on bf16 and fp32 weights
/// through <see cref="Backends.IBackend.Gemm"/> with m = 1. Memory-bound: the figure is weight bytes (plus x, y and
/// scales) per second.
/// </summary>
public class CudaMatVecBenchmarks : CudaBenchmark
{
    /// <summary>"out×in": dense_h_to_4h, dense_4h_to_h, query_key_value.</summary>
    [Params("16384x4096", "4096x16384", "12288x4096")]
    public string Shape { get; set; } = "16384x4096";

    private int Out => int.Parse(Shape.Split('x')[0]);
    private int In => int.Parse(Shape.Split('x')[1]);

    private Tensor[] _x = [], _x16 = [], _q8 = [], _q4 = [], _w16 = [], _w32 = [];
    private Tensor _scale = null!, _y = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        double elements = (double)Out * In;
        double weight = method switch
        {
            nameof(Int8) => elements + 2.0 * Out,       // int8 values + fp16 scales
            nameof(Int4) => elements / 2 + 2.0 * Out,
            nameof(Bf16) => 2 * elements,
            _ => 4 * elements,
        };
        double x = (method == nameof(Bf16) ? 2.0 : 4.0) * In;
        return new(weight + x + 4.0 * Out, 2 * elements, Bound.Memory);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        int o = Out, n = In;
        _x = Sets(i => BenchData.Uniform(new Shape(1, n), 300 + (ulong)i, device: Dev));
        _x16 = Sets(i => { var t = Tensor.Empty(new Shape(1, n), DType.BF16, Dev); Gpu.Copy(_x[i], t); return t; });
        _q8 = Sets(i => RandomBytes(new Shape(o, n), 310 + (ulong)i));
        _q4 = Sets(i => RandomBytes(new Shape(o, n / 2), 320 + (ulong)i));
        _w16 = Sets(i => BenchData.Uniform(new Shape(o, n), 330 + (ulong)i, 0.02f, DType.BF16, Dev));
        _w32 = Sets(i => BenchData.Uniform(new Shape(o, n), 340 + (ulong)i, 0.02f, device: Dev));
        var scales = new float[o];
        BenchData.Fill(scales, 350, 1f);
        for (int i = 0; i < o; i++) scales[i] = 1e-3f * (1.5f + scales[i]); // positive, as max|w|/127 is
        _scale = Tensor.FromArray(scales, new Shape(o), DType.F16, Dev);
        _y = Tensor.Empty(new Shape(1, o), DType.F32, Dev);
    }

    /// <summary>Uniform random I8 values (every byte is a valid INT8 value, or two valid INT4 nibbles).</summary>
    private Tensor RandomBytes(Shape shape, ulong seed)
    {
        var f = new float[shape.NumElements];
        BenchData.Fill(f, seed, 128f);
        var bytes = new byte[f.Length];
        for (int i = 0; i < f.Length; i++) bytes[i] = unchecked((byte)(sbyte)Math.Clamp(MathF.Floor(f[i]), -128f, 127f));
        return Tensor.FromBytes(bytes, shape, DType.I8, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_x, _x16, _q8, _q4, _w16, _w32, [_scale, _y]);

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Int8() => Time(i => Gpu.QuantizedMatVec(_x[i], _q8[i], _scale, 8, _y));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Int4() => Time(i => Gpu.QuantizedMatVec(_x[i], _q4[i], _scale, 4, _y));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void Bf16() => Time(i => LinearRow(_x16[i], _w16[i]));

    [Benchmark(OperationsPerInvoke = Launches)]
    public void F32() => Time(i => LinearRow(_x[i], _w32[i]));

    /// <summary>y [1, out] = x [1, in] · Wᵀ (W [out, in], as Linear stores it).</summary>
    private void LinearRow(Tensor x, Tensor w) =>
        Gpu.Gemm(false, true, 1, Out, In, 1f, x, 0, In, 0, w, 0, In, 0, 0f, _y, 0, Out, 0, 1);
}

/// <summary>
/// The training step's large products at 2048 tokens (y = x·Wᵀ, as Linear computes them) for each 6B linear and the
/// tied LM head, with fp32 operands (pedantic: no TF32) and with bf16 operands (fp32 accumulation and output).
/// </summary>
public class CudaGemmBenchmarks : CudaBenchmark
{
    /// <summary>"m×k×n": query_key_value, dense_h_to_4h, dense_4h_to_h, lm_head.</summary>
    [Params("2048x4096x12288", "2048x4096x16384", "2048x16384x4096", "2048x4096x130528")]
    public string Shape { get; set; } = "2048x4096x12288";

    [Params(DType.F32, DType.BF16)]
    public DType Operands { get; set; } = DType.F32;

    private (int M, int K, int N) Dims
    {
        get
        {
            var p = Shape.Split('x');
            return (int.Parse(p[0]), int.Parse(p[1]), int.Parse(p[2]));
        }
    }

    private Tensor[] _x = [];
    private Tensor _w = null!, _y = null!;

    /// <inheritdoc />
    public override Work Work(string method)
    {
        var (m, k, n) = Dims;
        double e = Operands.SizeOf();
        return new(e * ((double)m * k + (double)n * k) + 4.0 * m * n, 2.0 * m * n * k, Bound.Compute);
    }

    /// <inheritdoc />
    protected override void Setup()
    {
        var (m, k, n) = Dims;
        _x = Sets(i => BenchData.Uniform(new Shape(m, k), 400 + (ulong)i, 1f, Operands, Dev));
        _w = BenchData.Uniform(new Shape(n, k), 410, 0.02f, Operands, Dev);
        _y = Tensor.Empty(new Shape(m, n), DType.F32, Dev);
    }

    /// <inheritdoc />
    protected override void Cleanup() => Free(_x, [_w, _y]);

    [Benchmark(OperationsPerInvoke = FewLaunches)]
    public void Linear() => Time(i =>
    {
        var (m, k, n) = Dims;
        Gpu.Gemm(false, true, m, n, k, 1f, _x[i], 0, k, 0, _w, 0, k, 0, 0f, _y, 0, n, 0, 1);
    }, FewLaunches);
}
