using System.Text.Json;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Serving;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Serving;

/// <summary>
/// The OpenAI chat-completions protocol over the batch scheduler, on the chat fixture model (a random ChatGLM sized to a
/// ChatGLM-like tokenizer): requests map to the §7 chat the library does (same answer as <see cref="GlmChat.Chat"/>
/// with the mapped options), streamed deltas add up to the whole answer, and bad requests get 400 naming the field.
/// </summary>
public sealed class OpenAiChatCompletionsTests : IAsyncDisposable
{
    private readonly GlmModel _model;
    private readonly GlmChat _chat;
    private readonly GlmBatchScheduler _scheduler;
    private readonly OpenAiChatCompletions _api;

    public OpenAiChatCompletionsTests()
    {
        var tok = ChatModelFixture.Tokenizer();
        _model = ChatModelFixture.Model(tok);
        _chat = new GlmChat(_model, tok);
        _scheduler = new GlmBatchScheduler(_chat, maxBatch: 4);
        _api = new OpenAiChatCompletions(_scheduler, "doctorglm-test");
    }

    public async ValueTask DisposeAsync()
    {
        await _scheduler.DisposeAsync();
        _model.Dispose();
    }

    private const string Conversation = """
        {"model": "anything", "messages": [
            {"role": "user", "content": "头疼"},
            {"role": "assistant", "content": "多休息。"},
            {"role": "user", "content": [{"type": "text", "text": "还要注意"}, {"type": "text", "text": "什么？"}]}],
         "temperature": 0, "max_tokens": 12, "repetition_penalty": 5, "user": "ignored"}
        """;

