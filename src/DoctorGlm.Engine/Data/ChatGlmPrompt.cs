using System.Globalization;
using System.Text;

namespace DoctorGlm.Engine.Data;

/// <summary>When the multi-turn "[Round i]" layout is used for a prompt (spec §5.1, §7).</summary>
public enum ChatGlmPromptStyle
{
    /// <summary>The raw query, history ignored: the official script without <c>--history_column</c> (train.sh).</summary>
    Raw,

    /// <summary>
    /// Rounds always, even for an empty history ("[Round 0]\n问：q\n答："): the official training preprocessing with
    /// <c>--history_column</c> (train_chat.sh).
    /// </summary>
    RoundsAlways,

    /// <summary>Rounds only when there is history, raw query otherwise: <c>chat()</c> and the official eval preprocessing.</summary>
    RoundsIfHistory,
}

/// <summary>The ChatGLM-6B prompt text (spec §5.1 and §7). Colons are full-width "：" (U+FF1A).</summary>
public static class ChatGlmPrompt
{
    /// <summary>
    /// Builds the prompt text: with rounds, <c>"[Round {i}]\n问：{q_i}\n答：{r_i}\n"</c> for each earlier turn i = 0..n−1, then
    /// <c>"[Round {n}]\n问：{query}\n答："</c>; without, the query itself. <paramref name="sourcePrefix"/> (the official
    /// <c>--source_prefix</c>) goes in front in either case.
    /// </summary>
    public static string Build(string query, IReadOnlyList<(string Question, string Answer)> history, ChatGlmPromptStyle style, string sourcePrefix = "")
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(history);
        bool rounds = style switch
        {
            ChatGlmPromptStyle.Raw => false,
            ChatGlmPromptStyle.RoundsAlways => true,
            ChatGlmPromptStyle.RoundsIfHistory => history.Count > 0,
            _ => throw new ArgumentOutOfRangeException(nameof(style), style, null),
        };
        if (!rounds) return sourcePrefix + query;
        var sb = new StringBuilder(sourcePrefix);
        for (int i = 0; i < history.Count; i++)
            sb.Append(CultureInfo.InvariantCulture, $"[Round {i}]\n问：{history[i].Question}\n答：{history[i].Answer}\n");
        sb.Append(CultureInfo.InvariantCulture, $"[Round {history.Count}]\n问：{query}\n答：");
        return sb.ToString();
    }

    /// <summary>The <c>chat()</c> prompt of spec §7: raw query without history, rounds with it.</summary>
    public static string ForChat(string query, IReadOnlyList<(string Question, string Answer)> history) =>
        Build(query, history, ChatGlmPromptStyle.RoundsIfHistory);
}
