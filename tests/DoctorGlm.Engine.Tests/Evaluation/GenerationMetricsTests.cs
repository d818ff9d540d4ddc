using System.Text.Json;
using DoctorGlm.Engine.Evaluation;

namespace DoctorGlm.Engine.Tests.Evaluation;

/// <summary>
/// BLEU-4 / ROUGE-1/2/L as ChatGLM's compute_metrics: hand-computed cases, NLTK doctest values, and the fixture written
/// by tools/reference/make_metric_fixtures.py (an independent Python port of nltk + rouge_chinese + np.mean).
/// </summary>
public class GenerationMetricsTests
{
    private static readonly JsonElement Doc = JsonDocument.Parse(File.ReadAllText(
        Path.Combine(AppContext.BaseDirectory, "Fixtures", "metrics", "compute_metrics.json"))).RootElement;

    /// <summary>Returns the tokens the fixture lists for a text (the fixture's hand segmentation stands in for jieba).</summary>
    private sealed class TableSegmenter(Dictionary<string, string[]> table) : IWordSegmenter
    {
        public IReadOnlyList<string> Cut(string text) => table[text];
    }

    private static string[] Strings(JsonElement a) => a.EnumerateArray().Select(e => e.GetString()!).ToArray();
    private static double[] Doubles(JsonElement a) => a.EnumerateArray().Select(e => e.GetDouble()).ToArray();
    private static List<string> Chars(string s) => GenerationMetrics.CodePoints(s);

    [Fact]
    public void Bleu_HandComputed()
    {
        // Identical → every precision 1, bp 1.
        Assert.Equal(1.0, Bleu.SentenceBleu([Chars("高血压患者")], Chars("高血压患者")), 15);
        // No unigram in common → 0 (NLTK returns before smoothing).
        Assert.Equal(0.0, Bleu.SentenceBleu([Chars("再见")], Chars("你好")));
        // Reversed "甲乙丙丁": p1 = 4/4; no 2/3/4-gram match, counts 3, 2, 1 → method3 gives 1/(2·3), 1/(4·2), 1/(8·1);
        // equal length → bp = 1. BLEU = (1 · 1/6 · 1/8 · 1/8)^(1/4) = 384^(−1/4).
        Assert.Equal(Math.Pow(384, -0.25), Bleu.SentenceBleu([Chars("丁丙乙甲")], Chars("甲乙丙丁")), 14);
        // Hypothesis "ab" vs reference "abcd": p1 = 2/2, p2 = 1/1, no 3-/4-grams (denominator max(1, 0) = 1) → 1/2, 1/4;
        // bp = exp(1 − 4/2) = e^−1. BLEU = e^−1 · (1/8)^(1/4).
        Assert.Equal(Math.Exp(-1) * Math.Pow(0.125, 0.25), Bleu.SentenceBleu([Chars("abcd")], Chars("ab")), 14);
    }

    [Fact]
    public void Bleu_NltkDocValues()
    {
        // nltk's SmoothingFunction doctest: method3 on this pair prints 0.4118...
        var hyp = "It is a guide to action which ensures that the military always obeys the commands of the party".Split(' ');
        var reference = "It is a guide to action that ensures that the military will forever heed Party commands".Split(' ');
        double b = Bleu.SentenceBleu([reference], hyp);
        Assert.InRange(b, 0.4118, 0.4119);
        // brevity_penalty doctests: refs of 28 vs hyp 12 → 0.2635971381157267; closest of {13, 2} to 12 is 13 → 0.9200…
        Assert.Equal(0.2635971381157267, Bleu.BrevityPenalty(28, 12), 15);
        Assert.InRange(Bleu.BrevityPenalty(13, 12), 0.9200, 0.9201);
        // Closest-length tie (11 and 13 around 12) picks the shorter, 11 < 12 → bp 1: visible through the score.
        var a12 = Enumerable.Repeat("a", 12).ToArray();
        Assert.Equal(1.0, Bleu.SentenceBleu([Enumerable.Repeat("a", 13).ToArray(), Enumerable.Repeat("a", 11).ToArray()], a12), 15);
    }

