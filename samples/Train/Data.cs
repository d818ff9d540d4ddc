using DoctorGlm.Engine;

namespace DoctorGlm.Samples.Train;

/// <summary>Character vocabulary with GLM's special tokens.</summary>
public sealed class CharVocab
{
    public const int Pad = 0, Unk = 1, GMask = 2, Sop = 3, Eop = 4;
    private readonly Dictionary<char, int> _ids = new();
    private readonly List<char> _chars = ['\0', '?', '\0', '\0', '\0'];

    public static CharVocab Build(IEnumerable<string> texts, int minCount)
    {
        var counts = new Dictionary<char, int>();
        foreach (var t in texts) foreach (char ch in t) counts[ch] = counts.GetValueOrDefault(ch) + 1;
        var v = new CharVocab();
        foreach (var (ch, n) in counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key))
            if (n >= minCount) { v._ids[ch] = v._chars.Count; v._chars.Add(ch); }
        return v;
    }

    public int Count => _chars.Count;
    public int Id(char ch) => _ids.TryGetValue(ch, out int id) ? id : Unk;
    public string Decode(IEnumerable<int> ids) => new(ids.Where(i => i > Eop || i == Unk).Select(i => _chars[i]).ToArray());
}

/// <summary>A training batch laid out as spec §5.1: question [gMASK] &lt;sop&gt; answer &lt;eop&gt;, right-padded.</summary>
public sealed record BatchInputs(Tensor Ids, Tensor PositionIds, Tensor Mask, Tensor Labels, int Batch, int SeqLen, int LabelCount)
{
    public long TokenCount => (long)Batch * SeqLen;
}

public sealed class Batcher(CharVocab vocab, int maxQuestion, int maxAnswer)
{
    public CharVocab Vocab => vocab;

    public BatchInputs Make(IReadOnlyList<(string Question, string Answer)> pairs)
    {
        var seqs = pairs.Select(p =>
        {
            var q = p.Question.Take(maxQuestion).Select(vocab.Id).ToList();
            var a = p.Answer.Take(maxAnswer).Select(vocab.Id).ToList();
            return (Prompt: q, Answer: a);
        }).ToList();
        return Build(seqs, withEop: true);
    }

    public BatchInputs MakePrompt(string question, List<int> answerSoFar) =>
        Build([(question.Take(maxQuestion).Select(vocab.Id).ToList(), answerSoFar)], withEop: false);

    private static BatchInputs Build(List<(List<int> Prompt, List<int> Answer)> seqs, bool withEop)
    {
        int B = seqs.Count;
        int S = seqs.Max(s => s.Prompt.Count + 2 + s.Answer.Count + (withEop ? 1 : 0));
        var ids = new int[B * S];
        var labels = new int[B * (S - 1)];
        Array.Fill(labels, -100);
        var ctx = new int[B];
        var maskPos = new int[B];
        int labelCount = 0;
        for (int b = 0; b < B; b++)
        {
            var (p, a) = seqs[b];
            var seq = new List<int>(p) { CharVocab.GMask, CharVocab.Sop };
            seq.AddRange(a);
            if (withEop) seq.Add(CharVocab.Eop);
            maskPos[b] = p.Count;
            ctx[b] = p.Count + 1;
            for (int s = 0; s < S; s++) ids[b * S + s] = s < seq.Count ? seq[s] : CharVocab.Pad;
            // Position t predicts token t+1; the loss covers the answer and <eop> (the tokens after <sop>).
            for (int t = ctx[b]; t < seq.Count - 1; t++) { labels[b * (S - 1) + t] = seq[t + 1]; labelCount++; }
        }
        return new BatchInputs(
            Tensor.FromArray(ids, new Shape(B, S)),
            PositionIds.Glm(ctx, maskPos, S),
            AttentionMask.PrefixLm(ctx, S),
            Tensor.FromArray(labels, new Shape(B * (S - 1))),
            B, S, labelCount);
    }
}
