namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// A byte-wise trie from UTF-8 keys to non-negative values. It answers the same questions as the Darts
/// double-array SentencePiece builds for its pieces (exact match, step-by-step traversal for prefix
/// search) — the results, not the layout, are what parity needs.
/// </summary>
internal sealed class ByteTrie
{
    // One dictionary for all edges: key = (node << 8) | byte. Simpler than per-node maps and compact
    // enough for a 130k-piece vocabulary.
    private readonly Dictionary<long, int> _edges = new();
    private readonly List<int> _values = new() { -1 };

    public int Count { get; private set; }

    /// <summary>Adds a key; returns false (and keeps the old value) if it is already present.</summary>
    public bool Add(ReadOnlySpan<byte> key, int value)
    {
        int node = 0;
        foreach (byte b in key)
        {
            long e = ((long)node << 8) | b;
            if (!_edges.TryGetValue(e, out int next))
            {
                next = _values.Count;
                _values.Add(-1);
                _edges.Add(e, next);
            }
            node = next;
        }
        if (_values[node] >= 0) return false;
        _values[node] = value;
        Count++;
        return true;
    }

    /// <summary>Follows one byte from <paramref name="node"/> (the root is 0); false when there is no edge.</summary>
    public bool Step(ref int node, byte b)
    {
        if (!_edges.TryGetValue(((long)node << 8) | b, out int next)) return false;
        node = next;
        return true;
    }

    /// <summary>The value stored at a node, or -1 when no key ends there.</summary>
    public int ValueAt(int node) => _values[node];

    /// <summary>The value of an exact key, or -1.</summary>
    public int Find(ReadOnlySpan<byte> key)
    {
        int node = 0;
        foreach (byte b in key)
            if (!Step(ref node, b)) return -1;
        return _values[node];
    }

    /// <summary>Length of the longest key that is a prefix of <paramref name="text"/>, or 0.</summary>
    public int LongestPrefix(ReadOnlySpan<byte> text)
    {
        int node = 0, best = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!Step(ref node, text[i])) break;
            if (_values[node] >= 0) best = i + 1;
        }
        return best;
    }
}