    [Fact]
    public void Rouge_HandComputed()
    {
        // Reversed characters as words: all unigrams shared (F = 2/(2 + 1e-8)), no bigram, LCS of length 1 → P = R = 1/4.
        var (r1, r2, rl) = RougeChinese.Score("甲 乙 丙 丁", "丁 丙 乙 甲");
        Assert.Equal(2.0 / (2 + 1e-8), r1.F, 15);
        Assert.Equal(0.0, r2.F);
        Assert.Equal(2.0 * (0.0625 / (0.5 + 1e-8)), rl.F, 15);
        // Sets, not multisets: "a a a b" vs "a b" has 2 distinct unigrams on each side → R1 P = R = 1.
        Assert.Equal(1.0, RougeChinese.Score("a a a b", "a b").Rouge1.P);
        Assert.Throws<ArgumentException>(() => RougeChinese.Score("", "a"));
        // Sentence cutting after 。 keeps the punctuation with its sentence.
        Assert.Equal(["甲 。", "乙"], RougeChinese.Sentences("甲 。 乙"));
    }

    [Fact]
    public void ComputeMetrics_MatchesPythonReferenceFixture()
    {
        var cases = Doc.GetProperty("cases").EnumerateArray().ToList();
        var table = new Dictionary<string, string[]>();
        foreach (var c in cases)
        {
            table[c.GetProperty("pred").GetString()!] = Strings(c.GetProperty("pred_tokens"));
            table[c.GetProperty("label").GetString()!] = Strings(c.GetProperty("label_tokens"));
        }
        var metrics = new GenerationMetrics(new TableSegmenter(table));
        foreach (var c in cases)
        {
            string pred = c.GetProperty("pred").GetString()!, label = c.GetProperty("label").GetString()!;
            var e = c.GetProperty("expected");
            var s = metrics.Score(pred, label);
            // Rounded to 4 decimals on both sides: exact equality.
            Assert.Equal((e.GetProperty("rouge-1").GetDouble(), e.GetProperty("rouge-2").GetDouble(), e.GetProperty("rouge-l").GetDouble(), e.GetProperty("bleu-4").GetDouble()),
                (s.Rouge1, s.Rouge2, s.RougeL, s.Bleu4));
        }
        var avg = metrics.Average(cases.Select(c => (c.GetProperty("pred").GetString()!, c.GetProperty("label").GetString()!)));
        var m = Doc.GetProperty("means");
        Assert.Equal(m.GetProperty("rouge-1").GetDouble(), avg.Rouge1);
        Assert.Equal(m.GetProperty("rouge-2").GetDouble(), avg.Rouge2);
        Assert.Equal(m.GetProperty("rouge-l").GetDouble(), avg.RougeL);
        Assert.Equal(m.GetProperty("bleu-4").GetDouble(), avg.Bleu4);
    }

    [Fact]
    public void PythonNumerics_FsumRoundMean_BitExact()
    {
        foreach (var c in Doc.GetProperty("fsum").EnumerateArray())
            Assert.Equal(c.GetProperty("sum").GetDouble(), PyMath.FSum(Doubles(c.GetProperty("values"))));
        foreach (var c in Doc.GetProperty("round4").EnumerateArray())
        {
            double x = c.GetProperty("x").GetDouble();
            Assert.True(c.GetProperty("rounded").GetDouble() == PyMath.Round(x, 4), $"round({x:R}, 4): python {c.GetProperty("rounded").GetDouble():R}, ours {PyMath.Round(x, 4):R}");
        }
        foreach (var c in Doc.GetProperty("mean").EnumerateArray())
        {
            var v = Doubles(c.GetProperty("values"));
            Assert.True(c.GetProperty("mean").GetDouble() == PyMath.Mean(v), $"np.mean of {v.Length} values");
        }
    }

    [Fact]
    public void Jieba_DefaultSegmenter_MatchesPythonJiebaExamples()
    {
        // The examples of jieba's README (default mode, HMM on): 他/来到/了/网易/杭研/大厦 needs the HMM for 杭研.
        var seg = new JiebaWordSegmenter();
        Assert.Equal(["我", "来到", "北京", "清华大学"], seg.Cut("我来到北京清华大学"));
        Assert.Equal(["他", "来到", "了", "网易", "杭研", "大厦"], seg.Cut("他来到了网易杭研大厦"));
        Assert.Empty(seg.Cut(""));
        // Every character is kept, spaces as their own tokens (what ' '.join then relies on).
        Assert.Equal("高血压 患者 hello", string.Concat(seg.Cut("高血压 患者 hello")));
        // End to end with the real segmenter: identical texts score 100 everywhere.
        var s = new GenerationMetrics(seg).Score("高血压患者应该低盐饮食。", "高血压患者应该低盐饮食。");
        Assert.Equal(new GenerationScores(100, 100, 100, 100), s);
    }
}
