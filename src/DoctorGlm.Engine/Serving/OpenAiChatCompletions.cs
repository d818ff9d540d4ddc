using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using DoctorGlm.Engine.Generation;

namespace DoctorGlm.Engine.Serving;

/// <summary>
/// A bad chat-completions request: the HTTP status to answer with, the field at fault, and OpenAI's error body.
/// </summary>
public sealed class ChatCompletionException(int status, string message, string? param = null, string? code = null) : Exception(message)
{
    /// <summary>HTTP status (400 for a bad request, 401 for a missing or wrong API key, 503 when the model is busy).</summary>
    public int Status { get; } = status;

    /// <summary>The request field at fault, or null.</summary>
    public string? Param { get; } = param;

    /// <summary>OpenAI's error code (<c>invalid_api_key</c>), or null.</summary>
    public string? Code { get; } = code;

    /// <summary>OpenAI's error body: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
    public string ToJson() => OpenAiChatCompletions.Json(w =>
    {
        w.WriteStartObject("error");
        w.WriteString("message", Message);
        w.WriteString("type", Status >= 500 ? "server_error" : "invalid_request_error");
        if (Param is null) w.WriteNull("param"); else w.WriteString("param", Param);
        if (Code is null) w.WriteNull("code"); else w.WriteString("code", Code);
        w.WriteEndObject();
    });
}

/// <summary>One parsed chat-completions request: the turn to answer, the conversation before it, decoding options.</summary>
/// <param name="Query">The last user message.</param>
/// <param name="History">The earlier (user, assistant) pairs, oldest first (spec §7's [Round i] prompt).</param>
/// <param name="Options">Decoding options derived from the request.</param>
/// <param name="Stream">Whether the answer goes out as server-sent events.</param>
/// <param name="IncludeUsage">With <paramref name="Stream"/>: <c>stream_options.include_usage</c>, a last chunk with the token counts.</param>
public sealed record ChatCompletionRequest(string Query, IReadOnlyList<ChatTurn> History, GenerationOptions Options, bool Stream, bool IncludeUsage = false);

/// <summary>
/// The OpenAI chat-completions protocol (<c>POST /v1/chat/completions</c>, <c>GET /v1/models</c>) over a
/// <see cref="GlmBatchScheduler"/>, without any HTTP dependency: a host (samples/Serve, or any ASP.NET app) passes
/// the request body to <see cref="Parse"/> and writes back what <see cref="CompleteAsync"/> or
/// <see cref="StreamAsync"/> return, so the existing OpenAI clients and tools talk to the fine-tuned doctor.
/// </summary>
/// <remarks>
/// Mapping: messages alternate user / assistant and end with a user message (ChatGLM-6B has no system prompt, so a
/// system message is refused rather than silently dropped); <c>temperature</c> 0 is greedy decoding, otherwise
/// sampling with ChatGLM's defaults where the request is silent (temperature 0.95, top_p 0.7, top_k 50);
/// <c>max_tokens</c> (or <c>max_completion_tokens</c>) caps the new tokens; <c>seed</c> makes sampling reproducible;
/// <c>stream_options.include_usage</c> adds the token counts to a stream;
/// the extensions <c>top_k</c> and <c>repetition_penalty</c> reach the §7 pipeline. <c>n</c> other than 1,
/// <c>stop</c> sequences and non-zero frequency/presence penalties are refused with 400 naming the field; other
/// fields (<c>model</c>, <c>user</c>, …) are ignored.
/// </remarks>
public sealed class OpenAiChatCompletions
{
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private readonly GlmChat _chat;

    /// <summary>
    /// Serves <paramref name="scheduler"/> (made from a <see cref="GlmChat"/>) under the name <paramref name="modelName"/>.
    /// With <paramref name="apiKey"/>, <see cref="Authorize"/> admits only requests that carry it, as OpenAI's API
    /// does: <c>Authorization: Bearer KEY</c>.
    /// </summary>
    public OpenAiChatCompletions(GlmBatchScheduler scheduler, string modelName, string? apiKey = null)
    {
        Scheduler = scheduler ?? throw new ArgumentNullException(nameof(scheduler));
        _chat = scheduler.Chat ?? throw new ArgumentException("OpenAiChatCompletions: the scheduler has no tokenizer; construct it from a GlmChat", nameof(scheduler));
        ModelName = string.IsNullOrWhiteSpace(modelName) ? throw new ArgumentException("OpenAiChatCompletions: the model name is empty", nameof(modelName)) : modelName;
        if (apiKey is not null && (apiKey.Length == 0 || apiKey.Any(char.IsWhiteSpace)))
            throw new ArgumentException("OpenAiChatCompletions: the API key is empty or holds white space", nameof(apiKey));
        _apiKey = apiKey is null ? null : Encoding.UTF8.GetBytes(apiKey);
    }

