using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// The whole model on the GPU against the CPU reference: the 2-layer fixture GLM, forward and backward with a
/// (non-zero) LoRA adapter, base weights in fp32 and in bf16. Tolerances as the CUDA issue states them: fp32
/// loss and LoRA gradients within 1e-4 relative; bf16 (the GPU then also rounds activations to bf16 at each
/// GEMM) loss within 2e-2 and gradients within 5e-2 relative. Skipped without a GPU.
/// </summary>
[Collection(GpuCollection.Name)]
public class CudaGlmModelTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("F32", 1e-4, 1e-4)]
    [InlineData("BF16", 2e-2, 5e-2)]
    [InlineData("F16", 2e-2, 5e-2)]
    public void Lora_forward_and_backward_match_the_cpu(string type, double lossTol, double gradTol)
    {
        var gpu = CudaTestSetup.Require();
        var dt = Enum.Parse<DType>(type);
        var cpu = LoraStepRunner.Run(Device.Cpu, dt);
        var cuda = LoraStepRunner.Run(gpu.Device, dt);
        double lossErr = cpu.LossError(cuda);
        double logitsErr = ModelFixture.RelErr(cpu.Logits, cuda.Logits);
        double gradErr = cpu.LoraGradError(cuda);
        output.WriteLine($"{type}: loss {cpu.Loss:F6} (CPU) vs {cuda.Loss:F6} (CUDA), relative {lossErr:E2}; logits {logitsErr:E2}; LoRA gradients {gradErr:E2}");
        Assert.True(lossErr <= lossTol, $"{type} loss relative error {lossErr:E3} > {lossTol:E1}");
        Assert.True(gradErr <= gradTol, $"{type} LoRA gradient relative error {gradErr:E3} > {gradTol:E1}");
        Assert.Equal(cpu.BaseBytes, cuda.BaseBytes);
    }

    /// <summary>
    /// Freeing the block intermediates no backward reads (GlmModel.ReleaseIntermediates) lowers the step's device peak
    /// and changes no number: logits, loss and LoRA gradients bit for bit.
    /// </summary>
    [Fact]
    public void Releasing_block_intermediates_lowers_the_peak_and_changes_nothing()
    {
        var gpu = CudaTestSetup.Require();
        var released = LoraStepRunner.Run(gpu.Device, DType.BF16, activation: DType.BF16);
        var kept = LoraStepRunner.Run(gpu.Device, DType.BF16, activation: DType.BF16, keepIntermediates: true);
        output.WriteLine($"step peak {released.PeakStepBytes} B with the intermediates released, {kept.PeakStepBytes} B kept");
        Assert.True(released.PeakStepBytes < kept.PeakStepBytes, $"released {released.PeakStepBytes} B, kept {kept.PeakStepBytes} B");
        kept.AssertSameStep(released);
    }

    /// <summary>
    /// 16-bit activations on the GPU against the same setting on the CPU (bf16 weights; issue #4's bf16 bounds: loss
    /// 2e-2, LoRA gradients 5e-2 relative), with and without checkpointing; and the step must need less device memory
    /// than with fp32 activations (what 16-bit activations are for).
    /// </summary>
    [Theory]
    [InlineData("BF16", false)]
    [InlineData("BF16", true)]
    [InlineData("F16", false)]
    public void Sixteen_bit_activations_match_the_cpu_and_use_less_memory(string type, bool checkpointing)
    {
        var gpu = CudaTestSetup.Require();
        var act = Enum.Parse<DType>(type);
        var cpu = LoraStepRunner.Run(Device.Cpu, DType.BF16, activation: act, checkpointing: checkpointing);
        var cuda = LoraStepRunner.Run(gpu.Device, DType.BF16, activation: act, checkpointing: checkpointing);
        var cudaF32 = LoraStepRunner.Run(gpu.Device, DType.BF16, checkpointing: checkpointing);
        double lossErr = cpu.LossError(cuda);
        double gradErr = cpu.LoraGradError(cuda);
        output.WriteLine($"{type} activations, checkpointing {checkpointing}: loss {cpu.Loss:F6} (CPU) vs {cuda.Loss:F6} (CUDA), relative {lossErr:E2}; " +
                         $"LoRA gradients {gradErr:E2}; step peak {cuda.PeakStepBytes} B vs {cudaF32.PeakStepBytes} B with fp32 activations");
        Assert.True(lossErr <= 2e-2, $"{type} activations: loss relative error {lossErr:E3} > 2e-2");
        Assert.True(gradErr <= 5e-2, $"{type} activations: LoRA gradient relative error {gradErr:E3} > 5e-2");
        Assert.True(cuda.PeakStepBytes < cudaF32.PeakStepBytes,
            $"{type} activations used {cuda.PeakStepBytes} B at peak, fp32 activations {cudaF32.PeakStepBytes} B");
    }
}
