using DoctorGlm.Engine.Models.ChatGlm;
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
    /// What a training step's forward and loss wait for on the GPU: the batch goes up in one copy
    /// (<see cref="GlmInputs.Build"/>: ids, positions, labels, the loss's shifted targets and the mask together, the
    /// ids and targets checked on the host), and the per-row losses come down (their mean is filled in on the device).
    /// Measured on a second step: the first also uploads the backend's rotary table for this head size, once. The loss is the one
    /// <see cref="GlmModel.LanguageModelLoss"/> gives from the labels.
    /// </summary>
    [Fact]
    public void A_training_forward_and_loss_wait_twice()
    {
        var gpu = CudaTestSetup.Require();
        var config = GlmConfig.Tiny(vocabSize: 256, hiddenSize: 128, numLayers: 2, numHeads: 2);
        using var model = GlmModel.CreateRandom(config, new RandomGenerator(8), gpu.Device, std: 0.1f);
        model.AttachLora(new LoraSettings(4, 8f), new RandomGenerator(9));
        int[][] ids = [[5, 6, 7, config.GMaskTokenId, config.BosTokenId, 40, 41, 42, config.EosTokenId], [9, 8, config.GMaskTokenId, config.BosTokenId, 50, 51, config.EosTokenId]];
        int[][] labels = [.. ids.Select(r => r.Select((t, i) => i > Array.IndexOf(r, config.BosTokenId) ? t : -100).ToArray())];
        using (TensorScope.Begin())
        using (var warmUp = GlmInputs.Build(ids, config, labels, gpu.Device))
            model.Loss(warmUp).Backward();
        gpu.Synchronize();
        long before = gpu.HostTransfers;
        float loss;
        using (TensorScope.Begin())
        {
            using var batch = GlmInputs.Build(ids, config, labels, gpu.Device);
            var l = model.Loss(batch);
            long transfers = gpu.HostTransfers - before;
            output.WriteLine($"forward + loss: {transfers} host transfers");
            Assert.Equal(2, transfers);
            loss = l.Item();
            float reference = GlmModel.LanguageModelLoss(model.Forward(batch), batch.Labels!).Item();
            Assert.Equal(reference, loss);
        }
        Assert.True(float.IsFinite(loss) && loss > 0, $"loss {loss}");
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