    private readonly byte[]? _apiKey;

    /// <summary>Whether requests must carry an API key (<see cref="Authorize"/>).</summary>
    public bool RequiresApiKey => _apiKey is not null;

    /// <summary>
    /// Checks a request's <c>Authorization</c> header (null when absent) against the API key, if one was set: throws
    /// <see cref="ChatCompletionException"/> 401 with OpenAI's code <c>invalid_api_key</c> unless it is
    /// <c>Bearer KEY</c>. The comparison takes the same time wherever the given key differs. Without a key, admits all.
    /// </summary>
    public void Authorize(string? authorizationHeader)
    {
        if (_apiKey is null) return;
        const string scheme = "Bearer ";
        if (authorizationHeader is null || !authorizationHeader.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
            throw new ChatCompletionException(401, "no API key was given: send the header 'Authorization: Bearer KEY'", code: "invalid_api_key");
        var given = Encoding.UTF8.GetBytes(authorizationHeader[scheme.Length..].Trim());
        if (!System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, _apiKey))
            throw new ChatCompletionException(401, "the API key is not valid", code: "invalid_api_key");
    }

    /// <summary>The scheduler every request goes through.</summary>
    public GlmBatchScheduler Scheduler { get; }

    /// <summary>The model id reported in responses and by <see cref="Models"/>.</summary>
    public string ModelName { get; }

