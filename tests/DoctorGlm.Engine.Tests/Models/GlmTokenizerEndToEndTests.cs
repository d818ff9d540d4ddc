using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// Text → ChatGlmTokenizer → the §5.1 training sequence → GlmInputs → model loss, on the ChatGLM-like fixture
/// tokenizer (the real ice_text.model is not available offline) and a small random model sized to its vocabulary.
/// A wiring test: ids, labels, positions and the loss scale, not parity with PyTorch.
/// </summary>
public sealed class GlmTokenizerEndToEndTests(ITestOutputHelper output)
{
    private static ChatGlmTokenizer Tokenizer() => ChatGlmTokenizer.Load(Path.Combine(Fixture.Dir("tokenizer"), "chatglm_like_unigram.model"));

    /// <summary>A tiny model config whose vocabulary and special ids are the tokenizer's.</summary>
    private static GlmConfig ConfigFor(ChatGlmTokenizer tok) =>
        new GlmConfig(tok.VocabSize, 64, 2, 4, 256, MaxSequenceLength: 512,
            BosTokenId: tok.SopId, EosTokenId: tok.EopId, MaskTokenId: tok.MaskId, GMaskTokenId: tok.GMaskId, PadTokenId: tok.PadId)
        .Validated("test");

    [Fact]
    public void A_chinese_question_and_answer_become_the_training_sequence_and_a_finite_loss()
    {
        var tok = Tokenizer();
        var config = ConfigFor(tok);
        // §5.1 with a history column and empty history: the Round format, full-width colons, "\n" → <n>.
        const string prompt = "[Round 0]\n问：头痛发热，咳嗽三天了，怎么办？\n答：";
        const string answer = "可能是上呼吸道感染，建议多喝水，注意休息，必要时就医。";
        var a = tok.Encode(prompt);
        var b = tok.Encode(answer);
        Assert.Contains(tok.NewlineId, a);
        Assert.DoesNotContain(tok.GMaskId, a);
        Assert.DoesNotContain(tok.SopId, b);
        const int maxSource = 48, maxTarget = 48;
        Assert.True(a.Length < maxSource - 1 && b.Length < maxTarget - 2, "the example must not be truncated");

        var (ids, labels) = GlmInputs.TrainingSequence(a, b, config, maxSource, maxTarget);
        // The tokenizer's pair layout (a [gMASK] <sop> b <eop>), right-padded with <pad>.
        var pair = tok.BuildInputs(a, b);
        Assert.Equal(maxSource + maxTarget, ids.Length);
        Assert.Equal(pair, ids[..pair.Length]);
        Assert.All(ids[pair.Length..], id => Assert.Equal(tok.PadId, id));
        int ctx = a.Length + 1;
        Assert.All(labels[..ctx], l => Assert.Equal(-100, l));
        Assert.Equal(tok.SopId, labels[ctx]);
        Assert.Equal(b, labels[(ctx + 1)..(ctx + 1 + b.Length)]);
        Assert.Equal(tok.EopId, labels[ctx + 1 + b.Length]);
        Assert.All(labels[(ctx + 2 + b.Length)..], l => Assert.Equal(-100, l));
        // The supervised part decodes back to the answer (after the model's NFKC normalisation, as spm_decode gives it).
        Assert.Equal(tok.Decode(b), tok.Decode(labels[(ctx + 1)..].Where(l => l >= 0).ToArray()));
        Assert.Contains("上呼吸道感染", tok.Decode(b));

        using var scope = TensorScope.Begin();
        using var inputs = GlmInputs.Build([ids], config, [labels]);
        Assert.Equal(ctx, inputs.Ctx[0]);
        Assert.Equal(a.Length, inputs.MaskPos[0]);
        using var model = GlmModel.CreateRandom(config, new RandomGenerator(7));
        var loss = model.Loss(inputs);
        float value = loss.Item();
        output.WriteLine($"V = {config.VocabSize}, {a.Length} prompt + {b.Length} answer tokens, loss {value} (ln V = {Math.Log(config.VocabSize):F4})");
        Assert.True(float.IsFinite(value));
        // Random N(0, 0.02) weights give nearly uniform logits: the loss is close to ln V.
        Assert.True(Math.Abs(value - Math.Log(config.VocabSize)) < 0.5, $"loss {value} is far from ln V");
        loss.Backward();
        var grad = model.Parameter(GlmModel.EmbeddingKey).Grad!.ToFloatArray();
        Assert.All(grad, g => Assert.True(float.IsFinite(g)));
        int h = config.HiddenSize, answerToken = b[0];
        Assert.Contains(grad[(answerToken * h)..((answerToken + 1) * h)], g => g != 0f);
    }
}
