using DoctorGlm.Engine.Data;

namespace DoctorGlm.Engine.Tests.Data;

/// <summary>
/// Sample construction against hand-worked examples of spec §5.1 with a fake character-level encoder: every UTF-16 char
/// maps to its code ('a' = 97 …), special ids gMASK 1001, sop 1004, eop 1005, pad 3.
/// </summary>
public class ChatGlmSampleBuilderTests
{
    private const int G = 1001, S = 1004, E = 1005, P = 3, X = -100;
    private static int[] CharIds(string s) => s.Select(c => (int)c).ToArray();

    private static ChatGlmSampleBuilder Builder(int src, int tgt, ChatGlmPromptStyle style = ChatGlmPromptStyle.Raw, bool ignorePad = true, string prefix = "") =>
        new(CharIds, G, S, E, P, src, tgt, style, prefix, ignorePad);

    private static DialogueExample Ex(string prompt, string response, params (string, string)[] history) => new(prompt, response, history, "test:1");

    [Fact]
    public void ShortExample_IdsLabelsAndPadding()
    {
        var s = Builder(4, 5).BuildTrain(Ex("ab", "xyz"));
        // a = [a, b]; b = [x, y, z]; input = a + [gMASK, sop] + b + [eop], padded to 4 + 5 = 9.
        Assert.Equal([97, 98, G, S, 120, 121, 122, E, P], s.InputIds);
        // ctx = index(sop) = 3; labels start with sop itself (spec §12.8) and end with eop; pad label → −100.
        Assert.Equal([X, X, X, S, 120, 121, 122, E, X], s.Labels);
        Assert.Equal(3, s.ContextLength);
        Assert.Equal(2, s.MaskPosition);
        Assert.Equal(8, s.Length);
    }

    [Fact]
    public void Truncation_SourceToMaxMinus1_TargetToMaxMinus2()
    {
        var s = Builder(4, 5).BuildTrain(Ex("abcdef", "uvwxyz"));
        // prompt cut to 4 − 1 = 3 ids, answer to 5 − 2 = 3 ids; the sequence exactly fills 9 with no padding.
        Assert.Equal([97, 98, 99, G, S, 117, 118, 119, E], s.InputIds);
        Assert.Equal([X, X, X, X, S, 117, 118, 119, E], s.Labels);
        Assert.Equal(4, s.ContextLength);
        Assert.Equal(9, s.Length);
    }

    [Fact]
    public void PadIdInsideAnswer_IsIgnoredInLabelsOnlyWhenConfigured()
    {
        // The script maps every label equal to the pad id to −100, including a genuine pad-valued answer token.
        var withIgnore = Builder(3, 4).BuildTrain(Ex("a", "\u0003b"));
        Assert.Equal([97, G, S, 3, 98, E, P], withIgnore.InputIds);
        Assert.Equal([X, X, S, X, 98, E, X], withIgnore.Labels);

        var keepPad = Builder(3, 4, ignorePad: false).BuildTrain(Ex("a", "\u0003b"));
        Assert.Equal([X, X, S, 3, 98, E, P], keepPad.Labels);
    }

    [Fact]
    public void PromptText_RoundsFormat()
    {
        (string, string)[] hist = [("q0", "r0"), ("q1", "r1")];
        Assert.Equal("[Round 0]\n问：q0\n答：r0\n[Round 1]\n问：q1\n答：r1\n[Round 2]\n问：p\n答：",
            ChatGlmPrompt.Build("p", hist, ChatGlmPromptStyle.RoundsAlways));
        // Training with a history column uses rounds even for an empty history; chat()/eval use the raw query.
        Assert.Equal("[Round 0]\n问：p\n答：", ChatGlmPrompt.Build("p", [], ChatGlmPromptStyle.RoundsAlways));
        Assert.Equal("p", ChatGlmPrompt.Build("p", [], ChatGlmPromptStyle.RoundsIfHistory));
        Assert.Equal("p", ChatGlmPrompt.ForChat("p", []));
        Assert.Equal(ChatGlmPrompt.Build("p", hist, ChatGlmPromptStyle.RoundsAlways), ChatGlmPrompt.ForChat("p", hist));
        // Raw ignores history entirely (official script without --history_column).
        Assert.Equal("p", ChatGlmPrompt.Build("p", hist, ChatGlmPromptStyle.Raw));
        Assert.Equal("pre:p", ChatGlmPrompt.Build("p", hist, ChatGlmPromptStyle.Raw, "pre:"));
        // Full-width colon U+FF1A, not ASCII ':'.
        Assert.Contains('\uFF1A', ChatGlmPrompt.ForChat("p", hist));
    }

    [Fact]
    public void TrainWithHistory_EncodesRoundsTextAndTruncatesFromTheRight()
    {
        var text = "[Round 0]\n问：p\n答：";
        var s = Builder(64, 4, ChatGlmPromptStyle.RoundsAlways).BuildTrain(Ex("p", "z"));
        Assert.Equal(CharIds(text).Concat([G, S, 'z', E]), s.InputIds.Take(text.Length + 4));
        Assert.Equal(text.Length + 1, s.ContextLength);

        // A long history is cut at max_source_length − 1 from the right, so the *start* of the dialogue survives and
        // the current question is lost — the official behaviour, kept on purpose.
        var cut = Builder(6, 4, ChatGlmPromptStyle.RoundsAlways).BuildTrain(Ex("p", "z", ("qq", "rr")));
        Assert.Equal(CharIds("[Roun").Concat([G, S, 'z', E, P]), cut.InputIds);
    }

    [Fact]
    public void SourcePrefix_IsPrependedBeforeTruncation()
    {
        var s = Builder(4, 3, prefix: "xy").BuildTrain(Ex("ab", "c"));
        Assert.Equal([120, 121, 97, G, S, 99, E], s.InputIds);
    }

    [Fact]
    public void Eval_PromptTruncatedToMaxMinus2_ThenGMaskSop()
    {
        var e = Builder(4, 5).BuildEval(Ex("abcdef", "ref"));
        Assert.Equal([97, 98, G, S], e.InputIds);
        Assert.Equal("ref", e.Reference);

        // Eval renders rounds only when there is history (RoundsAlways in training becomes RoundsIfHistory here).
        var b = Builder(64, 5, ChatGlmPromptStyle.RoundsAlways);
        Assert.Equal([112, G, S], b.BuildEval(Ex("p", "r")).InputIds);
        Assert.Equal(CharIds("[Round 0]\n问：q\n答：a\n[Round 1]\n问：p\n答：").Concat([G, S]), b.BuildEval(Ex("p", "r", ("q", "a"))).InputIds);
    }

    [Fact]
    public void BadArguments_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder(1, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder(4, 2));
        Assert.Throws<ArgumentException>(() => Builder(4, 5).BuildTrain(Ex("", "x")));
        Assert.Throws<ArgumentException>(() => Builder(4, 5).BuildTrain(Ex("x", "")));
    }
}