    /// <summary>Parses a request body; throws <see cref="ChatCompletionException"/> (400) naming the field at fault.</summary>
    public ChatCompletionRequest Parse(string body)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body ?? ""); }
        catch (JsonException e) { throw new ChatCompletionException(400, $"the request body is not JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ChatCompletionException(400, "the request body must be a JSON object");
            var (query, history) = Messages(root);
            var o = new GenerationOptions();
            double temperature = Number(root, "temperature", 0, 2) ?? 0.95;
            o = temperature == 0 ? o with { DoSample = false } : o with { Temperature = (float)temperature };
            if (Number(root, "top_p", 0, 1) is double topP)
            {
                if (topP == 0) throw new ChatCompletionException(400, "top_p must be greater than 0", "top_p");
                o = o with { TopP = (float)topP };
            }
            if (Integer(root, "top_k", 0, int.MaxValue) is long topK) o = o with { TopK = (int)topK };
            if (Number(root, "repetition_penalty", 0, 100) is double penalty)
            {
                if (penalty == 0) throw new ChatCompletionException(400, "repetition_penalty must be greater than 0 (1 disables it)", "repetition_penalty");
                o = o with { RepetitionPenalty = (float)penalty };
            }
            long? maxTokens = Integer(root, "max_completion_tokens", 1, int.MaxValue) ?? Integer(root, "max_tokens", 1, int.MaxValue);
            if (maxTokens is long m) o = o with { MaxNewTokens = (int)m };
            if (Integer(root, "seed", long.MinValue, long.MaxValue) is long seed) o = o with { Seed = unchecked((ulong)seed) };
            if (root.TryGetProperty("n", out var n) && n.ValueKind != JsonValueKind.Null && !(n.ValueKind == JsonValueKind.Number && n.TryGetInt64(out long count) && count == 1))
                throw new ChatCompletionException(400, "n must be 1 (one answer per request)", "n");
            if (root.TryGetProperty("stop", out var stop) && stop.ValueKind != JsonValueKind.Null)
                throw new ChatCompletionException(400, "stop sequences are not supported (ChatGLM stops at its end token)", "stop");
            foreach (var name in new[] { "frequency_penalty", "presence_penalty" })
                if ((Number(root, name, -2, 2) ?? 0) != 0)
                    throw new ChatCompletionException(400, $"{name} is not supported; use repetition_penalty (ChatGLM's, 1 = off)", name);
            bool stream = root.TryGetProperty("stream", out var s) && s.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False or JsonValueKind.Null => false,
                _ => throw new ChatCompletionException(400, "stream must be true or false", "stream"),
            };
            bool includeUsage = false;
            if (root.TryGetProperty("stream_options", out var so) && so.ValueKind != JsonValueKind.Null)
            {
                if (so.ValueKind != JsonValueKind.Object) throw new ChatCompletionException(400, "stream_options must be an object", "stream_options");
                if (!stream) throw new ChatCompletionException(400, "stream_options is only allowed with stream: true", "stream_options");
                includeUsage = so.TryGetProperty("include_usage", out var iu) && iu.ValueKind switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False or JsonValueKind.Null => false,
                    _ => throw new ChatCompletionException(400, "stream_options.include_usage must be true or false", "stream_options"),
                };
            }
            var request = new ChatCompletionRequest(query, history, o, stream, includeUsage);
            int promptTokens = _chat.EncodePrompt(query, history).Length;
            if (promptTokens >= o.MaxLength)
                throw new ChatCompletionException(400, $"the conversation is {promptTokens} tokens; this model takes fewer than {o.MaxLength}", "messages");
            return request;
        }
    }

    /// <summary>Answers a request in one piece: OpenAI's <c>chat.completion</c> object, with usage in tokens. A busy
    /// scheduler (<see cref="GlmBatchScheduler.MaxWaiting"/>) throws <see cref="ChatCompletionException"/> 503.</summary>
    public async Task<string> CompleteAsync(ChatCompletionRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var prompt = _chat.EncodePrompt(request.Query, request.History);
        var ids = new List<int>();
        await foreach (int id in Tokens(prompt, request, cancellationToken).ConfigureAwait(false)) ids.Add(id);
        string content = ResponseText.Process(_chat.Tokenizer.Decode([.. ids]));
        string id0 = NewId();
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        return Json(w =>
        {
            WriteChoice(w, id0, "chat.completion", created, c =>
            {
                c.WriteStartObject("message");
                c.WriteString("role", "assistant");
                c.WriteString("content", content);
                c.WriteEndObject();
                c.WriteString("finish_reason", FinishReason(request.Options, prompt.Length, ids.Count));
            });
            WriteUsage(w, prompt.Length, ids.Count);
        });
    }

    /// <summary>
    /// Answers a request as it decodes: the payloads of the server-sent events, each to be written as
    /// <c>data: PAYLOAD\n\n</c> — <c>chat.completion.chunk</c> objects (the role first, then text deltas that never
    /// split a character, then the finish reason; with <see cref="ChatCompletionRequest.IncludeUsage"/> every chunk has
    /// <c>"usage": null</c> and one more, with no choices, carries the token counts) and finally <c>[DONE]</c>. A busy
    /// scheduler throws <see cref="ChatCompletionException"/> 503 from the first <c>MoveNextAsync</c>, before any chunk.
    /// </summary>
    public async IAsyncEnumerable<string> StreamAsync(ChatCompletionRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var prompt = _chat.EncodePrompt(request.Query, request.History);
        string id = NewId();
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string Chunk(string? role, string? content, string? finish) => Json(w =>
        {
            WriteChoice(w, id, "chat.completion.chunk", created, c =>
            {
                c.WriteStartObject("delta");
                if (role is not null) c.WriteString("role", role);
                if (content is not null) c.WriteString("content", content);
                c.WriteEndObject();
                if (finish is null) c.WriteNull("finish_reason"); else c.WriteString("finish_reason", finish);
            });
            if (request.IncludeUsage) w.WriteNull("usage");
        });
        var tokens = Tokens(prompt, request, cancellationToken); // before the first chunk: a busy model fails the request, not the stream
        yield return Chunk("assistant", "", null);
        var streamer = new ResponseStreamer(_chat.Tokenizer);
        int count = 0;
        await foreach (int token in tokens.ConfigureAwait(false))
        {
            count++;
            string delta = streamer.Push(token);
            if (delta.Length > 0) yield return Chunk(null, delta, null);
        }
        string rest = streamer.Finish();
        if (rest.Length > 0) yield return Chunk(null, rest, null);
        yield return Chunk(null, null, FinishReason(request.Options, prompt.Length, count));
        if (request.IncludeUsage)
            yield return Json(w =>
            {
                w.WriteString("id", id);
                w.WriteString("object", "chat.completion.chunk");
                w.WriteNumber("created", created);
                w.WriteString("model", ModelName);
                w.WriteStartArray("choices");
                w.WriteEndArray();
                WriteUsage(w, prompt.Length, count);
            });
        yield return "[DONE]";
    }

    /// <summary>The request's queued tokens; a busy scheduler is OpenAI's 503 (<c>server_error</c>, code <c>overloaded</c>).</summary>
    private IAsyncEnumerable<int> Tokens(int[] prompt, ChatCompletionRequest request, CancellationToken cancellationToken)
    {
        try { return Scheduler.StreamTokens(prompt, request.Options, cancellationToken); }
        catch (GlmSchedulerBusyException e) { throw new ChatCompletionException(503, e.Message, code: "overloaded"); }
    }

    /// <summary>OpenAI's model list: this one model.</summary>
    public string Models() => Json(w =>
    {
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        w.WriteString("id", ModelName);
        w.WriteString("object", "model");
        w.WriteNumber("created", 0);
        w.WriteString("owned_by", "doctorglm");
        w.WriteEndObject();
        w.WriteEndArray();
    });

    /// <summary>The fields every answer object shares (id, object, created, model) and its one choice, whose own fields <paramref name="choice"/> writes.</summary>
    private void WriteChoice(Utf8JsonWriter w, string id, string kind, long created, Action<Utf8JsonWriter> choice)
    {
        w.WriteString("id", id);
        w.WriteString("object", kind);
        w.WriteNumber("created", created);
        w.WriteString("model", ModelName);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        choice(w);
        w.WriteEndObject();
        w.WriteEndArray();
    }

    private static void WriteUsage(Utf8JsonWriter w, int promptTokens, int completionTokens)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", promptTokens);
        w.WriteNumber("completion_tokens", completionTokens);
        w.WriteNumber("total_tokens", promptTokens + completionTokens);
        w.WriteEndObject();
    }

    /// <summary>"length" when the answer ran into max_tokens or the model's MaxLength, else "stop" (its end token).</summary>
    private static string FinishReason(GenerationOptions o, int promptTokens, int completionTokens) =>
        completionTokens >= (o.MaxNewTokens ?? int.MaxValue) || promptTokens + completionTokens >= o.MaxLength ? "length" : "stop";

    private static string NewId() => "chatcmpl-" + Guid.NewGuid().ToString("N");

    /// <summary>One JSON object written by <paramref name="body"/> (its properties), with CJK kept readable.</summary>
    internal static string Json(Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, WriterOptions))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>The conversation: user / assistant messages alternating, ending with the user's turn to answer.</summary>
    private static (string Query, IReadOnlyList<ChatTurn> History) Messages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw new ChatCompletionException(400, "messages must be a non-empty array", "messages");
        var texts = new List<string>();
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            string at = $"messages[{i}]";
            if (m.ValueKind != JsonValueKind.Object) throw new ChatCompletionException(400, $"{at} must be an object with role and content", at);
            string role = m.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : throw new ChatCompletionException(400, $"{at}.role is missing", at);
            string content = Content(m, at);
            if (role == "system")
                throw new ChatCompletionException(400, $"{at}: ChatGLM-6B has no system prompt; put the instructions into the user message", at);
            string expected = i % 2 == 0 ? "user" : "assistant";
            if (role != expected)
                throw new ChatCompletionException(400, $"{at}.role is \"{role}\"; messages must alternate user and assistant, starting with user", at);
            texts.Add(content);
            i++;
        }
        if (texts.Count % 2 == 0) throw new ChatCompletionException(400, "the last message must be the user's", "messages");
        var history = new List<ChatTurn>();
        for (int t = 0; t + 1 < texts.Count; t += 2) history.Add(new ChatTurn(texts[t], texts[t + 1]));
        return (texts[^1], history);
    }

    /// <summary>A message's text: a string, or OpenAI's array of parts of which only "text" parts are accepted.</summary>
    private static string Content(JsonElement m, string at)
    {
        if (!m.TryGetProperty("content", out var c)) throw new ChatCompletionException(400, $"{at}.content is missing", at);
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind == JsonValueKind.Array)
        {
            var sb = new StringBuilder();
            foreach (var part in c.EnumerateArray())
            {
                if (!(part.TryGetProperty("type", out var type) && type.ValueEquals("text") && part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String))
                    throw new ChatCompletionException(400, $"{at}.content: only text parts are supported", at);
                sb.Append(text.GetString());
            }
            return sb.ToString();
        }
        throw new ChatCompletionException(400, $"{at}.content must be a string", at);
    }

    private static double? Number(JsonElement root, string name, double min, double max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !(d >= min && d <= max))
            throw new ChatCompletionException(400, $"{name} must be a number in [{min}, {max}]", name);
        return d;
    }

    private static long? Integer(JsonElement root, string name, long min, long max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long l) || l < min || l > max)
            throw new ChatCompletionException(400, $"{name} must be an integer in [{min}, {max}]", name);
        return l;
    }
}
