using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Core;

/// <summary>
/// The passes a KV-cached decoding step fuses are fusions, not new formulas: on each backend each must give the passes
/// it replaces bit for bit, so that a step's logits do not move. <see cref="Ops.AddScaledWithBias"/> against a linear's
/// bias added to its output (<see cref="Backends.IBackend.AddRowVector"/>) then the scaled residual
/// (<see cref="Ops.AddScaled"/>, β = 1); LayerNorm's 16-bit copy against <see cref="Ops.Cast"/> of its fp32 output.
/// The op harness (elementwise.addscaled_with_bias, layernorm.*) checks the formulas against double references.
/// </summary>
public sealed class DecodeFusionTests
{
    [Theory]
    [InlineData(1, 37, DType.F32)]
    [InlineData(5, 4096, DType.F32)]
    [InlineData(3, 4096, DType.BF16)]
    [InlineData(2, 333, DType.F16)]
    public void AddScaledWithBias_gives_the_unfused_passes_bit_for_bit_on_the_cpu(int rows, int f, DType dtype) => CheckResidual(Device.Cpu, rows, f, dtype);

    [Theory]
    [InlineData(DType.BF16, 3, 37)]
    [InlineData(DType.F16, 2, 4096)]
    [InlineData(DType.F32, 1, 64)]
    public void LayerNorms_copy_is_its_output_cast_bit_for_bit_on_the_cpu(DType dtype, int rows, int h) => CheckLayerNormCopy(Device.Cpu, dtype, rows, h);

