namespace DoctorGlm.Engine.Data;

/// <summary>A training sample: ids and labels padded to <c>maxSourceLength + maxTargetLength</c>.</summary>
/// <param name="InputIds">a + [gMASK, &lt;sop&gt;] + b + [&lt;eop&gt;], right-padded with the pad id.</param>
/// <param name="Labels">−100 for positions 0..ctx−1, then the ids from &lt;sop&gt; on (so &lt;sop&gt;, the answer and &lt;eop&gt; are supervised), −100 for padding.</param>
/// <param name="ContextLength">ctx: the index of &lt;sop&gt; (= prompt ids + 1).</param>
/// <param name="MaskPosition">The index of [gMASK] (= ctx − 1).</param>
/// <param name="Length">Unpadded length (up to and including &lt;eop&gt;).</param>
public sealed record ChatGlmTrainSample(int[] InputIds, int[] Labels, int ContextLength, int MaskPosition, int Length);

/// <summary>A generation (eval/predict) sample: the unpadded prompt ids ending in [gMASK, &lt;sop&gt;] and the reference text.</summary>
/// <param name="InputIds">Truncated prompt ids + [gMASK, &lt;sop&gt;]; batching left-pads them (spec §4.3).</param>
/// <param name="Reference">The expected response, for BLEU/ROUGE.</param>
public sealed record ChatGlmEvalSample(int[] InputIds, string Reference);

/// <summary>
/// Turns <see cref="DialogueExample"/>s into token ids exactly as ChatGLM-6B's official <c>ptuning/main.py</c> does
/// (spec §5.1): <c>preprocess_function_train</c> for <see cref="BuildTrain"/>, <c>preprocess_function_eval</c> for
/// <see cref="BuildEval"/>. Pure: the tokenizer is a delegate that encodes text <b>without</b> special tokens, and the
/// special ids are plain ints, so the slim (130001…) and old (150001…) vocabularies work alike.
/// </summary>
public sealed class ChatGlmSampleBuilder
{
    /// <summary>Label value the loss ignores.</summary>
    public const int IgnoreIndex = -100;

    private readonly Func<string, int[]> _encode;