    [Fact]
    public async Task A_request_gets_the_answer_GlmChat_gives_with_the_mapped_options()
    {
        var ct = TestContext.Current.CancellationToken;
        var request = _api.Parse(Conversation);
        Assert.Equal("还要注意什么？", request.Query);
        Assert.Equal([new ChatTurn("头疼", "多休息。")], request.History);
        Assert.False(request.Options.DoSample);
        Assert.Equal(12, request.Options.MaxNewTokens);
        Assert.Equal(5f, request.Options.RepetitionPenalty);
        Assert.False(request.Stream);

        var (expected, _) = _chat.Chat("还要注意什么？", [new ChatTurn("头疼", "多休息。")], new GenerationOptions { DoSample = false, MaxNewTokens = 12, RepetitionPenalty = 5 }, ct);
        using var doc = JsonDocument.Parse(await _api.CompleteAsync(request, ct));
        var root = doc.RootElement;
        Assert.Equal("chat.completion", root.GetProperty("object").GetString());
        Assert.Equal("doctorglm-test", root.GetProperty("model").GetString());
        Assert.StartsWith("chatcmpl-", root.GetProperty("id").GetString());
        var choice = root.GetProperty("choices")[0];
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal(expected, choice.GetProperty("message").GetProperty("content").GetString());
        var usage = root.GetProperty("usage");
        int promptTokens = _chat.EncodePrompt("还要注意什么？", [new ChatTurn("头疼", "多休息。")]).Length;
        int completion = usage.GetProperty("completion_tokens").GetInt32();
        Assert.Equal(promptTokens, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(promptTokens + completion, usage.GetProperty("total_tokens").GetInt32());
        Assert.InRange(completion, 1, 12);
        Assert.Equal(completion == 12 ? "length" : "stop", choice.GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Streamed_chunks_add_up_to_the_whole_answer_and_end_with_done()
    {
        var ct = TestContext.Current.CancellationToken;
        var whole = _api.Parse(Conversation);
        using var full = JsonDocument.Parse(await _api.CompleteAsync(whole, ct));
        string expected = full.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        string finish = full.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString()!;

        var request = _api.Parse(Conversation.Replace("\"temperature\": 0", "\"stream\": true, \"temperature\": 0"));
        Assert.True(request.Stream);
        var payloads = new List<string>();
        await foreach (var p in _api.StreamAsync(request, ct)) payloads.Add(p);
        Assert.Equal("[DONE]", payloads[^1]);
        var chunks = payloads[..^1].Select(p => JsonDocument.Parse(p)).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.RootElement.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.RootElement.GetProperty("id").GetString()).Distinct());
        Assert.Equal("assistant", chunks[0].RootElement.GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        string text = string.Concat(chunks.Select(c => c.RootElement.GetProperty("choices")[0].GetProperty("delta"))
            .Where(d => d.TryGetProperty("content", out _)).Select(d => d.GetProperty("content").GetString()));
        Assert.Equal(expected, text);
        Assert.Equal(finish, chunks[^1].RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
        Assert.All(chunks, c => Assert.False(c.RootElement.TryGetProperty("usage", out _)));
        foreach (var c in chunks) c.Dispose();

        // stream_options.include_usage: "usage": null on every chunk, then one chunk with no choices and the counts.
        var withUsage = _api.Parse(Conversation.Replace("\"temperature\": 0", "\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"temperature\": 0"));
        Assert.True(withUsage.IncludeUsage);
        var events = new List<string>();
        await foreach (var p in _api.StreamAsync(withUsage, ct)) events.Add(p);
        Assert.Equal("[DONE]", events[^1]);
        using var last = JsonDocument.Parse(events[^2]);
        Assert.Equal(0, last.RootElement.GetProperty("choices").GetArrayLength());
        Assert.Equal(full.RootElement.GetProperty("usage").GetRawText(), last.RootElement.GetProperty("usage").GetRawText());
        foreach (var e in events[..^2])
        {
            using var d = JsonDocument.Parse(e);
            Assert.Equal(JsonValueKind.Null, d.RootElement.GetProperty("usage").ValueKind);
        }
    }

    [Fact]
    public void Sampling_options_map_with_chatglm_defaults_where_the_request_is_silent()
    {
        var o = _api.Parse("""{"messages": [{"role": "user", "content": "你好"}]}""").Options;
        Assert.True(o.DoSample);
        Assert.Equal(0.95f, o.Temperature);
        Assert.Equal(0.7f, o.TopP);
        Assert.Equal(50, o.TopK);
        Assert.Null(o.MaxNewTokens);
        var p = _api.Parse("""{"messages": [{"role": "user", "content": "你好"}], "temperature": 0.5, "top_p": 0.9, "top_k": 0, "seed": 7, "max_completion_tokens": 30, "n": 1, "stop": null}""").Options;
        Assert.Equal((0.5f, 0.9f, 0, 7UL, 30), (p.Temperature, p.TopP, p.TopK, p.Seed!.Value, p.MaxNewTokens!.Value));
    }

    [Theory]
    [InlineData("not json", null, "not JSON")]
    [InlineData("""{"messages": []}""", "messages", "non-empty")]
    [InlineData("""{"messages": [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "你好"}]}""", "messages[0]", "no system prompt")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}""", "messages[1]", "alternate")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}""", "messages", "last message")]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}""", "messages[0]", "only text parts")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "temperature": 3}""", "temperature", "[0, 2]")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "top_p": 0}""", "top_p", "greater than 0")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "max_tokens": 0}""", "max_tokens", "integer")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "n": 2}""", "n", "n must be 1")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "stop": ["\n"]}""", "stop", "not supported")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "presence_penalty": 0.5}""", "presence_penalty", "repetition_penalty")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "stream": "yes"}""", "stream", "true or false")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}], "stream_options": {"include_usage": true}}""", "stream_options", "only allowed with stream")]
    public void Bad_requests_get_400_naming_the_field(string body, string? param, string fragment)
    {
        var e = Assert.Throws<ChatCompletionException>(() => _api.Parse(body));
        Assert.Equal(400, e.Status);
        Assert.Equal(param, e.Param);
        Assert.Contains(fragment, e.Message);
        using var doc = JsonDocument.Parse(e.ToJson());
        Assert.Equal(e.Message, doc.RootElement.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task The_model_list_names_the_served_model()
    {
        using var doc = JsonDocument.Parse(_api.Models());
        Assert.Equal("doctorglm-test", doc.RootElement.GetProperty("data")[0].GetProperty("id").GetString());
        await using var tokensOnly = new GlmBatchScheduler(_chat.Generator);
        Assert.Contains("no tokenizer", Assert.Throws<ArgumentException>(() => new OpenAiChatCompletions(tokensOnly, "x")).Message);
    }

    [Fact]
    public void With_an_api_key_only_requests_that_carry_it_are_admitted()
    {
        _api.Authorize(null); // no key set: everyone
        Assert.False(_api.RequiresApiKey);

        var keyed = new OpenAiChatCompletions(_scheduler, "doctorglm-test", apiKey: "sk-ward-7");
        Assert.True(keyed.RequiresApiKey);
        keyed.Authorize("Bearer sk-ward-7");
        keyed.Authorize("bearer  sk-ward-7 "); // the scheme is case-insensitive; spaces around the key are not part of it
        foreach (var header in new string?[] { null, "", "sk-ward-7", "Basic sk-ward-7", "Bearer sk-ward-8", "Bearer sk-ward-77", "Bearer " })
        {
            var e = Assert.Throws<ChatCompletionException>(() => keyed.Authorize(header));
            Assert.Equal(401, e.Status);
            using var doc = JsonDocument.Parse(e.ToJson());
            var error = doc.RootElement.GetProperty("error");
            Assert.Equal("invalid_api_key", error.GetProperty("code").GetString());
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
            Assert.DoesNotContain("sk-ward-7", e.Message); // the key never reaches a response
        }
        foreach (var bad in new[] { "", "two words", "tab\tkey" })
            Assert.Throws<ArgumentException>(() => new OpenAiChatCompletions(_scheduler, "doctorglm-test", apiKey: bad));
    }

    [Fact]
    public async Task A_busy_model_is_a_503_before_any_chunk()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var scheduler = new GlmBatchScheduler(_chat, maxBatch: 1, maxWaiting: 1);
        var api = new OpenAiChatCompletions(scheduler, "doctorglm-test");
        var request = api.Parse(Conversation);
        // One request holds the one place (the loop waits at its step), one waits: the next is refused.
        using var gate = new ManualResetEventSlim(false);
        using var entered = new SemaphoreSlim(0);
        scheduler.BeforeStep = _ => { entered.Release(); gate.Wait(ct); };
        Task<string> held, blocked;
        try
        {
            held = api.CompleteAsync(request, ct);
            await entered.WaitAsync(ct);
            blocked = api.CompleteAsync(request, ct);
            Assert.Equal(1, scheduler.Waiting);

            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
            bounded.CancelAfter(TimeSpan.FromSeconds(30)); // were it queued instead, it would wait for the gate: fail, not hang
            var e = await Assert.ThrowsAsync<ChatCompletionException>(() => api.CompleteAsync(request, bounded.Token));
            Assert.Equal(503, e.Status);
            using (var doc = JsonDocument.Parse(e.ToJson()))
            {
                Assert.Equal("server_error", doc.RootElement.GetProperty("error").GetProperty("type").GetString());
                Assert.Equal("overloaded", doc.RootElement.GetProperty("error").GetProperty("code").GetString());
            }
            await using (var chunks = api.StreamAsync(request with { Stream = true }, bounded.Token).GetAsyncEnumerator(bounded.Token))
                Assert.Equal(503, (await Assert.ThrowsAsync<ChatCompletionException>(async () => await chunks.MoveNextAsync())).Status);
        }
        finally { gate.Set(); } // a failed assertion must not leave the loop waiting (the disposal would hang)
        using var first = JsonDocument.Parse(await held);
        using var second = JsonDocument.Parse(await blocked);
        Assert.Equal(first.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(),
            second.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }
}
