namespace DoctorGlm.Engine.Evaluation;

/// <summary>The four scores of one prediction, ×100 and rounded to 4 decimals as ChatGLM's <c>compute_metrics</c> stores them.</summary>
/// <param name="Rouge1">ROUGE-1 F ×100.</param>
/// <param name="Rouge2">ROUGE-2 F ×100.</param>
/// <param name="RougeL">ROUGE-L F ×100.</param>
/// <param name="Bleu4">BLEU-4 (method3 smoothing, characters) ×100.</param>
public readonly record struct GenerationScores(double Rouge1, double Rouge2, double RougeL, double Bleu4);

/// <summary>
/// The generation metrics of ChatGLM-6B's <c>ptuning/main.py</c> <c>compute_metrics</c>, per pair of decoded prediction
/// and reference:
/// <list type="bullet">
/// <item>ROUGE-1/2/L F-measures from <see cref="RougeChinese"/> on <c>' '.join(jieba.cut(text))</c> of each side; when
/// either side has no tokens after whitespace splitting the three ROUGE scores are 0 (the guard the later ChatGLM2 and
/// LLaMA-Factory versions added; the original raises on it);</item>
/// <item>BLEU-4 from <see cref="Bleu.SentenceBleu"/> on <b>characters</b>: <c>sentence_bleu([list(label)], list(pred),
/// smoothing_function=SmoothingFunction().method3)</c> — Python's list(str) is a list of code points;</item>
/// <item>each score ×100 rounded to 4 decimals (Python <c>round</c>), then averaged with <c>np.mean</c>.</item>
/// </list>
/// </summary>
public sealed class GenerationMetrics
{
    private readonly IWordSegmenter _segmenter;

    /// <summary>Uses <paramref name="segmenter"/> for ROUGE tokens (default: a <see cref="JiebaWordSegmenter"/>).</summary>
    public GenerationMetrics(IWordSegmenter? segmenter = null) => _segmenter = segmenter ?? new JiebaWordSegmenter();

    /// <summary>Scores one prediction against its reference.</summary>
    public GenerationScores Score(string prediction, string reference)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        ArgumentNullException.ThrowIfNull(reference);
        string hyp = string.Join(' ', _segmenter.Cut(prediction));
        string @ref = string.Join(' ', _segmenter.Cut(reference));
        double r1 = 0, r2 = 0, rl = 0;
        if (HasToken(hyp) && HasToken(@ref))
        {
            var (a, b, l) = RougeChinese.Score(hyp, @ref);
            (r1, r2, rl) = (a.F, b.F, l.F);
        }
        double bleu = Bleu.SentenceBleu([CodePoints(reference)], CodePoints(prediction));
        return new GenerationScores(PyMath.Round(r1 * 100, 4), PyMath.Round(r2 * 100, 4), PyMath.Round(rl * 100, 4), PyMath.Round(bleu * 100, 4));
    }

    /// <summary>Scores every (prediction, reference) pair and averages each metric as <c>float(np.mean(...))</c>.</summary>
    /// <exception cref="ArgumentException">No pairs.</exception>
    public GenerationScores Average(IEnumerable<(string Prediction, string Reference)> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var all = pairs.Select(p => Score(p.Prediction, p.Reference)).ToList();
        if (all.Count == 0) throw new ArgumentException("no prediction/reference pairs to score", nameof(pairs));
        return new GenerationScores(
            PyMath.Mean(all.Select(s => s.Rouge1).ToArray()),
            PyMath.Mean(all.Select(s => s.Rouge2).ToArray()),
            PyMath.Mean(all.Select(s => s.RougeL).ToArray()),
            PyMath.Mean(all.Select(s => s.Bleu4).ToArray()));
    }

    // len(" ".join(tokens).split()) > 0
    private static bool HasToken(string joined) => RougeChinese.Sentences(joined).Any(s => s.Length > 0);

    /// <summary>Python's <c>list(s)</c>: one string per Unicode code point (a surrogate pair stays together).</summary>
    internal static List<string> CodePoints(string s)
    {
        var list = new List<string>(s.Length);
        foreach (var r in s.EnumerateRunes()) list.Add(r.ToString());
        return list;
    }
}
