using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Backends.Cpu;
using DoctorGlm.Engine.Backends.Cuda;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// Every CUDA kernel against the CPU reference on the same inputs. Outputs are poisoned with NaN before each
/// kernel, so an element the kernel forgets to write fails the comparison. Skipped (dynamically) without a GPU.
/// </summary>
[Collection(GpuCollection.Name)]
public class CudaBackendTests
{
    private static readonly Random s_rng = new(1234);

    private static float[] Randn(int n, double std = 1)
    {
        lock (s_rng) return Enumerable.Range(0, n).Select(_ => (float)(std * OpInput.Gauss(s_rng))).ToArray();
    }

    private static Tensor T(float[] data, Device dev, params int[] shape) => Tensor.FromArray(data, new Shape(shape), DType.F32, dev);
    private static Tensor Poison(Device dev, params int[] shape) => Tensor.Full(new Shape(shape), float.NaN, DType.F32, dev);

    /// <summary>Runs <paramref name="body"/> on the CPU and on CUDA and returns the outputs of each as host arrays.</summary>
    private static (float[][] Cpu, float[][] Gpu) Both(Func<IBackend, Device, Tensor[]> body)
    {
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        var c = body(CpuBackend.Instance, Device.Cpu).Select(t => t.ToFloatArray()).ToArray();
        var g = body(gpu, gpu.Device).Select(t => t.ToFloatArray()).ToArray();
        return (c, g);
    }

    private static void Close((float[][] Cpu, float[][] Gpu) r, double rtol, double atol, string what)
    {
        for (int i = 0; i < r.Cpu.Length; i++) Fixture.AssertClose(r.Cpu[i], r.Gpu[i], rtol, atol, $"{what} output {i}");
    }

    private static void Identical((float[][] Cpu, float[][] Gpu) r, string what)
    {
        for (int i = 0; i < r.Cpu.Length; i++)
            for (int j = 0; j < r.Cpu[i].Length; j++)
                Assert.True(BitConverter.SingleToInt32Bits(r.Cpu[i][j]) == BitConverter.SingleToInt32Bits(r.Gpu[i][j]),
                    $"{what} output {i}[{j}]: CPU {r.Cpu[i][j]:R}, CUDA {r.Gpu[i][j]:R} (must be bit-identical)");
    }

    [Fact]
    public void Elementwise()
    {
        var a = Randn(1000); var b = Randn(1000); var v = Randn(40);
        Close(Both((be, d) =>
        {
            var (ta, tb) = (T(a, d, 25, 40), T(b, d, 25, 40));
            var y1 = Poison(d, 25, 40); be.AddScaled(ta, 0.5f, tb, -2f, y1);
            var y2 = Poison(d, 25, 40); be.AddScaled(ta, 0.5f, ta, 0.25f, y2);
            var y3 = Poison(d, 25, 40); be.Mul(ta, tb, y3);
            var y4 = T(a, d, 25, 40); be.AddRowVector(y4, T(v, d, 40), 3f);
            var y5 = Poison(d, 40); be.SumRows(ta, y5, false);
            var y6 = T(v, d, 40); be.SumRows(tb, y6, true);
            return [y1, y2, y3, y4, y5, y6];
        }), 1e-6, 1e-6, "elementwise");
    }

    /// <summary>add_scaled_row_bias gives add_row_vector then add_scaled on the GPU bit for bit (DecodeFusionTests).</summary>
    [Theory]
    [InlineData(1, 4096, DType.F32)]
    [InlineData(7, 333, DType.F32)]
    [InlineData(3, 4096, DType.BF16)]
    [InlineData(2, 333, DType.F16)]
    public void AddScaledRowBiasIsTheUnfusedPassesBitForBit(int rows, int f, DType dtype)
    {
        var gpu = CudaTestSetup.Require();
        DoctorGlm.Engine.Tests.Core.DecodeFusionTests.CheckResidual(gpu.Device, rows, f, dtype);
    }

    /// <summary>split_qkv_rotary gives add_row_vector, rotary2d twice and a copy, bit for bit, on the GPU (DecodeFusionTests).</summary>
    [Theory]
    [InlineData(DType.F32, true)]
    [InlineData(DType.BF16, true)]
    [InlineData(DType.F16, false)]
    public void SplitQkvRotaryIsTheUnfusedPassesBitForBit(DType dtype, bool withBias)
    {
        var gpu = CudaTestSetup.Require();
        DoctorGlm.Engine.Tests.Core.DecodeFusionTests.CheckSplit(gpu.Device, dtype, withBias);
    }

    /// <summary>layernorm_forward's copy is its output cast, bit for bit, on the GPU (DecodeFusionTests).</summary>
    [Theory]
    [InlineData(DType.BF16, 1, 4096)]
    [InlineData(DType.F16, 5, 333)]
    public void LayerNormCopyIsItsOutputCastBitForBit(DType dtype, int rows, int h)
    {
        var gpu = CudaTestSetup.Require();
        DoctorGlm.Engine.Tests.Core.DecodeFusionTests.CheckLayerNormCopy(gpu.Device, dtype, rows, h);
    }

    [Fact]
    public void ReductionsAndFill()
    {
        var gpu = CudaTestSetup.Require();
        var x = Randn(100_003);
        x[17] = float.NaN; x[99_999] = float.PositiveInfinity;
        using var tc = T(x, Device.Cpu, x.Length);
        using var tg = T(x, gpu.Device, x.Length);
        Assert.Equal(2, gpu.CountNonFinite(tg));
        x[17] = 1; x[99_999] = 2;
        using var fc = T(x, Device.Cpu, x.Length);
        using var fg = T(x, gpu.Device, x.Length);
        Assert.Equal(CpuBackend.Instance.Sum(fc), gpu.Sum(fg), 1e-9);
        Assert.Equal(CpuBackend.Instance.SumOfSquares(fc), gpu.SumOfSquares(fg), 1e-8 * CpuBackend.Instance.SumOfSquares(fc));
        foreach (var dt in new[] { DType.F32, DType.F16, DType.BF16, DType.I32, DType.U8, DType.I8 })
        {
            using var t = Tensor.Empty(new Shape(1001), dt, gpu.Device);
            gpu.Fill(t, 3f);
            Assert.All(t.ToFloatArray(), e => Assert.Equal(3f, e));
        }
    }

