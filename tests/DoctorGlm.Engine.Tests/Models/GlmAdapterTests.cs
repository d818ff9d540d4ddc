using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>LoRA merge/unmerge/detach, training-mode dropout and gradient checkpointing on the whole model.</summary>
public sealed class GlmAdapterTests
{
    private static float[] Logits(GlmModel model, GlmInputs batch)
    {
        using var scope = TensorScope.Begin();
        using var _ = GradMode.NoGrad();
        return model.Forward(batch).ToFloatArray();
    }

    /// <summary>An adapter with random non-zero B (a fresh one has B = 0 and changes nothing).</summary>
    private static GlmLora RandomLora(GlmConfig c, LoraSettings s, ulong seed)
    {
        var rng = new RandomGenerator(seed);
        var lora = GlmLora.Create(c, s, rng);
        foreach (var (_, b) in lora.Layers)
        {
            using var r = rng.Normal(b.Shape, 0.2f);
            b.Backend.Copy(r, b);
        }
        return lora;
    }

    public static TheoryData<bool> Forms => new() { false, true };

    [Theory]
    [MemberData(nameof(Forms))]
    public void Merge_gives_the_unmerged_logits_and_unmerge_and_detach_restore_the_base(bool grouped)
    {
        var c = ModelFixture.Config;
        using var model = ModelFixture.LoadModel();
        using var batch = ModelFixture.TrainBatch(c);
        var baseLogits = Logits(model, batch);
        var qkv = model.Parameter("transformer.layers.1.attention.query_key_value.weight");
        var w0 = qkv.ToFloatArray();

        var settings = new LoraSettings(4, 8f, 0.05f, grouped ? [true, false, true] : null);
        model.AttachLora(RandomLora(c, settings, 3));
        var unmerged = Logits(model, batch);
        Assert.True(ModelFixture.MaxAbs(baseLogits, unmerged) > 1e-2, "the adapter should change the logits");

        model.MergeLora();
        Assert.True(model.Lora!.Merged);
        var merged = Logits(model, batch);
        Assert.True(ModelFixture.MaxAbs(unmerged, merged) < 1e-4, $"merged vs unmerged: {ModelFixture.MaxAbs(unmerged, merged):E3}");
        Assert.True(ModelFixture.MaxAbs(w0, qkv.ToFloatArray()) > 1e-3);
        if (grouped)
        {
            // enable_lora [T, F, T]: the middle block of rows [H, 2H) is untouched by the merge (spec §9.1).
            var w = qkv.ToFloatArray();
            int h = c.HiddenSize;
            Assert.Equal(w0.AsSpan(h * h, h * h).ToArray(), w.AsSpan(h * h, h * h).ToArray());
        }
        Assert.Throws<InvalidOperationException>(() => model.MergeLora());

        model.UnmergeLora();
        Assert.True(ModelFixture.MaxAbs(w0, qkv.ToFloatArray()) < 1e-5);
        Assert.True(ModelFixture.MaxAbs(unmerged, Logits(model, batch)) < 1e-4);

        model.MergeLora();
        using var detached = model.DetachLora(); // unmerges first
        Assert.NotNull(detached);
        Assert.False(detached!.Merged);
        Assert.Null(model.Lora);
        Assert.True(ModelFixture.MaxAbs(baseLogits, Logits(model, batch)) < 1e-4);
    }

    [Fact]
    public void A_fresh_adapter_starts_equal_to_the_base_with_kaiming_A_and_zero_B()
    {
        var c = ModelFixture.Config;
        using var model = ModelFixture.LoadModel();
        using var batch = ModelFixture.TrainBatch(c);
        var baseLogits = Logits(model, batch);
        var lora = model.AttachLora(LoraSettings.DoctorGlm, new RandomGenerator(9));
        Assert.Equal(new Shape(16, 64), lora.Layers[0].A.Shape);
        Assert.Equal(new Shape(128, 8), lora.Layers[0].B.Shape);
        float bound = 1f / MathF.Sqrt(64);
        var a = lora.Layers[0].A.ToFloatArray();
        Assert.All(a, v => Assert.InRange(v, -bound, bound));
        Assert.True(a.Max() > 0.8f * bound && a.Min() < -0.8f * bound);
        Assert.All(lora.Layers[1].B.ToFloatArray(), v => Assert.Equal(0f, v));
        Assert.Equal(baseLogits, Logits(model, batch));
        Assert.Equal(2 * c.NumLayers, model.TrainableParameters().Count);
    }

    [Fact]
    public void Training_mode_applies_lora_and_prefix_dropout()
    {
        var c = ModelFixture.Config;
        using var model = ModelFixture.LoadModel();
        using var batch = ModelFixture.TrainBatch(c);
        model.AttachLora(RandomLora(c, new LoraSettings(4, 8f, 0.1f), 4));
        var eval = Logits(model, batch);
        model.Training = true;
        var train = Logits(model, batch);
        Assert.True(ModelFixture.MaxAbs(eval, train) > 1e-3, "LoRA dropout had no effect in training mode");
        model.Training = false;
        Assert.Equal(eval, Logits(model, batch));

        using var noLora = model.DetachLora();
        model.AttachPrefixEncoder(3, projection: false, new RandomGenerator(8));
        eval = Logits(model, batch);
        model.Training = true;
        Assert.True(ModelFixture.MaxAbs(eval, Logits(model, batch)) > 1e-3, "prefix dropout had no effect in training mode");
    }

