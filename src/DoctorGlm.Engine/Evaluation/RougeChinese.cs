using System.Text.RegularExpressions;

namespace DoctorGlm.Engine.Evaluation;

/// <summary>ROUGE F/P/R of one hypothesis-reference pair.</summary>
/// <param name="F">F-measure 2PR/(P+R+1e-8).</param>
/// <param name="P">Precision.</param>
/// <param name="R">Recall.</param>
public readonly record struct RougeScore(double F, double P, double R);

/// <summary>
/// ROUGE-1, ROUGE-2 and ROUGE-L with the semantics of the <c>rouge_chinese</c> package's <c>Rouge().get_scores(hyp, ref)</c>
/// (a fork of pltrdy/rouge with Chinese sentence splitting), as ChatGLM's <c>compute_metrics</c> calls it on
/// space-joined jieba tokens:
/// <list type="bullet">
/// <item>each text is cut into sentences after 。！？? (and ……, ......, closing quotes) by <c>cut_sent</c>; each sentence
/// has its whitespace runs collapsed to one space, and words are the sentence split on single spaces;</item>
/// <item>the default <c>exclusive=True</c> makes n-gram collections <b>sets</b>: ROUGE-N counts distinct n-grams, and
/// ROUGE-L's m and n are the numbers of distinct words;</item>
/// <item>ROUGE-L is summary-level: the union (as a set of words) of one reconstructed LCS per (reference sentence,
/// hypothesis sentence) pair, with pltrdy's back-tracking tie-break, divided by m (recall) and n (precision);</item>
/// <item>F = 2PR/(P+R+1e-8).</item>
/// </list>
/// </summary>
public static partial class RougeChinese
{
    /// <summary>
    /// Scores space-joined token strings. Throws like the package for an empty hypothesis or reference (after
    /// sentence cutting); <see cref="GenerationMetrics"/> scores those as 0 before calling this, as ChatGLM does.
    /// </summary>
    public static (RougeScore Rouge1, RougeScore Rouge2, RougeScore RougeL) Score(string hypothesis, string reference)
    {
        ArgumentNullException.ThrowIfNull(hypothesis);
        ArgumentNullException.ThrowIfNull(reference);
        var hyp = Sentences(hypothesis);
        var refs = Sentences(reference);
        if (hyp.Count == 0) throw new ArgumentException("Hypothesis is empty.", nameof(hypothesis));
        if (refs.Count == 0) throw new ArgumentException("Reference is empty.", nameof(reference));
        return (RougeN(hyp, refs, 1), RougeN(hyp, refs, 2), RougeLSummaryLevel(hyp, refs));
    }

    /// <summary>
    /// <c>Rouge.cut_sent</c> followed by <c>[" ".join(s.split()) for s in sentences if len(s) > 0]</c>.
    /// </summary>
    internal static List<string> Sentences(string text)
    {
        var para = CutSent1().Replace(text, "$1\n$2");
        para = CutSent2().Replace(para, "$1\n$2");
        para = CutSent3().Replace(para, "$1\n$2");
        para = CutSent4().Replace(para, "$1\n$2");
        para = para.TrimEnd(PyWhitespace);
        var result = new List<string>();
        foreach (var s in para.Split('\n'))
            if (s.Length > 0) result.Add(string.Join(' ', s.Split(PyWhitespace, StringSplitOptions.RemoveEmptyEntries)));
        return result;
    }

    // The four substitutions of rouge_chinese's cut_sent, in order. [^”’] also matches "\n", as in Python.
    [GeneratedRegex("([。！？\\?])([^”’])")] private static partial Regex CutSent1();
    [GeneratedRegex("(\\.{6})([^”’])")] private static partial Regex CutSent2();
    [GeneratedRegex("(…{2})([^”’])")] private static partial Regex CutSent3();
    [GeneratedRegex("([。！？\\?][”’])([^，。！？\\?])")] private static partial Regex CutSent4();

