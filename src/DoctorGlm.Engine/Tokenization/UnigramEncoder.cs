namespace DoctorGlm.Engine.Tokenization;

/// <summary>A segment of the normalized UTF-8 text and the id it maps to.</summary>
internal readonly record struct Segment(int Start, int Length, int Id);

/// <summary>
/// Unigram segmentation as sentencepiece 0.1.97 runs it (unigram_model.cc, Model::EncodeOptimized, the
/// default encoder): one Viterbi pass over UTF-8 byte positions keeping, for every end position, the best
/// path ending there. Scores follow the C++ arithmetic exactly, because ties and near-ties decide pieces:
/// piece candidates are computed in double (the conditional with the user-defined bonus makes the whole
/// expression double) and stored as float; the unknown candidate is float + float.
/// </summary>
internal sealed class UnigramEncoder
{
    private const float UnkPenalty = 10.0f;

    private readonly ByteTrie _trie;          // NORMAL, USER_DEFINED and UNUSED pieces → id
    private readonly SentencePieceEntry[] _pieces;
    private readonly int _unkId;
    private readonly float _minScore, _maxScore;

    public UnigramEncoder(ByteTrie trie, SentencePieceEntry[] pieces, int unkId)
    {
        _trie = trie;
        _pieces = pieces;
        _unkId = unkId;
        // As in Model::Model: over NORMAL pieces only, starting from FLT_MAX / FLT_MIN. FLT_MIN is the
        // smallest *positive* float, so with all-negative log-prob scores max_score stays FLT_MIN.
        _minScore = float.MaxValue;
        _maxScore = 1.17549435E-38f; // FLT_MIN
        foreach (var p in pieces)
        {
            if (p.Type != SentencePieceType.Normal) continue;
            _minScore = Math.Min(_minScore, p.Score);
            _maxScore = Math.Max(_maxScore, p.Score);
        }
    }

    public List<Segment> Encode(ReadOnlySpan<byte> text)
    {
        var result = new List<Segment>();
        int size = text.Length;
        if (size == 0) return result;

        float unkScore = _minScore - UnkPenalty;
        var bestScore = new float[size + 1];
        var startsAt = new int[size + 1];
        var ids = new int[size + 1];
        Array.Fill(startsAt, -1);
        bestScore[0] = 0;

        int start = 0;
        while (start < size)
        {
            float tillHere = bestScore[start];
            bool hasSingleNode = false;
            int mblen = Math.Min(Utf8Util.OneCharLen(text[start]), size - start);
            int node = 0;
            for (int keyPos = start; keyPos < size;)
            {
                if (!_trie.Step(ref node, text[keyPos])) break;
                keyPos++;
                int id = _trie.ValueAt(node);
                if (id < 0) continue;
                var type = _pieces[id].Type;
                if (type == SentencePieceType.Unused) continue;
                int length = keyPos - start;
                // User-defined pieces get a bonus so they are always chosen: length * max_score - 0.1.
                double score = type == SentencePieceType.UserDefined
                    ? (double)((float)length * _maxScore) - 0.1
                    : _pieces[id].Score;
                double candidate = score + tillHere;
                if (startsAt[keyPos] == -1 || candidate > bestScore[keyPos])
                {
                    bestScore[keyPos] = (float)candidate;
                    startsAt[keyPos] = start;
                    ids[keyPos] = id;
                }
                if (length == mblen) hasSingleNode = true;
            }
            if (!hasSingleNode)
            {
                int end = start + mblen;
                float candidate = unkScore + tillHere;
                if (startsAt[end] == -1 || candidate > bestScore[end])
                {
                    bestScore[end] = candidate;
                    startsAt[end] = start;
                    ids[end] = _unkId;
                }
            }
            start += mblen;
        }

        for (int end = size; end > 0; end = startsAt[end])
        {
            // Only reachable with pieces that end inside a UTF-8 character (a malformed vocabulary).
            if (startsAt[end] < 0) throw new InvalidOperationException($"unigram lattice has no path ending at byte {end}; the vocabulary has pieces that split a UTF-8 character");
            result.Add(new Segment(startsAt[end], end - startsAt[end], ids[end]));
        }
        result.Reverse();
        return result;
    }
}
