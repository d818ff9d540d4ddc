using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.Evaluation;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Training;

/// <summary>
/// BLEU-4 and ROUGE-1/2/L of generated answers, as ChatGLM's P-Tuning evaluation computes them
/// (<see cref="GenerationMetrics"/>): each evaluation prompt is answered (greedy unless options say otherwise,
/// at most <paramref name="maxNewTokens"/> new tokens, chat prompt format of §7) and scored against its reference.
/// </summary>
/// <param name="tokenizer">The model's tokenizer.</param>
/// <param name="examples">Evaluation dialogues (prompt and reference answer).</param>
/// <param name="maxNewTokens">Answer length cap (the reference script's max_target_length).</param>
/// <param name="options">Decoding options; default greedy. MaxLength is set per prompt.</param>
/// <param name="metrics">Scorer; default jieba segmentation.</param>
/// <param name="batchSize">Most prompts decoded together (<see cref="GlmBatchScheduler"/>: a waiting prompt takes a row as
/// soon as an answer ends; the reference's per_device_eval_batch_size). Each answer is the one the prompt gets alone,
/// so this changes the speed, not the scores (up to the rounding of the batched products).</param>
public sealed class GenerationEvaluator(ChatGlmTokenizer tokenizer, IReadOnlyList<DialogueExample> examples, int maxNewTokens,
    GenerationOptions? options = null, GenerationMetrics? metrics = null, int batchSize = 8) : IGenerationEvaluator
{
    private readonly GenerationMetrics _metrics = metrics ?? new GenerationMetrics();
    private readonly GenerationOptions _options = (options ?? GenerationOptions.Greedy) with { MaxNewTokens = maxNewTokens, MaxLength = int.MaxValue };
    private readonly int _batchSize = batchSize >= 1 ? batchSize : throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be at least 1");

    private static List<ChatTurn> History(DialogueExample ex) => [.. ex.History.Select(h => new ChatTurn(h.Question, h.Answer))];

    /// <summary>The last evaluation's answers, in example order (for showing a few to the user).</summary>
    public IReadOnlyList<string> LastAnswers { get; private set; } = [];

    /// <inheritdoc />
    public IReadOnlyDictionary<string, double> Evaluate(GlmModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        bool training = model.Training;
        model.Training = false;
        try
        {
            var chat = new GlmChat(model, tokenizer);
            List<string> answers;
            if (_batchSize == 1)
                answers = [.. examples.Select(ex => chat.Chat(ex.Prompt, History(ex), _options).Response)];
            else
            {
                // Continuous batching: every prompt is queued at once and takes a row as soon as one frees up.
                var scheduler = new GlmBatchScheduler(chat, _batchSize);
                try
                {
                    var pending = examples.Select(ex => scheduler.ChatAsync(ex.Prompt, History(ex), _options)).ToArray();
                    answers = [.. pending.Select(t => t.GetAwaiter().GetResult())];
                }
                finally { scheduler.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            }
            LastAnswers = answers;
            var s = _metrics.Average(answers.Zip(examples, (a, e) => (a, e.Response)));
            return new Dictionary<string, double>
            {
                ["bleu-4"] = s.Bleu4, ["rouge-1"] = s.Rouge1, ["rouge-2"] = s.Rouge2, ["rouge-l"] = s.RougeL,
            };
        }
        finally { model.Training = training; }
    }
}
