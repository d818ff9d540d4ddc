using System.Text;
using DoctorGlm.Engine.Generation;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>Chat prompt, response post-processing (spec §7) and streaming deltas.</summary>
public sealed class ChatTests
{
    [Theory]
    [InlineData("  你好,世界!  ", "你好，世界！")]
    [InlineData("Hello, world! a:b; c?", "Hello, world! a:b; c?")]
    [InlineData("[[训练时间]]我学习", "2023年我学习")]
    [InlineData("答案:是", "答案：是")]
    [InlineData("a:中", "a：中")]
    [InlineData("中?a", "中？a")]
    [InlineData("中,,中", "中，，中")]
    [InlineData("中!\n", "中！")]
    [InlineData("1;2", "1;2")]
    [InlineData("㐀,x", "㐀,x")] // U+3400 is outside U+4E00–U+9FFF
    public void Process_response_follows_process_response(string raw, string expected) =>
        Assert.Equal(expected, ResponseText.Process(raw));

    [Fact]
    public void ChatBatch_answers_each_question_as_Chat_answers_it_alone()
    {
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        var chat = new GlmChat(model, tok);
        var ct = TestContext.Current.CancellationToken;
        var o = GenerationOptions.Greedy with { RepetitionPenalty = 5f, MaxNewTokens = 10 };
        string[] queries = ["头疼怎么办", "还要注意什么？", "失眠"];
        IReadOnlyList<ChatTurn>?[] histories = [null, [new ChatTurn("头疼", "多休息。")], []];
        var batch = chat.ChatBatch(queries, histories, o, ct);
        for (int i = 0; i < queries.Length; i++)
            Assert.Equal(chat.Chat(queries[i], histories[i], o, ct).Response, batch[i]);
        Assert.Contains("2 histories for 3 questions", Assert.Throws<ArgumentException>(() => chat.ChatBatch(queries, histories[..2], o, ct)).Message);
    }

    [Fact]
    public void Prompt_is_the_raw_query_without_history_and_rounds_with_it()
    {
        Assert.Equal("你好", ResponseText.BuildPrompt("你好", null));
        Assert.Equal("你好", ResponseText.BuildPrompt("你好", []));
        var history = new[] { new ChatTurn("你好", "你好👋！"), new ChatTurn("头疼", "多休息") };
        Assert.Equal("[Round 0]\n问：你好\n答：你好👋！\n[Round 1]\n问：头疼\n答：多休息\n[Round 2]\n问：怎么办\n答：",
            ResponseText.BuildPrompt("怎么办", history));
    }

    [Theory]
    [InlineData("abc def", 7)]
    [InlineData("abc,", 3)]
    [InlineData("abc\uFFFD\uFFFD", 3)]
    [InlineData("abc <", 3)]
    [InlineData("中[[训练", 1)]
    [InlineData("abc<|blank_1", 3)]
    [InlineData("abc<|blank_12|", 3)]
    [InlineData("abc<|blank_12|>", 15)]
    [InlineData("x \uD83D", 1)]
    [InlineData("中，", 2)]
    public void Stable_length_holds_back_what_later_tokens_can_change(string text, int expected) =>
        Assert.Equal(expected, ResponseStreamer.StableLength(text));

    [Fact]
    public void Streamed_deltas_never_split_a_character_and_concatenate_to_the_response()
    {
        var tok = ChatModelFixture.Tokenizer();
        const string text = "你好👋！我是 ChatGLM,很高兴见到你。😀\n第二行:  结束?";
        var ids = tok.Encode(text);
        Assert.Contains(ids, id => tok.IdToToken(id).StartsWith("<0x", StringComparison.Ordinal)); // byte fallback is exercised
        var streamer = new ResponseStreamer(tok);
        var deltas = new List<string>();
        int withheld = 0;
        foreach (int id in ids)
        {
            string d = streamer.Push(id);
            if (d.Length == 0) { withheld++; continue; }
            deltas.Add(d);
            Assert.DoesNotContain('\uFFFD', d);
            Assert.False(char.IsLowSurrogate(d[0]), $"delta \"{d}\" starts inside a surrogate pair");
            Assert.False(char.IsHighSurrogate(d[^1]), $"delta \"{d}\" ends inside a surrogate pair");
        }
        deltas.Add(streamer.Finish());
        string expected = ResponseText.Process(tok.Decode(ids));
        Assert.Equal(expected, string.Concat(deltas));
        Assert.Contains("👋", expected);
        Assert.Contains("😀", expected);
        Assert.True(withheld >= 3, "partial byte pieces must be withheld");
    }

    [Fact]
    public async Task Stream_chat_deltas_equal_chat_response_and_sessions_keep_history()
    {
        var ct = TestContext.Current.CancellationToken;
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        var chat = new GlmChat(model, tok);
        var opts = new GenerationOptions { MaxLength = 48, Seed = 7, Temperature = 1.5f, TopP = 0.95f };
        var (response, history) = chat.Chat("头疼怎么办", null, opts, ct);
        var sb = new StringBuilder();
        await foreach (var d in chat.StreamChat("头疼怎么办", null, opts, ct)) sb.Append(d);
        Assert.Equal(response, sb.ToString());
        Assert.Equal(response, string.Concat(chat.StreamChatSync("头疼怎么办", null, opts, ct)));
        Assert.Equal([new ChatTurn("头疼怎么办", response)], history);
        Assert.NotEmpty(response);

        var session = new ChatSession(chat, opts);
        Assert.Equal(response, session.Ask("头疼怎么办", ct));
        session.Options = opts with { MaxLength = 400 }; // the second prompt holds the whole first turn
        var second = new StringBuilder();
        await foreach (var d in session.AskStreaming("还有呢", ct)) second.Append(d);
        Assert.Equal(2, session.History.Count);
        Assert.Equal(second.ToString(), session.History[1].Response);
        // The second turn re-encodes the whole conversation (§4.2): same as a stateless call with that history.
        Assert.Equal(session.History[1].Response, chat.Chat("还有呢", [session.History[0]], session.Options, ct).Response);
        session.Clear();
        Assert.Empty(session.History);
    }
}
