using System.Text;

namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// BPE segmentation as sentencepiece 0.1.97 runs it (bpe_model.cc, Model::SampleEncode with no dropout):
/// the text is split into characters (a user-defined piece is one frozen symbol), then the adjacent pair
/// whose concatenation is the highest-scoring vocabulary piece is merged, repeatedly — ties go to the
/// leftmost pair. UNUSED pieces take part in merging but are re-split into the pair they came from.
/// </summary>
internal sealed class BpeEncoder
{
    private readonly ByteTrie _trie;          // NORMAL, USER_DEFINED and UNUSED pieces → id
    private readonly ByteTrie? _userDefined;
    private readonly SentencePieceEntry[] _pieces;
    private readonly Func<ReadOnlySpan<byte>, int> _pieceToId;

    public BpeEncoder(ByteTrie trie, ByteTrie? userDefined, SentencePieceEntry[] pieces, Func<ReadOnlySpan<byte>, int> pieceToId)
    {
        _trie = trie;
        _userDefined = userDefined is { Count: > 0 } ? userDefined : null;
        _pieces = pieces;
        _pieceToId = pieceToId;
    }

    private struct Symbol
    {
        public int Prev, Next, Start, Length;
        public bool Freeze;
    }

    // Highest score first; equal scores: smallest left index first (SymbolPairComparator).
    private sealed class PairOrder : IComparer<(float Score, int Left)>
    {
        public static readonly PairOrder Instance = new();
        public int Compare((float Score, int Left) a, (float Score, int Left) b)
        {
            if (a.Score != b.Score) return a.Score > b.Score ? -1 : 1;
            return a.Left.CompareTo(b.Left);
        }
    }

    public List<Segment> Encode(byte[] text, int length)
    {
        var output = new List<Segment>();
        if (length == 0) return output;

        var symbols = new List<Symbol>();
        for (int pos = 0; pos < length;)
        {
            int n = _userDefined?.LongestPrefix(text.AsSpan(pos, length - pos)) ?? 0;
            bool freeze = n > 0;
            if (!freeze) n = Math.Min(length - pos, Utf8Util.OneCharLen(text[pos]));
            int index = symbols.Count;
            symbols.Add(new Symbol { Prev = index - 1, Next = pos + n < length ? index + 1 : -1, Start = pos, Length = n, Freeze = freeze });
            pos += n;
        }

        var agenda = new PriorityQueue<(int Left, int Right, int Size), (float Score, int Left)>(PairOrder.Instance);
        Dictionary<string, (int LStart, int LLen, int RStart, int RLen)>? revMerge = null;

        void MaybeAdd(int left, int right)
        {
            if (left == -1 || right == -1) return;
            var l = symbols[left];
            var r = symbols[right];
            if (l.Freeze || r.Freeze) return;
            int size = l.Length + r.Length;
            int id = _trie.Find(text.AsSpan(l.Start, size));
            if (id < 0) return;
            agenda.Enqueue((left, right, size), (_pieces[id].Score, left));
            if (_pieces[id].Type == SentencePieceType.Unused)
            {
                revMerge ??= new Dictionary<string, (int, int, int, int)>(StringComparer.Ordinal);
                revMerge[Encoding.UTF8.GetString(text, l.Start, size)] = (l.Start, l.Length, r.Start, r.Length);
            }
        }

        for (int i = 1; i < symbols.Count; i++) MaybeAdd(i - 1, i);

        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols);
        while (agenda.TryDequeue(out var top, out _))
        {
            span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols);
            ref var l = ref span[top.Left];
            ref var r = ref span[top.Right];
            // Stale entry: one side was merged away or grew since the pair was queued.
            if (l.Length == 0 || r.Length == 0 || l.Length + r.Length != top.Size) continue;
            l.Length += r.Length;
            l.Next = r.Next;
            if (r.Next >= 0) span[r.Next].Prev = top.Left;
            r.Length = 0;
            MaybeAdd(l.Prev, top.Left);
            MaybeAdd(top.Left, l.Next);
        }

        void Resegment(int start, int len)
        {
            int id = _pieceToId(text.AsSpan(start, len));
            if (id < 0 || _pieces[id].Type != SentencePieceType.Unused || revMerge is null
                || !revMerge.TryGetValue(Encoding.UTF8.GetString(text, start, len), out var split))
            {
                output.Add(new Segment(start, len, id));
                return;
            }
            Resegment(split.LStart, split.LLen);
            Resegment(split.RStart, split.RLen);
        }

        for (int i = 0; i != -1; i = symbols[i].Next) Resegment(symbols[i].Start, symbols[i].Length);
        return output;
    }
}
