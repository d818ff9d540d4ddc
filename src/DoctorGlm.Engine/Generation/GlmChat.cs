using System.Runtime.CompilerServices;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Generation;

/// <summary>
/// ChatGLM's <c>chat</c> / <c>stream_chat</c> (spec §7): prompt from the history (raw query when there is none),
/// tokenized with [gMASK] &lt;sop&gt; appended, generated from a fresh KV cache (§4.2: turns cannot share one),
/// decoded and post-processed with <see cref="ResponseText.Process"/>.
/// </summary>
public sealed class GlmChat
{
    /// <summary>Chat over <paramref name="model"/> and <paramref name="tokenizer"/> (neither is owned).</summary>
    public GlmChat(GlmModel model, ChatGlmTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(model);
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (tokenizer.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"GlmChat: the tokenizer has {tokenizer.VocabSize} ids but the model only {model.Config.VocabSize} embedding rows");
        if (tokenizer.GMaskId != model.Config.GMaskTokenId || tokenizer.SopId != model.Config.BosTokenId)
            throw new ArgumentException($"GlmChat: the tokenizer's [gMASK]/<sop> ids ({tokenizer.GMaskId}/{tokenizer.SopId}) differ from the model config's ({model.Config.GMaskTokenId}/{model.Config.BosTokenId}); is the vocabulary offset (num_image_tokens) right?");
        Generator = new GlmGenerator(model);
    }

    /// <summary>The tokenizer.</summary>
    public ChatGlmTokenizer Tokenizer { get; }

    /// <summary>The token generator.</summary>
    public GlmGenerator Generator { get; }

    /// <summary>Prompt ids of a turn: <see cref="ResponseText.BuildPrompt"/> encoded with [gMASK] &lt;sop&gt;.</summary>
    public int[] EncodePrompt(string query, IReadOnlyList<ChatTurn>? history = null) =>
        Tokenizer.Encode(ResponseText.BuildPrompt(query, history), addSpecialTokens: true);

    /// <summary>
    /// One answer: returns the post-processed response and the history extended with (query, response), as HF's
    /// <c>chat</c> returns <c>(response, history)</c>. <paramref name="history"/> itself is not modified.
    /// </summary>
    public (string Response, IReadOnlyList<ChatTurn> History) Chat(string query, IReadOnlyList<ChatTurn>? history = null,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var ids = Generator.Generate(EncodePrompt(query, history), options, cancellationToken);
        string response = ResponseText.Process(Tokenizer.Decode(ids));
        return (response, [.. history ?? [], new ChatTurn(query, response)]);
    }

    /// <summary>
    /// Answers several independent questions in one batch (<see cref="GlmGenerator.GenerateBatch"/>: the prompts are
    /// left-padded and decoded together, each weight read once per step for all of them). Each answer is what
    /// <see cref="Chat"/> returns for that question alone with the same options and seed (up to the rounding of the
    /// batched products). <paramref name="histories"/>, when given, holds one history per question (null entries
    /// for none).
    /// </summary>
    public string[] ChatBatch(IReadOnlyList<string> queries, IReadOnlyList<IReadOnlyList<ChatTurn>?>? histories = null,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queries);
        if (histories is not null && histories.Count != queries.Count)
            throw new ArgumentException($"GlmChat.ChatBatch: {histories.Count} histories for {queries.Count} questions", nameof(histories));
        var prompts = new int[queries.Count][];
        for (int i = 0; i < prompts.Length; i++)
            prompts[i] = EncodePrompt(queries[i] ?? throw new ArgumentNullException(nameof(queries), $"GlmChat.ChatBatch: question {i} is null"), histories?[i]);
        var ids = Generator.GenerateBatch(prompts, options, cancellationToken);
        return [.. ids.Select(a => ResponseText.Process(Tokenizer.Decode(a)))];
    }

    /// <summary>
    /// Streams one answer as text deltas (see <see cref="ResponseStreamer"/>): they never split a character and
    /// concatenate to the response <see cref="Chat"/> would return with the same options and seed. Each step runs
    /// on the thread pool so the caller's thread stays free; history is left to the caller
    /// (<see cref="ChatSession"/> appends the turn when the stream completes).
    /// </summary>
    public async IAsyncEnumerable<string> StreamChat(string query, IReadOnlyList<ChatTurn>? history = null,
        GenerationOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var streamer = new ResponseStreamer(Tokenizer);
        using var tokens = Generator.Stream(EncodePrompt(query, history), options, cancellationToken).GetEnumerator();
        // Every step is self-contained (its tensor scope and no-grad region close before MoveNext returns), so
        // consecutive steps may run on different pool threads.
        while (await Task.Run(tokens.MoveNext, cancellationToken).ConfigureAwait(false))
        {
            string delta = streamer.Push(tokens.Current);
            if (delta.Length > 0) yield return delta;
        }
        string rest = streamer.Finish();
        if (rest.Length > 0) yield return rest;
    }

    /// <summary>Synchronous <see cref="StreamChat"/>: the deltas on the calling thread.</summary>
    public IEnumerable<string> StreamChatSync(string query, IReadOnlyList<ChatTurn>? history = null,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var prompt = EncodePrompt(query, history);
        return Run();

        IEnumerable<string> Run()
        {
            var streamer = new ResponseStreamer(Tokenizer);
            foreach (int id in Generator.Stream(prompt, options, cancellationToken))
            {
                string delta = streamer.Push(id);
                if (delta.Length > 0) yield return delta;
            }
            string rest = streamer.Finish();
            if (rest.Length > 0) yield return rest;
        }
    }
}

/// <summary>A conversation: <see cref="GlmChat"/> plus its history.</summary>
public sealed class ChatSession
{
    private readonly List<ChatTurn> _history = [];

    /// <summary>A session over <paramref name="chat"/> with <paramref name="options"/> for every turn.</summary>
    public ChatSession(GlmChat chat, GenerationOptions? options = null)
    {
        Chat = chat ?? throw new ArgumentNullException(nameof(chat));
        Options = options ?? new GenerationOptions();
    }

    /// <summary>The chat engine.</summary>
    public GlmChat Chat { get; }

    /// <summary>Decoding settings for the next turns.</summary>
    public GenerationOptions Options { get; set; }

    /// <summary>The finished turns, oldest first.</summary>
    public IReadOnlyList<ChatTurn> History => _history;

    /// <summary>Forgets the history.</summary>
    public void Clear() => _history.Clear();

    /// <summary>Answers <paramref name="query"/> and records the turn.</summary>
    public string Ask(string query, CancellationToken cancellationToken = default)
    {
        var (response, _) = Chat.Chat(query, _history, Options, cancellationToken);
        _history.Add(new ChatTurn(query, response));
        return response;
    }

    /// <summary>Streams the answer to <paramref name="query"/>; the turn is recorded once the stream completes.</summary>
    public async IAsyncEnumerable<string> AskStreaming(string query, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var response = new System.Text.StringBuilder();
        await foreach (var delta in Chat.StreamChat(query, _history.ToArray(), Options, cancellationToken).ConfigureAwait(false))
        {
            response.Append(delta);
            yield return delta;
        }
        _history.Add(new ChatTurn(query, response.ToString()));
    }
}
