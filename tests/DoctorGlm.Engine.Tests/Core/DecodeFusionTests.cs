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
    [InlineData(1, 37)]
    [InlineData(5, 4096)]
    public void AddScaledWithBias_gives_the_unfused_passes_bit_for_bit_on_the_cpu(int rows, int f) => CheckResidual(Device.Cpu, rows, f);

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

    /// <summary>AddScaledWithBias on <paramref name="device"/> (CudaBackendTests runs it on the GPU).</summary>
    internal static void CheckResidual(Device device, int rows, int f)
    {
        var rng = new Random(rows * 31 + f);
        float[] R(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)OpInput.Gauss(rng))];
        using var scope = TensorScope.Begin();
        using var noGrad = GradMode.NoGrad();
        var a = Tensor.FromArray(R(rows * f), new Shape(rows, f), device: device);
        var b = Tensor.FromArray(R(rows * f), new Shape(rows, f), device: device);
        var bias = Tensor.FromArray(R(f), new Shape(f), device: device);
        const float alpha = 7.483315f; // ChatGLM-6B's √(2·28)
        var fused = Ops.AddScaledWithBias(a, alpha, b, bias).ToFloatArray();
        var biased = Ops.Contiguous(b);
        biased.Backend.AddRowVector(biased, bias, 1f);
        var unfused = Ops.AddScaled(a, alpha, biased, 1f).ToFloatArray();
        for (int i = 0; i < fused.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(fused[i]) == BitConverter.SingleToInt32Bits(unfused[i]),
                $"{device}: y[{i}] fused {fused[i]:R}, unfused {unfused[i]:R}");
    }
}