    /// <summary>Creates a builder.</summary>
    /// <param name="encode">Text → ids without special tokens (<c>tokenizer.encode(text, add_special_tokens=False)</c>).</param>
    /// <param name="gMaskId">[gMASK] id (slim 130001).</param>
    /// <param name="sopId">&lt;sop&gt; (bos) id (slim 130004).</param>
    /// <param name="eopId">&lt;eop&gt; (eos) id (slim 130005).</param>
    /// <param name="padId">pad id (3).</param>
    /// <param name="maxSourceLength">max_source_length (≥ 2: one prompt id plus gMASK/sop for eval).</param>
    /// <param name="maxTargetLength">max_target_length (≥ 3, so at least one answer id survives the script's truncation to max_target_length − 2).</param>
    /// <param name="promptStyle">How history is rendered; the official training uses <see cref="ChatGlmPromptStyle.Raw"/> without a history column and <see cref="ChatGlmPromptStyle.RoundsAlways"/> with one.</param>
    /// <param name="sourcePrefix">The official <c>--source_prefix</c>, prepended to every prompt.</param>
    /// <param name="ignorePadTokenForLoss">The script's <c>ignore_pad_token_for_loss</c> (default true): every label equal to the pad id becomes −100.</param>
    public ChatGlmSampleBuilder(Func<string, int[]> encode, int gMaskId, int sopId, int eopId, int padId,
        int maxSourceLength, int maxTargetLength, ChatGlmPromptStyle promptStyle = ChatGlmPromptStyle.Raw,
        string sourcePrefix = "", bool ignorePadTokenForLoss = true)
    {
        ArgumentNullException.ThrowIfNull(encode);
        ArgumentNullException.ThrowIfNull(sourcePrefix);
        // The script truncates the prompt to max_source_length−1 and the answer to max_target_length−2; below these
        // minimums the slices would be empty or (in Python) silently wrap around with negative bounds.
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSourceLength, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTargetLength, 3);
        _encode = encode;
        GMaskId = gMaskId; SopId = sopId; EopId = eopId; PadId = padId;
        MaxSourceLength = maxSourceLength; MaxTargetLength = maxTargetLength;
        PromptStyle = promptStyle; SourcePrefix = sourcePrefix; IgnorePadTokenForLoss = ignorePadTokenForLoss;
    }

    /// <summary>[gMASK] id.</summary>
    public int GMaskId { get; }
    /// <summary>&lt;sop&gt; id.</summary>
    public int SopId { get; }
    /// <summary>&lt;eop&gt; id.</summary>
    public int EopId { get; }
    /// <summary>Pad id.</summary>
    public int PadId { get; }
    /// <summary>max_source_length.</summary>
    public int MaxSourceLength { get; }
    /// <summary>max_target_length.</summary>
    public int MaxTargetLength { get; }
    /// <summary>Training sequence length: max_source_length + max_target_length.</summary>
    public int MaxSequenceLength => MaxSourceLength + MaxTargetLength;
    /// <summary>History rendering for training prompts.</summary>
    public ChatGlmPromptStyle PromptStyle { get; }
    /// <summary>Text prepended to every prompt.</summary>
    public string SourcePrefix { get; }
    /// <summary>Whether labels equal to the pad id become −100.</summary>
    public bool IgnorePadTokenForLoss { get; }

    /// <summary>
    /// <c>preprocess_function_train</c>: a = ids(prefix + prompt)[:max_source_length−1], b = ids(response)[:max_target_length−2],
    /// input = a + [gMASK, sop] + b + [eop], labels = [−100]·ctx + input[ctx:], both right-padded to
    /// <see cref="MaxSequenceLength"/> (labels with pad, then pad → −100 when <see cref="IgnorePadTokenForLoss"/>).
    /// </summary>
    public ChatGlmTrainSample BuildTrain(DialogueExample example)
    {
        ArgumentNullException.ThrowIfNull(example);
        RequireText(example);
        var prompt = ChatGlmPrompt.Build(example.Prompt, example.History, PromptStyle, SourcePrefix);
        var a = Truncate(Encode(prompt), MaxSourceLength - 1);
        var b = Truncate(Encode(example.Response), MaxTargetLength - 2);

        int len = a.Length + 2 + b.Length + 1;
        var ids = new int[MaxSequenceLength];
        a.CopyTo(ids, 0);
        ids[a.Length] = GMaskId;
        ids[a.Length + 1] = SopId;
        b.CopyTo(ids, a.Length + 2);
        ids[len - 1] = EopId;
        ids.AsSpan(len).Fill(PadId);

        // The script takes ctx = input_ids.index(bos); with an encoder that never emits <sop> (encode without special
        // tokens) that is always len(a) + 1, which is what is used here.
        int ctx = a.Length + 1;
        var labels = new int[MaxSequenceLength];
        labels.AsSpan(0, ctx).Fill(IgnoreIndex);
        ids.AsSpan(ctx, len - ctx).CopyTo(labels.AsSpan(ctx));
        labels.AsSpan(len).Fill(PadId);
        if (IgnorePadTokenForLoss)
            for (int i = 0; i < labels.Length; i++)
                if (labels[i] == PadId) labels[i] = IgnoreIndex;
        return new ChatGlmTrainSample(ids, labels, ctx, ctx - 1, len);
    }

    /// <summary>
    /// <c>preprocess_function_eval</c>: the prompt (rounds only when there is history, unless the style is
    /// <see cref="ChatGlmPromptStyle.Raw"/>) encoded, truncated to max_source_length−2 (the tokenizer's truncation
    /// reserves room for the two special tokens), then [gMASK, sop]. No padding.
    /// </summary>
    public ChatGlmEvalSample BuildEval(DialogueExample example)
    {
        ArgumentNullException.ThrowIfNull(example);
        RequireText(example);
        var style = PromptStyle == ChatGlmPromptStyle.Raw ? ChatGlmPromptStyle.Raw : ChatGlmPromptStyle.RoundsIfHistory;
        var prompt = ChatGlmPrompt.Build(example.Prompt, example.History, style, SourcePrefix);
        var a = Truncate(Encode(prompt), MaxSourceLength - 2);
        var ids = new int[a.Length + 2];
        a.CopyTo(ids, 0);
        ids[^2] = GMaskId;
        ids[^1] = SopId;
        return new ChatGlmEvalSample(ids, example.Response);
    }

    private int[] Encode(string text) =>
        _encode(text) ?? throw new InvalidOperationException("the encode delegate returned null");

    private static int[] Truncate(int[] ids, int max) => ids.Length <= max ? ids : ids[..max];

    private static void RequireText(DialogueExample e)
    {
        // The script silently drops records with an empty prompt or response; DatasetReader already reports them, so
        // one reaching here is a caller bug.
        if (string.IsNullOrEmpty(e.Prompt) || string.IsNullOrEmpty(e.Response))
            throw new ArgumentException($"{e.Source}: empty prompt or response", "example");
    }
}