    // Python's str.split()/rstrip() whitespace (str.isspace): ASCII 9–13 and 28–31, space, U+0085, U+00A0, U+1680,
    // U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
    private static readonly char[] PyWhitespace =
    [
        '\t', '\n', '\v', '\f', '\r', '\x1c', '\x1d', '\x1e', '\x1f', ' ', '\x85', '\xa0', '\u1680',
        '\u2000', '\u2001', '\u2002', '\u2003', '\u2004', '\u2005', '\u2006', '\u2007', '\u2008', '\u2009', '\u200a',
        '\u2028', '\u2029', '\u202f', '\u205f', '\u3000',
    ];

    // _split_into_words: every sentence split on a single " " (so an all-blank sentence contributes the word "").
    private static List<string> Words(IEnumerable<string> sentences) => sentences.SelectMany(s => s.Split(' ')).ToList();

    internal static RougeScore RougeN(List<string> hyp, List<string> refs, int n)
    {
        var h = NGramSet(Words(hyp), n);
        var r = NGramSet(Words(refs), n);
        int overlap = h.Count(r.Contains);
        return Frp(h.Count, r.Count, overlap);
    }

    private static HashSet<string[]> NGramSet(List<string> words, int n)
    {
        var set = new HashSet<string[]>(SequenceComparer.Instance);
        for (int i = 0; i + n <= words.Count; i++) set.Add(words.GetRange(i, n).ToArray());
        return set;
    }

    // Python tuples of str: equal when element-wise ordinally equal.
    private sealed class SequenceComparer : IEqualityComparer<string[]>
    {
        public static readonly SequenceComparer Instance = new();
        public bool Equals(string[]? a, string[]? b) => a.AsSpan().SequenceEqual(b.AsSpan());
        public int GetHashCode(string[] a)
        {
            var h = new HashCode();
            foreach (var s in a) h.Add(s, StringComparer.Ordinal);
            return h.ToHashCode();
        }
    }

    private static RougeScore Frp(int evaluatedCount, int referenceCount, int overlappingCount)
    {
        double p = evaluatedCount == 0 ? 0.0 : (double)overlappingCount / evaluatedCount;
        double r = referenceCount == 0 ? 0.0 : (double)overlappingCount / referenceCount;
        return new RougeScore(2.0 * ((p * r) / (p + r + 1e-8)), p, r);
    }

    internal static RougeScore RougeLSummaryLevel(List<string> hyp, List<string> refs)
    {
        int m = new HashSet<string>(Words(refs), StringComparer.Ordinal).Count;
        int n = new HashSet<string>(Words(hyp), StringComparer.Ordinal).Count;
        var union = new HashSet<string>(StringComparer.Ordinal);
        foreach (var refSentence in refs)
        {
            var refWords = refSentence.Split(' ');
            foreach (var hypSentence in hyp)
                foreach (var w in ReconLcs(refWords, hypSentence.Split(' ')))
                    union.Add(w);
        }
        // Σ over references of the union's growth = the final union size.
        int llcs = union.Count;
        double r = (double)llcs / m, p = (double)llcs / n;
        return new RougeScore(2.0 * ((p * r) / (p + r + 1e-8)), p, r);
    }

    /// <summary>pltrdy's <c>_recon_lcs(x, y)</c>: one LCS of x and y, back-tracking up when table[i−1][j] &gt; table[i][j−1], else left.</summary>
    internal static List<string> ReconLcs(string[] x, string[] y)
    {
        var t = new int[x.Length + 1, y.Length + 1];
        for (int i = 1; i <= x.Length; i++)
            for (int j = 1; j <= y.Length; j++)
                t[i, j] = x[i - 1] == y[j - 1] ? t[i - 1, j - 1] + 1 : Math.Max(t[i - 1, j], t[i, j - 1]);
        var lcs = new List<string>();
        for (int i = x.Length, j = y.Length; i > 0 && j > 0;)
        {
            if (x[i - 1] == y[j - 1]) { lcs.Add(x[i - 1]); i--; j--; }
            else if (t[i - 1, j] > t[i, j - 1]) i--;
            else j--;
        }
        lcs.Reverse();
        return lcs;
    }
}
