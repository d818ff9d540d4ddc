using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// The whole model against the independent PyTorch reference (tools/reference/chatglm_reference.py, float64):
/// logits, the §5.1 loss, full fine-tune gradients, LoRA (PEFT and grouped) and P-Tuning v2 (with and without
/// projection) gradients.
/// </summary>
public sealed class GlmParityTests(ITestOutputHelper output)
{
    private const double LogitsTol = 1e-4, LossTol = 1e-5, GradTol = 1e-3;

    [Fact]
    public void Logits_match_the_reference_for_gmask_mask_and_left_padded_prompts()
    {
        using var f = ModelFixture.Open("logits");
        var config = ModelFixture.Config;
        var flat = f.Load("sequences").ToIntArray();
        var lengths = f.Load("lengths").ToIntArray();
        var seqs = new int[lengths.Length][];
        for (int b = 0, o = 0; b < lengths.Length; o += lengths[b], b++) seqs[b] = flat[o..(o + lengths[b])];

        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel();
        using var inputs = GlmInputs.Build(seqs, config);
        // The builder reproduces the reference's ids, positions and mask (§4.1, §4.3) exactly.
        Assert.Equal(f.Load("ids").ToIntArray(), inputs.Ids.ToIntArray());
        Assert.Equal(f.Load("position_ids").ToIntArray(), inputs.PositionIds.ToIntArray());
        Assert.Equal(f.Floats("mask"), inputs.Mask.ToFloatArray());

        Tensor logits;
        using (Autograd.GradMode.NoGrad()) logits = model.Forward(inputs);
        Assert.Equal(new Shape(3, 9, config.VocabSize), logits.Shape);
        double err = ModelFixture.MaxAbs(f.Floats("logits"), logits.ToFloatArray());
        output.WriteLine($"logits max |err| = {err:E3}");
        Assert.True(err < LogitsTol, $"logits max |err| {err:E3}");
    }

    [Fact]
    public void Loss_and_full_finetune_gradients_match_the_reference()
    {
        using var f = ModelFixture.Open("train");
        var config = ModelFixture.Config;
        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel(trainable: true);
        using var batch = ModelFixture.TrainBatch(config);
        Assert.Equal(f.Load("position_ids").ToIntArray(), batch.PositionIds.ToIntArray());
        Assert.Equal(f.Floats("mask"), batch.Mask.ToFloatArray());
        var loss = model.Loss(batch);
        double lossErr = Math.Abs(loss.Item() - f.Floats("loss")[0]);
        output.WriteLine($"loss {loss.Item()} |err| = {lossErr:E3}");
        Assert.True(lossErr < LossTol, $"loss |err| {lossErr:E3}");
        loss.Backward();
        double worst = 0;
        string worstName = "";
        foreach (var (name, p) in model.BaseParameters())
        {
            Assert.NotNull(p.Grad);
            double e = ModelFixture.RelErr(f.Floats("grad." + name), p.Grad!.ToFloatArray());
            if (e > worst) (worst, worstName) = (e, name);
            Assert.True(e < GradTol, $"grad of {name}: relative error {e:E3}");
        }
        output.WriteLine($"full fine-tune gradients: worst relative error {worst:E3} ({worstName})");
    }

