using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Core;

/// <summary>
/// <see cref="Ops.AddScaledWithBias"/> is a fusion, not a new formula: on each backend it must give the two passes
/// it replaces — a linear's bias added to its output (<see cref="Backends.IBackend.AddRowVector"/>), then the scaled
/// residual (<see cref="Ops.AddScaled"/>, β = 1) — bit for bit, so that a cached decoding step's logits do not move.
/// The op harness (elementwise.addscaled_with_bias) checks it and its gradients against a double reference.
/// </summary>
public sealed class FusedResidualTests
{
    [Theory]
    [InlineData(1, 37)]
    [InlineData(5, 4096)]
    public void Gives_the_unfused_passes_bit_for_bit_on_the_cpu(int rows, int f) => Check(Device.Cpu, rows, f);

    /// <summary>The same on a device (CudaBackendTests runs it on the GPU).</summary>
    internal static void Check(Device device, int rows, int f)
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
