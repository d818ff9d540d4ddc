using System.Text;
using System.Text.RegularExpressions;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Generation;

/// <summary>ChatGLM's <c>process_response</c> (spec §7) and the chat prompt layout.</summary>
public static partial class ResponseText
{
    /// <summary>The ASCII marks that become full-width next to CJK text, with their replacements.</summary>
    private static readonly (char Ascii, char Full)[] Punctuation = [(',', '，'), ('!', '！'), (':', '：'), (';', '；'), ('?', '？')];

    /// <summary>
    /// Post-processing of a decoded response: strip surrounding whitespace, "[[训练时间]]" → "2023年", then for each
    /// of , ! : ; ? (in that order) the ASCII mark becomes full-width when it directly follows, or directly precedes, a
    /// CJK character in U+4E00–U+9FFF (Python's two left-to-right non-overlapping re.sub passes per mark).
    /// </summary>
    public static string Process(string response)
    {
        ArgumentNullException.ThrowIfNull(response);
        var text = response.Trim().Replace("[[训练时间]]", "2023年", StringComparison.Ordinal);
        foreach (var (ascii, full) in Punctuation)
        {
            if (!text.Contains(ascii, StringComparison.Ordinal)) continue;
            string a = Regex.Escape(ascii.ToString());
            text = Regex.Replace(text, $"([\u4e00-\u9fff]){a}", $"$1{full}", RegexOptions.CultureInvariant);
            text = Regex.Replace(text, $"{a}([\u4e00-\u9fff])", $"{full}$1", RegexOptions.CultureInvariant);
        }
        return text;
    }

    /// <summary>
    /// The chat prompt (spec §7): the query itself without history, otherwise
    /// <c>"[Round i]\n问：{q_i}\n答：{r_i}\n"</c> for every past turn followed by <c>"[Round n]\n问：{query}\n答："</c>.
    /// </summary>
    public static string BuildPrompt(string query, IReadOnlyList<ChatTurn>? history)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (history is null || history.Count == 0) return query;
        var sb = new StringBuilder();
        for (int i = 0; i < history.Count; i++)
            sb.Append("[Round ").Append(i).Append("]\n问：").Append(history[i].Query).Append("\n答：").Append(history[i].Response).Append('\n');
        sb.Append("[Round ").Append(history.Count).Append("]\n问：").Append(query).Append("\n答：");
        return sb.ToString();
    }
}

/// <summary>One finished exchange of a conversation.</summary>
/// <param name="Query">What the user asked.</param>
/// <param name="Response">The post-processed answer.</param>
public sealed record ChatTurn(string Query, string Response);

/// <summary>
/// Turns generated ids into text deltas for streaming (the stream_chat behaviour of spec §7 without its re-sending
/// of the whole text): after each id the whole output is re-decoded and post-processed, and only the part that no
/// later token can change is released. Concatenating every <see cref="Push"/> and the final <see cref="Finish"/>
/// gives exactly <see cref="ResponseText.Process"/> of the full decode.
/// </summary>
/// <remarks>
/// Held back at the end of the current text: U+FFFD from an incomplete UTF-8 byte-fallback run (the next byte
/// pieces complete the character), a lone high surrogate, whitespace (strip would drop it if nothing followed), an
/// ASCII , ! : ; ? (a following CJK character makes it full-width), and any proper prefix of a text that decoding
/// or post-processing rewrites ("[[训练时间]]", "&lt;n&gt;", "&lt;|tab|&gt;", "&lt;|blank_N|&gt;").
/// </remarks>
public sealed class ResponseStreamer
{
    private static readonly string[] Rewritten = ["[[训练时间]]", "<n>", "<|tab|>", "<|blank_"];
    private const int MaxRewrittenPrefix = 16; // "<|blank_80|>" is 12 characters; "[[训练时间]]" 8
    private readonly ChatGlmTokenizer _tokenizer;
    private readonly List<int> _ids = [];
    private readonly StringBuilder _emitted = new();
    private bool _finished;

    /// <summary>A streamer decoding with <paramref name="tokenizer"/>.</summary>
    public ResponseStreamer(ChatGlmTokenizer tokenizer)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
    }

    /// <summary>The text released so far.</summary>
    public string Emitted => _emitted.ToString();

    /// <summary>The generated ids so far.</summary>
    public IReadOnlyList<int> Ids => _ids;

    /// <summary>Adds one generated id; returns the newly stable text (often empty).</summary>
    public string Push(int id)
    {
        if (_finished) throw new InvalidOperationException("ResponseStreamer: already finished");
        _ids.Add(id);
        string full = Current();
        int stable = StableLength(full);
        if (stable <= _emitted.Length || !full.AsSpan(0, _emitted.Length).SequenceEqual(_emitted.ToString())) return "";
        string delta = full.Substring(_emitted.Length, stable - _emitted.Length);
        _emitted.Append(delta);
        return delta;
    }

    /// <summary>Ends the stream: returns what is left of the final response (<see cref="ResponseText.Process"/> of the whole decode).</summary>
    public string Finish()
    {
        if (_finished) return "";
        _finished = true;
        string full = Current();
        string emitted = _emitted.ToString();
        if (!full.StartsWith(emitted, StringComparison.Ordinal))
            throw new InvalidOperationException($"ResponseStreamer: the released text \"{emitted}\" is not a prefix of the final response \"{full}\"");
        _emitted.Append(full, emitted.Length, full.Length - emitted.Length);
        return full[emitted.Length..];
    }

    private string Current() => ResponseText.Process(_tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids)));

    /// <summary>Length of the prefix of <paramref name="text"/> that further tokens cannot change.</summary>
    public static int StableLength(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int end = text.Length;
        while (true)
        {
            int before = end;
            while (end > 0 && text[end - 1] == '\uFFFD') end--;
            if (end > 0 && char.IsHighSurrogate(text[end - 1])) end--;
            while (end > 0 && char.IsWhiteSpace(text[end - 1])) end--;
            if (end > 0 && text[end - 1] is ',' or '!' or ':' or ';' or '?') end--;
            for (int k = Math.Min(MaxRewrittenPrefix, end); k >= 1; k--)
                if (IsRewrittenPrefix(text.AsSpan(end - k, k))) { end -= k; break; }
            if (end == before) return end;
        }
    }

    private static bool IsRewrittenPrefix(ReadOnlySpan<char> tail)
    {
        foreach (var r in Rewritten)
        {
            if (tail.Length < r.Length && r.AsSpan().StartsWith(tail)) return true;
            // "<|blank_" continues with digits and "|>".
            if (r == "<|blank_" && tail.StartsWith(r) && IsBlankTail(tail[r.Length..])) return true;
        }
        return false;
    }

    private static bool IsBlankTail(ReadOnlySpan<char> rest)
    {
        int i = 0;
        while (i < rest.Length && char.IsAsciiDigit(rest[i])) i++;
        return i == rest.Length || (i > 0 && i == rest.Length - 1 && rest[i] == '|');
    }
}