    [Theory]
    [InlineData("lora_peft")]
    [InlineData("lora_grouped")]
    public void Lora_loss_and_gradients_match_the_reference(string name)
    {
        using var f = ModelFixture.Open(name);
        var config = ModelFixture.Config;
        int r = (int)f.Meta("r");
        float alpha = (float)f.Meta("alpha");
        bool[]? enable = f.Metadata.TryGetValue("enable_lora", out var en) ? en.Split(',').Select(s => s == "1").ToArray() : null;
        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel(trainable: true);
        var layers = new List<(Tensor, Tensor)>();
        using (TensorScope.Unscoped())
            for (int i = 0; i < config.NumLayers; i++)
            {
                var a = f.Load($"lora_a.{i}");
                var b = f.Load($"lora_b.{i}");
                a.RequiresGrad = b.RequiresGrad = true;
                layers.Add((a, b));
            }
        var lora = model.AttachLora(new GlmLora(new LoraSettings(r, alpha, 0f, enable), layers));
        // Attaching freezes the base: only A and B train, under PEFT's names.
        var trainable = model.TrainableParameters();
        Assert.Equal(2 * config.NumLayers, trainable.Count);
        Assert.Equal("base_model.model.transformer.layers.0.attention.query_key_value.lora_A.weight", trainable[0].Key);
        Assert.Equal("base_model.model.transformer.layers.1.attention.query_key_value.lora_B.weight", trainable[3].Key);

        using var batch = ModelFixture.TrainBatch(config);
        var loss = model.Loss(batch);
        double lossErr = Math.Abs(loss.Item() - f.Floats("loss")[0]);
        loss.Backward();
        double worst = 0;
        for (int i = 0; i < config.NumLayers; i++)
        {
            double ea = ModelFixture.RelErr(f.Floats($"grad_a.{i}"), lora.Layers[i].A.Grad!.ToFloatArray());
            double eb = ModelFixture.RelErr(f.Floats($"grad_b.{i}"), lora.Layers[i].B.Grad!.ToFloatArray());
            worst = Math.Max(worst, Math.Max(ea, eb));
            Assert.True(ea < GradTol, $"{name} layer {i} dA relative error {ea:E3}");
            Assert.True(eb < GradTol, $"{name} layer {i} dB relative error {eb:E3}");
        }
        output.WriteLine($"{name}: loss |err| {lossErr:E3}, worst gradient relative error {worst:E3}");
        Assert.True(lossErr < LossTol, $"{name} loss |err| {lossErr:E3}");
        foreach (var (_, p) in model.BaseParameters()) Assert.Null(p.Grad);
    }

    /// <summary>
    /// P-Tuning v2 (with and without the projection) against the PyTorch reference: fp32 activations to the fp32
    /// tolerances; bf16 activations (fp32 prefix keys and values beside bf16 queries) within what one bf16 rounding per
    /// op explains (measured: loss 4.9e-5 / 5.2e-4 relative, gradients 3.5e-3 / 5.0e-3 of their largest element,
    /// without / with the projection; bounds 5e-3 and 2e-2).
    /// </summary>
    [Theory]
    [InlineData("ptuning", "F32")]
    [InlineData("ptuning_proj", "F32")]
    [InlineData("ptuning", "BF16")]
    [InlineData("ptuning_proj", "BF16")]
    public void PTuning_loss_and_gradients_match_the_reference(string name, string activation)
    {
        var act = Enum.Parse<DType>(activation);
        using var f = ModelFixture.Open(name);
        var config = ModelFixture.Config;
        using var scope = TensorScope.Begin();
        using var model = ModelFixture.LoadModel();
        var encoder = model.AttachPrefixEncoder(GlmPrefixEncoder.Load(config, f));
        Assert.Equal((int)f.Meta("pre_seq_len"), encoder.Length);
        Assert.Equal(f.Metadata["prefix_projection"] == "true", encoder.Projection);
        model.ActivationDType = act;
        using var batch = ModelFixture.TrainBatch(config);
        model.Training = false; // the reference runs without the prefix dropout
        var loss = model.Loss(batch);
        float want = f.Floats("loss")[0];
        double lossErr = act == DType.F32 ? Math.Abs(loss.Item() - want) : Math.Abs(loss.Item() - want) / Math.Abs(want);
        double lossTol = act == DType.F32 ? LossTol : 5e-3, gradTol = act == DType.F32 ? GradTol : 2e-2;
        loss.Backward();
        double worst = 0;
        foreach (var (key, p) in model.TrainableParameters())
        {
            double e = ModelFixture.RelErr(f.Floats("grad." + key), p.Grad!.ToFloatArray());
            worst = Math.Max(worst, e);
            Assert.True(e < gradTol, $"{name} ({activation} activations) grad of {key}: relative error {e:E3}");
        }
        Assert.Equal(encoder.Projection ? 5 : 1, model.TrainableParameters().Count);
        output.WriteLine($"{name}, {activation} activations: loss error {lossErr:E3}, worst gradient relative error {worst:E3}");
        Assert.True(lossErr < lossTol, $"{name} ({activation} activations) loss error {lossErr:E3}");
        if (act != DType.F32) Assert.True(lossErr > 0, "the loss is the fp32 one: the activations were not rounded");
    }
}