    /// <summary>Gradients of every trainable tensor after one loss.backward(), from a fixed generator state.</summary>
    private static Dictionary<string, float[]> Gradients(GlmModel model, GlmInputs batch, bool checkpointing)
    {
        model.GradientCheckpointing = checkpointing;
        model.Rng = new RandomGenerator(1234);
        foreach (var (_, p) in model.TrainableParameters()) { p.Grad?.Dispose(); p.Grad = null; }
        using (TensorScope.Begin()) model.Loss(batch).Backward();
        return model.TrainableParameters().ToDictionary(kv => kv.Key, kv => kv.Value.Grad!.ToFloatArray());
    }

    [Fact]
    public void Gradient_checkpointing_gives_the_same_gradients_with_lora_prefix_and_dropout()
    {
        var c = ModelFixture.Config;
        using var model = ModelFixture.LoadModel();
        using var batch = ModelFixture.TrainBatch(c);
        model.AttachLora(RandomLora(c, new LoraSettings(4, 8f, 0.1f, [true, false, true]), 5));
        model.AttachPrefixEncoder(3, projection: true, new RandomGenerator(6));
        model.Training = true;
        var plain = Gradients(model, batch, checkpointing: false);
        var ckpt = Gradients(model, batch, checkpointing: true);
        Assert.Equal(2 * c.NumLayers + 5, plain.Count);
        foreach (var (k, g) in plain)
        {
            Assert.True(g.Any(v => v != 0), $"{k} got no gradient");
            double e = ModelFixture.RelErr(g, ckpt[k]);
            Assert.True(e < 1e-5, $"{k}: checkpointed gradient differs (relative {e:E3})");
        }
    }

    [Fact]
    public void Gradient_checkpointing_gives_the_same_full_finetune_gradients()
    {
        var c = ModelFixture.Config;
        using var model = ModelFixture.LoadModel(trainable: true);
        using var batch = ModelFixture.TrainBatch(c);
        var plain = Gradients(model, batch, checkpointing: false);
        var ckpt = Gradients(model, batch, checkpointing: true);
        foreach (var (k, g) in plain)
            Assert.True(ModelFixture.RelErr(g, ckpt[k]) < 1e-5, $"{k}: checkpointed gradient differs");
    }

    [Fact]
    public void Random_init_is_seeded_trainable_and_runs()
    {
        var c = GlmConfig.Tiny(vocabSize: 50, hiddenSize: 32, numLayers: 3, numHeads: 2);
        using var a = GlmModel.CreateRandom(c, new RandomGenerator(11));
        using var b = GlmModel.CreateRandom(c, new RandomGenerator(11));
        Assert.Equal(c.ParameterCount, a.TrainableParameterCount);
        Assert.Equal(a.Parameter(GlmModel.EmbeddingKey).ToFloatArray(), b.Parameter(GlmModel.EmbeddingKey).ToFloatArray());
        Assert.All(a.Parameter("transformer.layers.2.post_attention_layernorm.weight").ToFloatArray(), v => Assert.Equal(1f, v));
        var (ids, labels) = GlmInputs.TrainingSequence([5, 6, 7], [8, 9], c, 4, 4);
        using var batch = GlmInputs.Build([ids], c, [labels]);
        using var scope = TensorScope.Begin();
        var loss = a.Loss(batch);
        Assert.InRange(loss.Item(), 0.5 * Math.Log(50), 2 * Math.Log(50)); // near-uniform predictions at init
        loss.Backward();
        Assert.NotNull(a.Parameter(GlmModel.EmbeddingKey).Grad);
    }

    [Fact]
    public void The_config_prefix_length_sizes_a_fresh_encoder_and_freezes_the_base()
    {
        var c = GlmConfig.Tiny(vocabSize: 40, hiddenSize: 16, numLayers: 2, numHeads: 2) with { PreSeqLen = 4, PrefixProjection = true };
        using var model = GlmModel.CreateRandom(c, new RandomGenerator(1));
        var p = model.AttachPrefixEncoder(new RandomGenerator(2));
        Assert.Equal(4, p.Length);
        Assert.True(p.Projection);
        Assert.Equal(new Shape(2 * 2 * 16, 16), model.TrainableParameters().Single(kv => kv.Key == "transformer.prefix_encoder.trans.2.weight").Value.Shape);
        Assert.Equal(5, model.TrainableParameters().Count);
        using var plain = GlmModel.CreateRandom(GlmConfig.Tiny(40, 16, 2, 2), new RandomGenerator(1));
        Assert.Throws<InvalidOperationException>(() => plain.AttachPrefixEncoder(new RandomGenerator(2)));
    }
}
