namespace DoctorGlm.Engine.Evaluation;

/// <summary>
/// Sentence BLEU with NLTK's semantics (<c>nltk.translate.bleu_score.sentence_bleu</c>): clipped n-gram precisions
/// kept as unreduced fractions, brevity penalty from the closest reference length (ties → the shorter), 0 when no
/// unigram matches, and <c>SmoothingFunction().method3</c> (NIST geometric smoothing: the k-th order with zero matches
/// gets 1 / (2^k · its n-gram count), k = 1, 2, …), combined as exp(Σ w·log p) with uniform weights.
/// </summary>
public static class Bleu
{
    /// <summary>
    /// <c>sentence_bleu(references, hypothesis, weights = (1/N,)·N, smoothing_function = SmoothingFunction().method3)</c>;
    /// N = <paramref name="maxOrder"/> (4 gives BLEU-4). Result in [0, 1].
    /// </summary>
    public static double SentenceBleu(IReadOnlyList<IReadOnlyList<string>> references, IReadOnlyList<string> hypothesis, int maxOrder = 4)
    {
        ArgumentNullException.ThrowIfNull(references);
        ArgumentNullException.ThrowIfNull(hypothesis);
        if (references.Count == 0) throw new ArgumentException("at least one reference is required", nameof(references));
        ArgumentOutOfRangeException.ThrowIfLessThan(maxOrder, 1);

        // Intern tokens so n-grams compare as int sequences.
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int[] Ids(IReadOnlyList<string> toks) { var a = new int[toks.Count]; for (int i = 0; i < a.Length; i++) a[i] = vocab.TryGetValue(toks[i], out var v) ? v : vocab[toks[i]] = vocab.Count; return a; }
        var hyp = Ids(hypothesis);
        var refs = references.Select(Ids).ToArray();

        var numerators = new long[maxOrder];
        var denominators = new long[maxOrder];
        for (int n = 1; n <= maxOrder; n++)
            (numerators[n - 1], denominators[n - 1]) = ModifiedPrecision(refs, hyp, n);

        int hypLen = hyp.Length;
        int closest = refs.Select(r => r.Length).MinBy(len => (Math.Abs(len - hypLen), len));
        double bp = BrevityPenalty(closest, hypLen);

        // No unigram match: NLTK returns 0 before smoothing.
        if (numerators[0] == 0) return 0.0;

        var logs = new double[maxOrder];
        int k = 1;
        double w = 1.0 / maxOrder;
        for (int i = 0; i < maxOrder; i++)
        {
            // method3 replaces a zero precision by 1 / (2^k · denominator); the denominator is the unreduced n-gram count.
            double p = numerators[i] == 0 ? 1.0 / (Math.Pow(2, k++) * denominators[i]) : (double)numerators[i] / denominators[i];
            logs[i] = w * Math.Log(p);
        }
        return bp * Math.Exp(PyMath.FSum(logs));
    }

    /// <summary>
    /// NLTK <c>modified_precision</c>: numerator = Σ over hypothesis n-grams of min(count, max count in any reference);
    /// denominator = max(1, number of hypothesis n-grams).
    /// </summary>
    internal static (long Numerator, long Denominator) ModifiedPrecision(int[][] references, int[] hypothesis, int n)
    {
        var counts = NGramCounts(hypothesis, n);
        var maxRef = new Dictionary<NGram, int>();
        foreach (var r in references)
        {
            var rc = NGramCounts(r, n);
            foreach (var g in counts.Keys)
                maxRef[g] = Math.Max(maxRef.GetValueOrDefault(g), rc.GetValueOrDefault(g));
        }
        long num = 0, total = 0;
        foreach (var (g, c) in counts)
        {
            num += Math.Min(c, maxRef[g]);
            total += c;
        }
        return (num, Math.Max(1, total));
    }

    /// <summary>NLTK <c>brevity_penalty</c>: 1 when the hypothesis is longer than r, 0 when empty, else exp(1 − r/c).</summary>
    internal static double BrevityPenalty(int closestRefLength, int hypLength) =>
        hypLength > closestRefLength ? 1.0 : hypLength == 0 ? 0.0 : Math.Exp(1 - (double)closestRefLength / hypLength);

    private static Dictionary<NGram, int> NGramCounts(int[] toks, int n)
    {
        var d = new Dictionary<NGram, int>();
        for (int i = 0; i + n <= toks.Length; i++)
        {
            var g = new NGram(toks, i, n);
            d[g] = d.GetValueOrDefault(g) + 1;
        }
        return d;
    }

    private readonly struct NGram(int[] source, int start, int length) : IEquatable<NGram>
    {
        private ReadOnlySpan<int> Span => source.AsSpan(start, length);
        public bool Equals(NGram other) => Span.SequenceEqual(other.Span);
        public override bool Equals(object? obj) => obj is NGram g && Equals(g);
        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var t in Span) h.Add(t);
            return h.ToHashCode();
        }
    }
}