    /// <summary>LayerNorm's copy on <paramref name="device"/> (CudaBackendTests runs it on the GPU); the copy of a gradient-tracking input is refused.</summary>
    internal static void CheckLayerNormCopy(Device device, DType dtype, int rows, int h)
    {
        var rng = new Random(rows * 7 + h);
        float[] R(int n, double scale, double shift) => [.. Enumerable.Range(0, n).Select(_ => (float)(shift + scale * OpInput.Gauss(rng)))];
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray(R(rows * h, 3, 0.5), new Shape(rows, h), device: device);
        var w = Tensor.FromArray(R(h, 0.2, 1), new Shape(h), device: device);
        var b = Tensor.FromArray(R(h, 0.1, 0), new Shape(h), device: device);
        using (GradMode.NoGrad())
        {
            var y = Ops.LayerNorm(x, w, b, 1e-5f, dtype, out var copy);
            Assert.Equal(dtype, copy.DType);
            var plain = Ops.LayerNorm(x, w, b, 1e-5f);
            float[] yv = y.ToFloatArray(), pv = plain.ToFloatArray(), cv = copy.ToFloatArray(), ev = Ops.Cast(plain, dtype).ToFloatArray();
            for (int i = 0; i < yv.Length; i++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(yv[i]) == BitConverter.SingleToInt32Bits(pv[i]), $"{device}: y[{i}] {yv[i]:R}, plain LayerNorm {pv[i]:R}");
                Assert.True(BitConverter.SingleToInt32Bits(cv[i]) == BitConverter.SingleToInt32Bits(ev[i]), $"{device} {dtype}: copy[{i}] {cv[i]:R}, cast {ev[i]:R}");
            }
        }
        w.RequiresGrad = true;
        var e = Assert.Throws<NotSupportedException>(() => Ops.LayerNorm(x, w, b, 1e-5f, dtype, out _));
        Assert.Contains("LayerNorm(copy)", e.Message);
    }

    [Theory]
    [InlineData(DType.F32, true)]
    [InlineData(DType.BF16, true)]
    [InlineData(DType.F16, false)]
    public void SplitQkvRotary_gives_bias_rotary_and_copies_bit_for_bit_on_the_cpu(DType dtype, bool withBias) => CheckSplit(Device.Cpu, dtype, withBias);

    /// <summary>
    /// <see cref="Backends.IBackend.SplitQkvRotary"/> on <paramref name="device"/> against AddRowVector, two Rotary2D and
    /// a copy: a batch of 3, k and v written into strided slots of cache buffers (CudaBackendTests runs it on the GPU).
    /// </summary>
    internal static void CheckSplit(Device device, DType dtype, bool withBias)
    {
        const int b = 3, s = 2, nh = 3, d = 16, cap = 6, at = 3;
        var rng = new Random(withBias ? 5 : 6);
        float[] R(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(4 * OpInput.Gauss(rng)))];
        using var scope = TensorScope.Begin();
        using var noGrad = GradMode.NoGrad();
        var qkv = Tensor.FromArray(R(b * s * nh * 3 * d), new Shape(b, s, nh, 3 * d), device: device);
        var bias = withBias ? Tensor.FromArray(R(nh * 3 * d), new Shape(nh * 3 * d), device: device) : null;
        var pos = Tensor.FromArray([.. Enumerable.Range(0, b * 2 * s).Select(i => rng.Next(0, 500))], new Shape(b, 2, s), device);
        var q = Tensor.Full(new Shape(b, s, nh, d), float.NaN, dtype, device);
        var kBuf = Tensor.Full(new Shape(b + 1, cap, nh, d), float.NaN, dtype, device);
        var vBuf = Tensor.Full(new Shape(b + 1, cap, nh, d), float.NaN, dtype, device);
        Tensor Slot(Tensor buffer) => buffer.Narrow(0, 0, b).Narrow(1, at, s);
        qkv.Backend.SplitQkvRotary(qkv, bias, pos, q, Slot(kBuf), Slot(vBuf));

        var x = Ops.Contiguous(qkv);
        if (bias is not null) x.Backend.AddRowVector(x, bias, 1f);
        var eq = Tensor.Empty(q.Shape, dtype, device);
        var ek = Tensor.Empty(q.Shape, dtype, device);
        var ev = Tensor.Empty(q.Shape, dtype, device);
        x.Backend.Rotary2D(x.Narrow(3, 0, d), pos, eq, inverse: false);
        x.Backend.Rotary2D(x.Narrow(3, d, d), pos, ek, inverse: false);
        x.Backend.Copy(x.Narrow(3, 2 * d, d), ev);
        foreach (var (actual, expected, name) in new[] { (q, eq, "q"), (Ops.Contiguous(Slot(kBuf)), ek, "k"), (Ops.Contiguous(Slot(vBuf)), ev, "v") })
        {
            float[] av = actual.ToFloatArray(), xv = expected.ToFloatArray();
            for (int i = 0; i < av.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(av[i]) == BitConverter.SingleToInt32Bits(xv[i]), $"{device} {dtype}: {name}[{i}] {av[i]:R}, unfused {xv[i]:R}");
        }
        // Nothing outside the slots: 2·(b + 1)·cap·nh·d elements, of which 2·b·s·nh·d are the slots.
        int nan = kBuf.ToFloatArray().Concat(vBuf.ToFloatArray()).Count(float.IsNaN);
        Assert.Equal(2 * ((b + 1) * cap - b * s) * nh * d, nan);
    }

    /// <summary>The fused members check what their kernels index with and name the tensor that does not fit.</summary>
    [Fact]
    public void The_fused_backend_members_name_the_tensor_that_does_not_fit()
    {
        using var scope = TensorScope.Begin();
        var be = Tensor.Zeros(new Shape(1)).Backend;
        var q = Tensor.Zeros(new Shape(1, 2, 2, 8));
        var pos = Tensor.FromArray(new int[4], new Shape(1, 2, 2));
        var e = Assert.Throws<ArgumentException>(() => be.SplitQkvRotary(Tensor.Zeros(new Shape(1, 2, 2, 16)), null, pos, q, Tensor.Zeros(q.Shape), Tensor.Zeros(q.Shape)));
        Assert.Contains("qkv", e.Message);
        e = Assert.Throws<ArgumentException>(() => be.SplitQkvRotary(Tensor.Zeros(new Shape(1, 2, 2, 24)), Tensor.Zeros(new Shape(47)), pos, q, Tensor.Zeros(q.Shape), Tensor.Zeros(q.Shape)));
        Assert.Contains("bias", e.Message);
        var a = Tensor.Zeros(new Shape(3, 5));
        e = Assert.Throws<ArgumentException>(() => be.AddScaledRowBias(a, 2f, Tensor.Zeros(new Shape(3, 5)), Tensor.Zeros(new Shape(4)), Tensor.Zeros(new Shape(3, 5))));
        Assert.Contains("AddScaledRowBias", e.Message);
        e = Assert.Throws<ArgumentException>(() => be.AddRowVector(a, Tensor.Zeros(new Shape(5)), 1f, Tensor.Zeros(new Shape(5, 3), DType.BF16)));
        Assert.Contains("output", e.Message);
        e = Assert.Throws<ArgumentException>(() => be.LayerNormForward(a, Tensor.Full(new Shape(5), 1f), Tensor.Zeros(new Shape(5)), 1e-5f, Tensor.Zeros(a.Shape),
            Tensor.Zeros(new Shape(3)), Tensor.Zeros(new Shape(3)), Tensor.Zeros(new Shape(3, 4), DType.BF16)));
        Assert.Contains("copy", e.Message);
    }

    /// <summary>AddScaledWithBias on <paramref name="device"/> (CudaBackendTests runs it on the GPU).</summary>
    internal static void CheckResidual(Device device, int rows, int f, DType dtype = DType.F32)
    {
        var rng = new Random(rows * 31 + f);
        float[] R(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)OpInput.Gauss(rng))];
        using var scope = TensorScope.Begin();
        using var noGrad = GradMode.NoGrad();
        var a = Ops.Cast(Tensor.FromArray(R(rows * f), new Shape(rows, f), device: device), dtype); // the residual, an activation
        var bHost = R(rows * f);
        var b = Tensor.FromArray(bHost, new Shape(rows, f), device: device);                          // a linear's fp32 product
        var bias = Tensor.FromArray(R(f), new Shape(f), device: device);
        const float alpha = 7.483315f; // ChatGLM-6B's √(2·28)
        var fused = Ops.AddScaledWithBias(a, alpha, b, bias);
        Assert.Equal(dtype, fused.DType);
        // Unfused: the bias added in place, the sum rounded to the activation dtype (Linear's output), the scaled add.
        var biased = Tensor.FromArray(bHost, new Shape(rows, f), device: device);
        biased.Backend.AddRowVector(biased, bias, 1f);
        var o = Ops.Cast(biased, dtype);
        var unfused = Ops.AddScaled(a, alpha, o, 1f);
        // And AddRowVector's rounded output (Linear's one-pass bias and rounding) is that same o.
        var oneOutput = Tensor.Empty(b.Shape, dtype, device);
        b.Backend.AddRowVector(b, bias, 1f, oneOutput);
        Assert.Equal(bHost, b.ToFloatArray()); // the input left as it was
        AssertBits(o.ToFloatArray(), oneOutput.ToFloatArray(), $"{device} {dtype}: AddRowVector's rounded output");
        AssertBits(unfused.ToFloatArray(), fused.ToFloatArray(), $"{device} {dtype}: AddScaledWithBias");
    }

    private static void AssertBits(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}[{i}]: {actual[i]:R}, unfused {expected[i]:R}");
    }
}