    [Fact]
    public void StridedCopyAndCasts()
    {
        var x = Randn(2 * 3 * 5 * 7, 100);
        x[3] = float.NaN; x[4] = 1e30f; x[5] = 1.00390625f; // overflow to ∞ in fp16, a bf16 tie
        Identical(Both((be, d) =>
        {
            var t = T(x, d, 2, 3, 5, 7);
            var perm = t.Permute(3, 1, 0, 2);
            var y = Poison(d, 7, 3, 2, 5); be.Copy(perm, y);
            var h = Tensor.Empty(new Shape(2, 3, 5, 7), DType.F16, d); be.Copy(t, h);
            var bf = Tensor.Empty(new Shape(2, 3, 5, 7), DType.BF16, d); be.Copy(t, bf);
            var bfT = Tensor.Empty(new Shape(7, 3, 2, 5), DType.BF16, d); be.Copy(perm, bfT);
            var back = Poison(d, 2, 3, 5, 7); be.Copy(bf, back);
            return [y, h, bf, bfT, back];
        }), "copy");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void GemmMatchesCpu(bool ta, bool tb)
    {
        int m = 33, n = 17, k = 45, batch = 3;
        var a = Randn(batch * m * k + 5); var b = Randn(batch * k * n + 7); var c0 = Randn(batch * m * n);
        Close(Both((be, d) =>
        {
            var A = T(a, d, a.Length); var B = T(b, d, b.Length);
            var C = T(c0, d, c0.Length);
            be.Gemm(ta, tb, m, n, k, 0.75f, A, 5, ta ? m : k, m * k, B, 7, tb ? k : n, k * n, 0.5f, C, 0, n, m * n, batch);
            var C2 = Poison(d, m * n); // beta = 0 must not read C (NaN·0 would leak)
            be.Gemm(ta, tb, m, n, k, 1f, A, 5, ta ? m : k, 0, B, 7, tb ? k : n, 0, 0f, C2, 0, n, 0, 1);
            return [C, C2];
        }), 1e-5, 1e-5, $"gemm ta={ta} tb={tb}");
    }

    [Fact]
    public void GemmWithBf16Operands()
    {
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        int m = 8, n = 9, k = 16;
        var a = Randn(m * k).Select(v => HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(v))).ToArray();
        var b = Randn(k * n).Select(v => HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(v))).ToArray();
        var c = Poison(gpu.Device, m * n);
        gpu.Gemm(false, false, m, n, k, 1f, Tensor.FromArray(a, new Shape(m * k), DType.BF16, gpu.Device), 0, k, 0,
            Tensor.FromArray(b, new Shape(k * n), DType.BF16, gpu.Device), 0, n, 0, 0f, c, 0, n, 0, 1);
        var cpu = Poison(Device.Cpu, m * n);
        CpuBackend.Instance.Gemm(false, false, m, n, k, 1f, T(a, Device.Cpu, m * k), 0, k, 0, T(b, Device.Cpu, k * n), 0, n, 0, 0f, cpu, 0, n, 0, 1);
        Fixture.AssertClose(cpu.ToFloatArray(), c.ToFloatArray(), 1e-5, 1e-5, "bf16 gemm");
    }

    /// <summary>
    /// fp32 activations times 16-bit weights: the GPU rounds the fp32 side to the weight's type and runs cuBLAS
    /// on tensor cores, the CPU multiplies exact values. Each product then carries one rounding of the fp32
    /// operand (at most 2⁻⁹ relative for bf16, 2⁻¹² for fp16); over k unit-variance products the error is about
    /// u·√k, so the bound is 6·u·√k absolute (about six standard deviations; a wrong element is off by ~√k).
    /// </summary>
    [Theory]
    [InlineData("F32", "BF16", false, true)]
    [InlineData("F32", "BF16", false, false)]
    [InlineData("BF16", "F32", true, false)]
    [InlineData("F16", "F32", false, true)]
    [InlineData("F32", "F16", true, true)]
    [InlineData("BF16", "F16", false, true)]
    public void GemmWithMixedOperandTypes(string typeA, string typeB, bool ta, bool tb)
    {
        var (da, db) = (Enum.Parse<DType>(typeA), Enum.Parse<DType>(typeB));
        int m = 37, n = 70, k = 300, batch = 2;
        var a = Randn(batch * m * k + 5); var b = Randn(batch * k * n + 7); var c0 = Randn(batch * m * n);
        bool bf16 = da == DType.BF16 || db == DType.BF16;
        double atol = 6 * (bf16 ? 1.0 / 512 : 1.0 / 4096) * Math.Sqrt(k);
        Close(Both((be, d) =>
        {
            var A = Tensor.FromArray(a, new Shape(a.Length), da, d); var B = Tensor.FromArray(b, new Shape(b.Length), db, d);
            var C = T(c0, d, c0.Length);
            be.Gemm(ta, tb, m, n, k, 0.75f, A, 5, ta ? m : k, m * k, B, 7, tb ? k : n, k * n, 0.5f, C, 0, n, m * n, batch);
            var C2 = Poison(d, m * n);
            be.Gemm(ta, tb, m, n, k, 1f, A, 5, ta ? m : k, 0, B, 7, tb ? k : n, 0, 0f, C2, 0, n, 0, 1);
            var C3 = Poison(d, 2 * n); // two rows: the CPU's dot-product path against cuBLAS
            be.Gemm(false, true, 2, n, k, 1f, A, 0, k, 0, B, 0, k, 0, 0f, C3, 0, n, 0, 1);
            return [C, C2, C3];
        }), 1e-3, atol, $"gemm {typeA}×{typeB} ta={ta} tb={tb}");
    }

    /// <summary>
    /// A 16-bit C (beta = 0): cuBLAS multiplies A and B rounded to C's type and rounds the fp32 sums once. Bound as
    /// above for the operand roundings (both operands may be rounded: √2 more), plus one rounding of the result
    /// (relative 2⁻⁹ / 2⁻¹²: 1e-2 relative covers it, ±1 ulp where the two sides straddle a rounding boundary).
    /// </summary>
    [Theory]
    [InlineData("F32", "F32", "BF16", false, true)]
    [InlineData("BF16", "BF16", "BF16", false, true)]
    [InlineData("F32", "BF16", "BF16", true, false)]
    [InlineData("F16", "F16", "F16", false, false)]
    [InlineData("BF16", "F32", "F16", false, true)]
    public void GemmInto16BitC(string typeA, string typeB, string typeC, bool ta, bool tb)
    {
        var (da, db, dc) = (Enum.Parse<DType>(typeA), Enum.Parse<DType>(typeB), Enum.Parse<DType>(typeC));
        int m = 37, n = 70, k = 300, batch = 2;
        var a = Randn(batch * m * k + 5); var b = Randn(batch * k * n + 7);
        bool bf16 = da == DType.BF16 || db == DType.BF16 || dc == DType.BF16;
        double atol = 1.5 * 6 * (bf16 ? 1.0 / 512 : 1.0 / 4096) * Math.Sqrt(k);
        Close(Both((be, d) =>
        {
            var A = Tensor.FromArray(a, new Shape(a.Length), da, d); var B = Tensor.FromArray(b, new Shape(b.Length), db, d);
            var C = Tensor.Full(new Shape(batch * m * n), float.NaN, dc, d);
            be.Gemm(ta, tb, m, n, k, 0.75f, A, 5, ta ? m : k, m * k, B, 7, tb ? k : n, k * n, 0f, C, 0, n, m * n, batch);
            return [C];
        }), 1e-2, atol, $"gemm {typeA}×{typeB} → {typeC} ta={ta} tb={tb}");
    }

    [Theory]
    [InlineData("BF16")]
    [InlineData("F16")]
    public void EmbeddingFrom16BitTable(string type)
    {
        var dt = Enum.Parse<DType>(type);
        int v = 40, h = 130;
        var table = Randn(v * h); var ids = new[] { 3, 7, 3, 39, 0 };
        Identical(Both((be, d) =>
        {
            var y = Poison(d, ids.Length, h);
            be.EmbeddingForward(Tensor.FromArray(ids, new Shape(ids.Length), d), Tensor.FromArray(table, new Shape(v, h), dt, d), y);
            return [y];
        }), $"{type} embedding");
    }

    [Fact]
    public void LayerNorm()
    {
        int rows = 130, h = 96;
        var x = Randn(rows * h).Select(v => v + 50f).ToArray(); var w = Randn(h); var bb = Randn(h); var dy = Randn(rows * h);
        Close(Both((be, d) =>
        {
            var (tx, tw, tb) = (T(x, d, rows, h), T(w, d, h), T(bb, d, h));
            var y = Poison(d, rows, h); var mean = Poison(d, rows); var rstd = Poison(d, rows);
            be.LayerNormForward(tx, tw, tb, 1e-5f, y, mean, rstd);
            var dx = Poison(d, rows, h); var dw = Poison(d, h); var db = Poison(d, h);
            be.LayerNormBackward(T(dy, d, rows, h), tx, tw, mean, rstd, dx, dw, db);
            return [y, mean, rstd, dx, dw, db];
        }), 1e-5, 1e-5, "layernorm");
    }

    [Fact]
    public void GeluAndDropout()
    {
        var x = Randn(5000, 3); var dy = Randn(5000);
        Close(Both((be, d) =>
        {
            var tx = T(x, d, 5000);
            var y = Poison(d, 5000); be.GeluForward(tx, y);
            var dx = Poison(d, 5000); be.GeluBackward(tx, T(dy, d, 5000), dx);
            return [y, dx];
        }), 1e-6, 1e-6, "gelu");
        var bias = Randn(125);
        Close(Both((be, d) =>
        {
            var (tx, tb) = (T(x, d, 40, 125), T(bias, d, 125));
            var y = Poison(d, 40, 125); be.BiasGeluForward(tx, tb, y);
            var dx = Poison(d, 40, 125); be.BiasGeluBackward(tx, tb, T(dy, d, 40, 125), dx);
            return [y, dx];
        }), 1e-6, 1e-6, "bias + gelu");
        Identical(Both((be, d) =>
        {
            var y = Poison(d, 5000); be.DropoutForward(T(x, d, 5000), y, 0.3f, 0xDEADBEEFCAFEul);
            return [y];
        }), "dropout");
    }

    [Fact]
    public void Embedding()
    {
        int v = 50, h = 300;
        var table = Randn(v * h); var ids = new[] { 3, 7, 3, 49, 0, 3, 12 }; var dy = Randn(ids.Length * h);
        Identical(Both((be, d) =>
        {
            var ti = Tensor.FromArray(ids, new Shape(ids.Length), d);
            var y = Poison(d, ids.Length, h); be.EmbeddingForward(ti, T(table, d, v, h), y);
            var dt = Poison(d, v, h); be.EmbeddingBackward(ti, T(dy, d, ids.Length, h), dt);
            return [y, dt];
        }), "embedding");
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        var bad = Tensor.FromArray([1, 2, 50, -1], new Shape(4), gpu.Device);
        var yb = Poison(gpu.Device, 4, h);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => gpu.EmbeddingForward(bad, T(table, gpu.Device, v, h), yb));
        Assert.Contains("ids[2] = 50", e.Message);
        Assert.All(yb.ToFloatArray(), f => Assert.True(float.IsNaN(f))); // nothing written
    }

    [Fact]
    public void CrossEntropy()
    {
        int n = 6, v = 5000;
        var logits = Randn(n * v, 4); var labels = new[] { 1, -100, 4999, 0, 17, -100 };
        Close(Both((be, d) =>
        {
            var tl = T(logits, d, n, v); var tlab = Tensor.FromArray(labels, new Shape(n), d);
            var loss = Poison(d, n); var lse = Poison(d, n);
            be.CrossEntropyForward(tl, tlab, -100, loss, lse);
            var dl = Poison(d, n, v); be.CrossEntropyBackward(tl, tlab, lse, -100, T([2f], d, 1), 0.25f, dl);
            return [loss, lse, dl];
        }), 1e-5, 1e-6, "cross-entropy");
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        // The op's checks (labels, non-finite rows) work the same on the GPU.
        var l2 = (float[])logits.Clone(); l2[3 * v + 5] = float.NaN;
        var ex = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(T(l2, gpu.Device, n, v), Tensor.FromArray(labels, new Shape(n), gpu.Device)));
        Assert.Contains("rows 3", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(T(logits, gpu.Device, n, v),
            Tensor.FromArray([1, 2, 3, 4, 5000, 6], new Shape(n), gpu.Device)));
    }

    [Fact]
    public void Rotary()
    {
        int b = 2, s = 5, nh = 3, dd = 16;
        var x = Randn(b * s * nh * dd); var pos = new int[b * 2 * s];
        for (int i = 0; i < pos.Length; i++) pos[i] = (i * 7) % 2000;
        Close(Both((be, d) =>
        {
            var tx = T(x, d, b, s, nh, dd); var tp = Tensor.FromArray(pos, new Shape(b, 2, s), d);
            var y = Poison(d, b, s, nh, dd); be.Rotary2D(tx, tp, y, false);
            var yi = Poison(d, b, s, nh, dd); be.Rotary2D(tx, tp, yi, true);
            return [y, yi];
        }), 1e-6, 1e-6, "rotary");
    }

    /// <summary>Inputs of one attention case: q, k, v, dO [b, s, nh, d], prefix keys/values [b, nPrefix, nh, d], an optional mask [b, s, s].</summary>
    private sealed record AttentionCase(int B, int S, int Heads, int D, int Prefix, float[] Q, float[] K, float[] V, float[] DOut,
        float[] PrefixK, float[] PrefixV, byte[]? Mask, float Scale, float MaskedValue)
    {
        /// <summary>Storage type of q, k, v and the output (16-bit activations); dO, the prefix, lse and gradients stay F32.</summary>
        public DType Activation { get; init; } = DType.F32;

        public static AttentionCase Random(int b, int s, int nh, int d, int nPrefix, byte[]? mask, float maskedValue, Func<float, float>? round = null)
        {
            float[] R(int n) => round is null ? Randn(n) : Randn(n).Select(round).ToArray();
            int seq = b * s * nh * d, pre = b * Math.Max(1, nPrefix) * nh * d;
            return new(b, s, nh, d, nPrefix, R(seq), R(seq), R(seq), R(seq), R(pre), R(pre), mask, 1f / MathF.Sqrt(d), maskedValue);
        }

        /// <summary>Forward then backward on <paramref name="be"/>, outputs poisoned first: [out, lse, dq, dk, dv] and, with a prefix, [dpk, dpv].</summary>
        public Tensor[] Run(IBackend be, Device dev)
        {
            Tensor X(float[] a) => T(a, dev, B, S, Heads, D);
            Tensor A(float[] a) => Tensor.FromArray(a, new Shape(B, S, Heads, D), Activation, dev);
            Tensor? P(float[] a) => Prefix == 0 ? null : T(a, dev, B, Prefix, Heads, D);
            Tensor? PPoison() => Prefix == 0 ? null : Poison(dev, B, Prefix, Heads, D);
            var tm = Mask is null ? null : Tensor.FromArray(Mask, new Shape(B, S, S), dev);
            var (tq, tk, tv, tpk, tpv) = (A(Q), A(K), A(V), P(PrefixK), P(PrefixV));
            var o = Tensor.Full(new Shape(B, S, Heads, D), float.NaN, Activation, dev); var lse = Poison(dev, B, Heads, S);
            be.AttentionForward(tq, tk, tv, tpk, tpv, tm, Scale, MaskedValue, o, lse);
            var dq = Poison(dev, B, S, Heads, D); var dk = Poison(dev, B, S, Heads, D); var dv = Poison(dev, B, S, Heads, D);
            var (dpk, dpv) = (PPoison(), PPoison());
            be.AttentionBackward(tq, tk, tv, tpk, tpv, tm, Scale, MaskedValue, o, lse, X(DOut), dq, dk, dv, dpk, dpv);
            return Prefix == 0 ? [o, lse, dq, dk, dv] : [o, lse, dq, dk, dv, dpk!, dpv!];
        }
    }

    [Theory]
    [InlineData(2, 13, 3, 8, 0, true)]
    [InlineData(1, 37, 2, 128, 0, true)]
    [InlineData(2, 9, 2, 64, 4, true)]
    [InlineData(1, 20, 1, 32, 3, false)]
    // Several key and query tiles (d 64: tiles of 16) with fewer dims than threads, so one tile's readers and the next
    // tile's loaders are different threads: the barrier between them is needed, and the race check sees it.
    [InlineData(1, 40, 2, 64, 5, true)]
    // bf16 q, k, v and output: both sides compute in fp32 from the same stored values, but each rounds its own output
    // (one bf16 ulp apart where the fp32 results straddle a rounding boundary), and backward's Σ dO·O reads it: 1e-2.
    [InlineData(2, 9, 2, 64, 4, true, "BF16")]
    [InlineData(1, 37, 2, 128, 0, true, "F16")]
    // One query (a decoding step: attention_decode in the forward), its own key blocked in batch 1: with a past, and
    // without one (the row is then fully blocked); head sizes that fill the lanes and one that does not (80), and one
    // beyond attention_decode's 128 (200: the tiled kernel takes it).
    [InlineData(3, 1, 2, 128, 40, true)]
    [InlineData(2, 1, 3, 32, 0, true)]
    [InlineData(2, 1, 2, 64, 5, true, "BF16")]
    [InlineData(2, 1, 2, 80, 9, true)]
    [InlineData(1, 1, 1, 200, 7, false)]
    public void Attention(int b, int s, int nh, int dd, int nPrefix, bool masked, string activation = "F32")
    {
        var mask = new byte[b * s * s];
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < s; i++)
                for (int j = 0; j < s; j++) // causal, row 1 of batch 0 fully blocked; one query: batch 1's own key blocked
                    mask[(bi * s + i) * s + j] = (byte)(j > i || (bi == 0 && i == 1) || (s == 1 && bi == 1) ? 1 : 0);
        var act = Enum.Parse<DType>(activation);
        var c = AttentionCase.Random(b, s, nh, dd, nPrefix, masked ? mask : null, -10000f * 3,
            act == DType.F32 ? null : x => OpInput.RoundTo(act, x)) with { Activation = act };
        // lse of a fully blocked row is ≈ mv + log S, too large for a 1e-5 absolute comparison: checked relatively.
        double tol = act == DType.F32 ? 1e-4 : 1e-2;
        Close(Both(c.Run), tol, tol, $"attention b={b} s={s} nh={nh} d={dd} prefix={nPrefix} {activation}");
    }

    /// <summary>
    /// The tensor-core kernels (attention_mma.cu) against the CPU's fp32 attention. Q, K, V, dO and the prefix are
    /// bf16 values already, so both sides see the same inputs and what remains is the kernels' own rounding of P
    /// and dS to bf16: every output is compared with its largest CPU element, max|GPU − CPU| ≤ 1e-2·max|CPU| (the
    /// emulated device shows 1e-3..4e-3; wrong fragment indexing or tile skipping gives 5e-2 and more), lse within
    /// 1e-3·max(1, |lse|). Shapes cover several query and key tiles, a ragged last tile, prefix keys (128: P-Tuning's
    /// two whole key tiles), a fully blocked row (its dO made large, so that its uniform share of dV — which reaches
    /// keys in otherwise all-blocked tiles — is not lost in the tolerance), the prefix-LM mask and a causal mask long
    /// enough for whole tiles to be skipped.
    /// </summary>
    [Theory]
    [InlineData(2, 77, 2, 64, 0, "glm")]
    [InlineData(1, 130, 2, 128, 5, "glm")]
    [InlineData(2, 45, 1, 128, 128, "glm")]
    [InlineData(1, 33, 1, 128, 0, "none")]
    [InlineData(1, 300, 2, 128, 0, "causal")]
    [InlineData(2, 200, 1, 64, 3, "causal")]
    // bf16 activations: q, k, v stored in bf16 (staged into the tiles as they are) and the output rounded to bf16.
    [InlineData(1, 130, 2, 128, 5, "glm", "BF16")]
    [InlineData(2, 200, 1, 64, 3, "causal", "BF16")]
    public void AttentionOnTensorCores(int b, int s, int nh, int dd, int nPrefix, string maskKind, string activation = "F32")
    {
        var gpu = CudaTestSetup.Require();
        if (gpu.ComputeCapability < 80) Assert.Skip($"tensor-core attention needs sm_80+, this GPU is sm_{gpu.ComputeCapability}");
        var mask = new byte[b * s * s];
        for (int bi = 0; bi < b; bi++)
        {
            int context = maskKind == "glm" ? s / 3 + 5 * bi : 0; // bidirectional over the prompt, causal after it
            for (int i = 0; i < s; i++)
                for (int j = 0; j < s; j++)
                    mask[(bi * s + i) * s + j] = (byte)(j > i && j >= context ? 1 : 0);
        }
        bool blockedRow = maskKind == "glm" && nPrefix == 0;
        if (blockedRow)
            for (int j = 0; j < s; j++) mask[5 * s + j] = 1; // row 5 of batch 0 sees no key: uniform attention
        static float Bf16(float x) => HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(x));
        var c = AttentionCase.Random(b, s, nh, dd, nPrefix, maskKind == "none" ? null : mask, -10000f, Bf16) with { Activation = Enum.Parse<DType>(activation) };
        if (blockedRow)
            for (int e = 0; e < nh * dd; e++) c.DOut[5 * nh * dd + e] *= 32f; // a power of two: still a bf16 value
        var previous = gpu.AttentionKernel;
        gpu.AttentionKernel = CudaAttentionKernel.TensorCores;
        try
        {
            var r = Both(c.Run);
            string what = $"tensor-core attention b={b} s={s} nh={nh} d={dd} prefix={nPrefix} mask={maskKind} {activation}";
            for (int i = 0; i < r.Cpu[1].Length; i++)
                Assert.True(Math.Abs(r.Gpu[1][i] - r.Cpu[1][i]) <= 1e-3 * Math.Max(1, Math.Abs(r.Cpu[1][i])),
                    $"{what}: lse[{i}] CUDA {r.Gpu[1][i]:R}, CPU {r.Cpu[1][i]:R}");
            string[] names = ["out", "lse", "dq", "dk", "dv", "dprefix_k", "dprefix_v"];
            for (int t = 0; t < r.Cpu.Length; t++)
            {
                if (t == 1) continue;
                double maxRef = r.Cpu[t].Max(x => Math.Abs((double)x)), maxErr = 0;
                int worst = 0;
                for (int i = 0; i < r.Cpu[t].Length; i++)
                {
                    double e = Math.Abs((double)r.Gpu[t][i] - r.Cpu[t][i]);
                    if (double.IsNaN(e)) { maxErr = double.PositiveInfinity; worst = i; break; } // a poisoned element never written
                    if (e > maxErr) { maxErr = e; worst = i; }
                }
                Assert.True(maxRef > 0 && maxErr <= 1e-2 * maxRef,
                    $"{what}: {names[t]} max |CUDA − CPU| = {maxErr:G4} at [{worst}] (CUDA {r.Gpu[t][worst]:R}, CPU {r.Cpu[t][worst]:R}); allowed 1e-2 × {maxRef:G4}");
            }
        }
        finally { gpu.AttentionKernel = previous; }
    }

    /// <summary>
    /// The prefix mask (a batched KV cache's left pads among the past keys) in both forward kernels against the CPU:
    /// a decoding step (one query per row over a long past, P-Tuning positions visible, each row's pads hidden, one
    /// row with pads spanning a whole 64-key tile) and a short chunk with its own causal mask. Inputs are bf16 values,
    /// outputs poisoned; fp32 kernels within 1e-4, tensor cores within 1e-2 of the largest output (their P is bf16).
    /// The past is a contiguous F32 tensor, or (<paramref name="past"/> "F32View", "BF16View", "F16View") what a KV
    /// cache hands over: the first positions of a longer buffer (the rest NaN), in F32 or 16 bits, read in place.
    /// </summary>
    [Theory]
    [InlineData("Fp32", 3, 1, 2, 128, 150, "F32")]
    [InlineData("Fp32", 2, 5, 3, 32, 19, "F32")]
    [InlineData("TensorCores", 3, 1, 2, 128, 150, "F32")]
    [InlineData("TensorCores", 2, 5, 1, 64, 70, "F32")]
    [InlineData("Fp32", 3, 1, 2, 128, 150, "BF16View")]
    [InlineData("Fp32", 2, 5, 3, 32, 19, "F16View")]
    [InlineData("Fp32", 2, 1, 3, 64, 40, "F32View")]
    [InlineData("TensorCores", 3, 1, 2, 128, 150, "BF16View")]
    [InlineData("TensorCores", 2, 5, 1, 64, 70, "F16View")]
    [InlineData("TensorCores", 2, 1, 2, 128, 90, "F32View")]
    // A decoding step's past cut into key ranges merged afterwards (attention_decode_combine): 2, 3 and 7 ranges
    // (the last ragged; with 151 keys, 7 ranges of 22), and 40 asked for 41 keys (ranges of one key).
    [InlineData("Fp32", 3, 1, 2, 128, 150, "BF16View", 2)]
    [InlineData("Fp32", 3, 1, 2, 128, 150, "BF16View", 3)]
    [InlineData("Fp32", 3, 1, 2, 128, 150, "F32View", 7)]
    [InlineData("Fp32", 2, 1, 3, 64, 40, "F16View", 40)]
    public void AttentionWithPrefixMask(string kernel, int b, int s, int nh, int dd, int nPast, string past, int decodeSplits = 0)
    {
        var gpu = CudaTestSetup.Require();
        var which = Enum.Parse<CudaAttentionKernel>(kernel);
        if (which == CudaAttentionKernel.TensorCores && gpu.ComputeCapability < 80) Assert.Skip($"tensor-core attention needs sm_80+, this GPU is sm_{gpu.ComputeCapability}");
        static float Bf16(float x) => HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(x));
        var c = AttentionCase.Random(b, s, nh, dd, nPast, null, -10000f * 2, Bf16);
        var mask = new byte[b * s * s];
        for (int bi = 0; bi < b; bi++) for (int i = 0; i < s; i++) for (int j = i + 1; j < s; j++) mask[(bi * s + i) * s + j] = 1;
        var pmask = new byte[b * nPast];
        for (int bi = 0; bi < b; bi++)
        {
            int pads = bi == 0 ? 0 : bi == 1 ? Math.Min(nPast - 1, 67) : 9; // row 0 none; row 1 covers a whole 64-key tile
            for (int j = 3; j < Math.Min(nPast, 3 + pads); j++) pmask[bi * nPast + j] = 1; // the first 3 positions: a visible P-Tuning prefix
        }
        var previous = gpu.AttentionKernel;
        gpu.AttentionKernel = which;
        gpu.DecodeAttentionSplits = decodeSplits == 0 ? null : decodeSplits;
        try
        {
            var r = Both((be, d) =>
            {
                Tensor A(float[] a, int n) => T(a, d, b, n, nh, dd);
                Tensor Past(float[] a)
                {
                    if (past == "F32") return A(a, nPast);
                    // A cache buffer with room for 13 more positions (NaN), in the cache's dtype; the past is its first nPast.
                    var dtype = past == "BF16View" ? DType.BF16 : past == "F16View" ? DType.F16 : DType.F32;
                    var buffer = Tensor.Full(new Shape(b, nPast + 13, nh, dd), float.NaN, dtype, d);
                    var view = buffer.Narrow(1, 0, nPast);
                    be.Copy(A(a, nPast), view);
                    return view;
                }
                var o = Poison(d, b, s, nh, dd);
                var lse = Poison(d, b, nh, s);
                be.AttentionForward(A(c.Q, s), A(c.K, s), A(c.V, s), Past(c.PrefixK), Past(c.PrefixV), Tensor.FromArray(mask, new Shape(b, s, s), d),
                    c.Scale, c.MaskedValue, o, lse, Tensor.FromArray(pmask, new Shape(b, nPast), d));
                return [o, lse];
            });
            string what = $"prefix-masked attention ({kernel}) b={b} s={s} nh={nh} d={dd} past={nPast} ({past}, splits {decodeSplits})";
            double tol = which == CudaAttentionKernel.Fp32 ? 1e-4 : 1e-2;
            double maxRef = r.Cpu[0].Max(x => Math.Abs((double)x));
            for (int i = 0; i < r.Cpu[0].Length; i++)
                Assert.True(Math.Abs((double)r.Gpu[0][i] - r.Cpu[0][i]) <= tol * maxRef, $"{what}: out[{i}] CUDA {r.Gpu[0][i]:R}, CPU {r.Cpu[0][i]:R} (max |CPU| {maxRef:G4})");
            for (int i = 0; i < r.Cpu[1].Length; i++)
                Assert.True(Math.Abs(r.Gpu[1][i] - r.Cpu[1][i]) <= 1e-3 * Math.Max(1, Math.Abs(r.Cpu[1][i])), $"{what}: lse[{i}] CUDA {r.Gpu[1][i]:R}, CPU {r.Cpu[1][i]:R}");
        }
        finally { gpu.AttentionKernel = previous; gpu.DecodeAttentionSplits = null; }
    }

    [Fact]
    public void TensorCoreAttentionFallsBackToFp32ForOtherHeadSizes()
    {
        // d = 32 has no tensor-core kernel: the setting must route it to the fp32 kernels, which match the CPU to 1e-4.
        var gpu = CudaTestSetup.Require();
        var previous = gpu.AttentionKernel;
        gpu.AttentionKernel = CudaAttentionKernel.TensorCores;
        try { Attention(1, 20, 1, 32, 3, false); }
        finally { gpu.AttentionKernel = previous; }
    }

    /// <summary>
    /// A quantized linear that trains its input (P-Tuning on an INT4 base) keeps no de-quantized weight between forward
    /// and backward: the device memory in use after the forward grows by the output only (the fp32 weight would add
    /// 512 KiB), and backward, which de-quantizes again, gives what Linear on the de-quantized weight gives, bit for bit.
    /// </summary>
    [Fact]
    public void QuantizedLinearKeepsOnlyThePackedWeightForBackward()
    {
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        var rng = new RandomGenerator(21);
        var w = rng.Normal(new Shape(256, 512), 0.2f).To(gpu.Device);
        var b = rng.Normal(new Shape(256)).To(gpu.Device);
        using var q = DoctorGlm.Engine.Quantization.QuantizedWeight.Quantize(w, 4);
        var xh = rng.Normal(new Shape(40, 512));
        var x1 = xh.To(gpu.Device); x1.RequiresGrad = true;
        var x2 = xh.To(gpu.Device); x2.RequiresGrad = true;
        gpu.Synchronize();
        long before = gpu.Memory.InUseBytes;
        var y1 = Ops.QuantizedLinear(x1, q, b);
        long grown = gpu.Memory.InUseBytes - before;
        Assert.True(grown < 256 * 512 * sizeof(float), $"the forward kept {grown} bytes: a de-quantized weight is being held for backward");
        var y2 = Ops.Linear(x2, q.Dequantize(), b);
        Assert.Equal(y2.ToFloatArray(), y1.ToFloatArray());
        Ops.Sum(Ops.Mul(y1, y1)).Backward();
        Ops.Sum(Ops.Mul(y2, y2)).Backward();
        Assert.Equal(x2.Grad!.ToFloatArray(), x1.Grad!.ToFloatArray());
    }

    [Fact]
    public void DescribeNamesTheDeviceAndTheLibraryFilesLoaded()
    {
        var gpu = CudaTestSetup.Require();
        string text = gpu.Describe();
        Assert.Contains(gpu.DeviceName, text);
        Assert.Contains($"sm_{gpu.ComputeCapability}", text);
        foreach (var logical in new[] { "cuda", "nvrtc", "cublas" })
        {
            Assert.True(DoctorGlm.Engine.Backends.Cuda.Native.NativeLibraries.LoadedFiles.TryGetValue(logical, out var file), $"no file recorded for {logical}");
            Assert.Contains(file, text);
        }
    }

    [Fact]
    public void OptimizersAreBitIdentical()
    {
        int n = 10_007;
        var p = Randn(n); var g = Randn(n); var m = Randn(n, 0.1); var v = Randn(n).Select(x => x * x).ToArray();
        g[5] = 0; m[5] = 0; // Lion's sign(0)
        Identical(Both((be, d) =>
        {
            var (tp, tg, tm, tv) = (T(p, d, n), T(g, d, n), T(m, d, n), T(v, d, n));
            be.AdamWStep(tp, tg, tm, tv, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1 - Math.Pow(0.9, 3), 1 - Math.Pow(0.999, 3));
            var (lp, lm) = (T(p, d, n), T(m, d, n));
            be.LionStep(lp, tg, lm, 1e-4, 0.9, 0.99, 0.1);
            return [tp, tm, tv, lp, lm];
        }), "optimizers");
    }

    /// <summary>
    /// The one-launch forms over several tensors (sizes straddling the 65536-element chunk, one empty, each with
    /// its own step count) give each element exactly the single-tensor result; the multi-tensor Σx² matches the
    /// CPU's double sum to double rounding.
    /// </summary>
    [Fact]
    public void MultiTensorOptimizersAreBitIdentical()
    {
        int[] sizes = [5, 65_536, 0, 140_001, 333];
        var data = sizes.Select(n => (P: Randn(n), G: Randn(n), M: Randn(n, 0.1), V: Randn(n).Select(x => x * x).ToArray())).ToArray();
        data[0].G[1] = 0; data[0].M[1] = 0; // Lion's sign(0)
        var steps = new[] { 1, 3, 3, 7, 2 };
        Identical(Both((be, d) =>
        {
            var t = data.Select((x, i) => (P: T(x.P, d, sizes[i]), G: T(x.G, d, sizes[i]), M: T(x.M, d, sizes[i]), V: T(x.V, d, sizes[i]))).ToArray();
            be.AdamWStep(t.Select((x, i) => new AdamWUpdate(x.P, x.G, x.M, x.V, 1 - Math.Pow(0.9, steps[i]), 1 - Math.Pow(0.999, steps[i]))).ToList(),
                1e-3, 0.9, 0.999, 1e-8, 0.01);
            var l = data.Select((x, i) => (P: T(x.P, d, sizes[i]), M: T(x.M, d, sizes[i]))).ToArray();
            be.LionStep(l.Select((x, i) => new LionUpdate(x.P, t[i].G, x.M)).ToList(), 1e-4, 0.9, 0.99, 0.1);
            return [.. t.SelectMany(x => new[] { x.P, x.M, x.V }), .. l.SelectMany(x => new[] { x.P, x.M })];
        }), "multi-tensor optimizers");
        // And the same as the single-tensor kernel on the GPU.
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        var (p1, m1, v1) = (T(data[3].P, gpu.Device, sizes[3]), T(data[3].M, gpu.Device, sizes[3]), T(data[3].V, gpu.Device, sizes[3]));
        var (p2, m2, v2) = (T(data[3].P, gpu.Device, sizes[3]), T(data[3].M, gpu.Device, sizes[3]), T(data[3].V, gpu.Device, sizes[3]));
        var g = T(data[3].G, gpu.Device, sizes[3]);
        gpu.AdamWStep(p1, g, m1, v1, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1 - Math.Pow(0.9, 7), 1 - Math.Pow(0.999, 7));
        gpu.AdamWStep([new AdamWUpdate(p2, g, m2, v2, 1 - Math.Pow(0.9, 7), 1 - Math.Pow(0.999, 7))], 1e-3, 0.9, 0.999, 1e-8, 0.01);
        Assert.Equal(p1.ToFloatArray(), p2.ToFloatArray());

        var xs = data.Select((x, i) => T(x.G, gpu.Device, sizes[i])).ToList();
        double want = data.Sum(x => x.G.Sum(v => (double)v * v));
        double got = gpu.SumOfSquares(xs);
        Assert.True(Math.Abs(got - want) <= 1e-12 * want, $"Σx² {got} vs {want}");
    }

    [Fact]
    public void CublasWorksInAPooledWorkspace()
    {
        // The workspace comes from the backend's pool (NVIDIA's recommended size for the architecture), so the pool's
        // statistics include it; GEMMs then run in it (every GEMM test here runs after this setup).
        var gpu = CudaTestSetup.Require();
        Assert.Equal(gpu.ComputeCapability >= 90 ? 32L << 20 : 4L << 20, gpu.CublasWorkspaceBytes);
        Assert.True(gpu.Memory.InUseBytes >= gpu.CublasWorkspaceBytes, $"in use {gpu.Memory.InUseBytes} < workspace {gpu.CublasWorkspaceBytes}");
    }

    [Fact]
    public void MixedGemmRunsInBandsWhenItsRoundedOperandIsLarge()
    {
        // fp32 A × bf16 B with the rounding scratch limited to 3 rows of A: the product runs in bands of rows (the
        // last one short) and must equal the unbanded product bit for bit (each band is the same sums).
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        int m = 11, n = 7, k = 40;
        var a = T(Randn(m * k + 3), gpu.Device, m * k + 3);
        var b = T(Randn(n * k), gpu.Device, n * k).To(DType.BF16);
        var whole = T(Randn(m * n), gpu.Device, m * n);
        var banded = T(whole.ToFloatArray(), gpu.Device, m * n);
        gpu.Gemm(false, true, m, n, k, 0.5f, a, 3, k, 0, b, 0, k, 0, 0.25f, whole, 0, n, 0, 1);
        long previous = gpu.RoundingScratchBytes;
        gpu.RoundingScratchBytes = 3L * k * 2;
        try { gpu.Gemm(false, true, m, n, k, 0.5f, a, 3, k, 0, b, 0, k, 0, 0.25f, banded, 0, n, 0, 1); }
        finally { gpu.RoundingScratchBytes = previous; }
        Assert.Equal(whole.ToFloatArray(), banded.ToFloatArray());
    }

    [Fact]
    public void MultiTensorAdamWStepsReuseTheirTableAndStayBitIdentical()
    {
        // Three steps over the same tensors, every parameter at the same step: the GPU's table is built once (no
        // device memory is taken after the first step) and the step factors go as scalars; bit-identical to the CPU.
        int[] sizes = [70_000, 9, 1_024];
        var data = sizes.Select(n => (P: Randn(n), G: Randn(n), M: Randn(n, 0.1), V: Randn(n).Select(x => x * x).ToArray())).ToArray();
        long[] inUse = new long[3];
        Identical(Both((be, d) =>
        {
            var t = data.Select((x, i) => (P: T(x.P, d, sizes[i]), G: T(x.G, d, sizes[i]), M: T(x.M, d, sizes[i]), V: T(x.V, d, sizes[i]))).ToArray();
            for (int step = 1; step <= 3; step++)
            {
                be.AdamWStep(t.Select(x => new AdamWUpdate(x.P, x.G, x.M, x.V, 1 - Math.Pow(0.9, step), 1 - Math.Pow(0.999, step))).ToList(),
                    1e-3, 0.9, 0.999, 1e-8, 0.01);
                if (be is CudaBackend g) inUse[step - 1] = g.Memory.InUseBytes;
            }
            return [.. t.SelectMany(x => new[] { x.P, x.M, x.V })];
        }), "three multi-tensor AdamW steps");
        Assert.True(inUse[1] == inUse[0] && inUse[2] == inUse[0], $"device memory in use after each step: {string.Join(", ", inUse)} (the table must be reused)");
    }

    [Fact]
    public void DequantizeMatchesSpec()
    {
        var gpu = CudaTestSetup.Require();
        using var scope = TensorScope.Begin();
        int rows = 3, cols = 10;
        var q8 = Enumerable.Range(0, rows * cols).Select(i => (sbyte)((i * 37) % 255 - 127)).ToArray();
        var packed = Enumerable.Range(0, rows * cols / 2).Select(i => (sbyte)(byte)(i * 53)).ToArray();
        var scales = new[] { 0.5f, 0.01f, 3f }.Select(HalfConvert.RoundToF16).ToArray();
        var scaleT = Tensor.FromArray(scales, new Shape(rows), DType.F16, gpu.Device);
        var w8 = Poison(gpu.Device, rows, cols);
        gpu.DequantizeInt8(Tensor.FromBytes(q8.Select(s => (byte)s).ToArray(), new Shape(rows, cols), DType.I8, gpu.Device), scaleT, w8);
        var w4 = Poison(gpu.Device, rows, cols);
        gpu.DequantizeInt4(Tensor.FromBytes(packed.Select(s => (byte)s).ToArray(), new Shape(rows, cols / 2), DType.I8, gpu.Device), scaleT, w4);
        var e8 = new float[rows * cols]; var e4 = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                e8[r * cols + c] = q8[r * cols + c] * scales[r];
                sbyte by = packed[r * cols / 2 + c / 2];
                int nib = c % 2 == 0 ? by >> 4 : (sbyte)(by << 4) >> 4; // high nibble = even element
                e4[r * cols + c] = nib * scales[r];
            }
        Assert.Equal(e8, w8.ToFloatArray());
        Assert.Equal(e4, w4.ToFloatArray());
    }

    [Theory]
    [InlineData(8, 1, 130)]   // columns no 16-byte chunk covers: the lane-per-column loop
    [InlineData(4, 3, 130)]
    [InlineData(8, 19, 130)]  // more rows than one fused launch takes (16)
    [InlineData(8, 1, 1056)]  // 66 chunks a row: two per lane, then one lane's single chunk
    [InlineData(4, 8, 1056)]  // 33 chunks: the 33rd alone
    [InlineData(4, 5, 4128)]  // 129 chunks and a batch of rows
    [InlineData(8, 2, 1060)]  // rows of 1060 bytes, not 16-byte aligned: the lane-per-column loop
    public void FusedQuantizedMatVecMatchesCpu(int bits, int rows, int cols)
    {
        int outF = 45;
        var w = Randn(outF * cols, 0.3);
        var x = Randn(rows * cols);
        var r = Both((be, dev) =>
        {
            using var wq = DoctorGlm.Engine.Quantization.QuantizedWeight.Quantize(T(w, Device.Cpu, outF, cols), bits);
            var q = wq.Data.To(dev);
            var sc = wq.Scale.To(dev);
            var y = Poison(dev, rows, outF);
            be.QuantizedMatVec(T(x, dev, rows, cols), q, sc, bits, y);
            return [y];
        });
        Close(r, 1e-5, 1e-5, $"INT{bits} matvec");
    }

    /// <summary>quant_matvec widens a 16-bit x exactly: bit for bit the fp32 x's results on the GPU (both loops).</summary>
    [Theory]
    [InlineData(8, 3, 66, DType.BF16)]
    [InlineData(4, 1, 1056, DType.F16)]
    [InlineData(8, 5, 1056, DType.BF16)]
    public void QuantizedMatVecTakesSixteenBitInputs(int bits, int rows, int cols, DType dtype)
    {
        var gpu = CudaTestSetup.Require();
        DoctorGlm.Engine.Tests.Quantization.QuantizedMatVecTests.Sixteen_bit_input_check(gpu.Device, bits, rows, cols, dtype);
    }

    /// <summary>
    /// select_candidates (kernels/sampling.cu) against the CPU reference, bit for bit: the penalised scores it leaves
    /// behind, the candidate ids and scores (poisoned slots beyond the count must stay untouched) and the counts.
    /// Scores sit on a coarse grid so that ties with the k-th are common; the shapes cover a row shorter than the
    /// block (no floor), a row whose k-th score is the floor itself, k above the block size (no floor), top-k off, an
    /// overflowing buffer, a non-finite row, and ChatGLM's 130,528-id vocabulary.
    /// </summary>
    [Theory]
    [InlineData(7, 1003)]
    [InlineData(3, 300)]
    [InlineData(2, 130_528)]
    public void SelectCandidatesMatchesCpu(int rows, int v)
    {
        var rng = new Random(rows * 31 + v);
        var scores = new float[rows * v];
        float grid = v > 10_000 ? 2048 : 4; // about five ids per value either way
        for (int i = 0; i < scores.Length; i++) scores[i] = MathF.Round((float)(rng.NextDouble() * 12 - 6) * grid) / grid;
        for (int i = 0; i < scores.Length; i += 41) scores[i] = -0f;
        if (rows > 3) scores[3 * v + 5] = float.PositiveInfinity;
        // Row 1 (k = 50): the 60 best scores one per thread (ids 0..59), so the 50th best is exactly the 50th of the
        // threads' maxima: the kernel's floor, at the edge of what it may be.
        for (int j = 0; j < 60; j++) scores[v + j] = 100 - 0.25f * j;
        (float Penalty, float Temperature, int K)[] all = [(1.3f, 1f, 1), (1f, 0.7f, 50), (2f, 0.95f, 50), (1f, 1f, 9), (0.5f, 1.7f, 5), (1.2f, 0.3f, 0), (1f, 1f, 997)];
        var settings = all[..rows];
        const int l = 25, capacity = 120;
        var ids = new int[rows * l];
        for (int r = 0; r < rows; r++)
        {
            var distinct = Enumerable.Range(0, l).Select(_ => rng.Next(v)).Distinct().ToArray();
            for (int i = 0; i < l; i++) ids[r * l + i] = i < distinct.Length ? distinct[i] : -1;
        }
        var both = Both((be, dev) =>
        {
            var s = T(scores, dev, rows, v);
            var candIds = Tensor.Full(new Shape(rows, capacity), -7f, DType.I32, dev);
            var candScores = Poison(dev, rows, capacity);
            var counts = Tensor.Full(new Shape(rows), -9f, DType.I32, dev);
            be.SelectCandidates(s, Tensor.FromArray(ids, new Shape(rows, l), dev),
                T([.. settings.SelectMany(x => new[] { x.Penalty, x.Temperature })], dev, rows, 2),
                Tensor.FromArray([.. settings.Select(x => x.K)], new Shape(rows), dev), candIds, candScores, counts);
            return [s, candIds, candScores, counts];
        });
        Identical(both, "SelectCandidates");
        var counts = both.Cpu[3];
        Assert.True(counts.Any(c => c > 0 && c <= capacity), "some row fits the buffer");
        if (rows > 3) Assert.Equal(-1f, counts[3]);
        if (rows > 5) Assert.True(counts[5] == v, "top-k off keeps every id");
    }

    [Fact]
    public void AllocatorReusesPooledBlocks()
    {
        var gpu = CudaTestSetup.Require();
        var before = gpu.Memory;
        using (Tensor.Empty(new Shape(1 << 20), DType.F32, gpu.Device)) { }
        var pooled = gpu.Memory.PooledBytes;
        Assert.True(pooled >= 4L << 20, $"a released 4 MiB block should be pooled ({gpu.Memory})");
        using (Tensor.Empty(new Shape(1 << 20), DType.F32, gpu.Device))
            Assert.True(gpu.Memory.PooledBytes == pooled - (4L << 20), "the same size class must be reused from the pool");
        Assert.True(gpu.Memory.PeakBytes >= before.InUseBytes + (4L << 20));
    }
}
