using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Tests.Models;
using DoctorGlm.Engine.Training;

namespace DoctorGlm.Engine.Tests.Training;

public class GenerationEvaluatorTests
{
    [Fact]
    public void Scores_generated_answers_against_references_like_the_ptuning_evaluation()
    {
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        var options = GenerationOptions.Greedy with { RepetitionPenalty = 5f };
        string[] prompts = ["头疼怎么办", "高血压可以吃鱼头吗"];
        // References equal to what the model answers score 100; unrelated references score less.
        var chat = new GlmChat(model, tok);
        var own = prompts.Select(q => chat.Chat(q, null, options with { MaxLength = chat.EncodePrompt(q).Length + 12 }).Response).ToList();
        Assert.All(own, a => Assert.False(string.IsNullOrWhiteSpace(a)));
        var same = prompts.Select((q, i) => new DialogueExample(q, own[i], [], $"test:{i}")).ToList();
        // One at a time, and decoded together through the batch scheduler: the same answers.
        foreach (int batch in new[] { 1, 8 })
        {
            var eval = new GenerationEvaluator(tok, same, maxNewTokens: 12, options, batchSize: batch);
            var s = eval.Evaluate(model);
            Assert.Equal(own, eval.LastAnswers);
            foreach (var key in new[] { "bleu-4", "rouge-1", "rouge-2", "rouge-l" }) Assert.Equal(100.0, s[key], 6);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationEvaluator(tok, same, 12, options, batchSize: 0));

        var other = prompts.Select((q, i) => new DialogueExample(q, "您好，建议您到医院检查，注意休息。", [], $"test:{i}")).ToList();
        var s2 = new GenerationEvaluator(tok, other, 12, options).Evaluate(model);
        Assert.True(s2["rouge-l"] < 100 && s2["bleu-4"] < 100);
        Assert.False(model.Training);
    }
}
