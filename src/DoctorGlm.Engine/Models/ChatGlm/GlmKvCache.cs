namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// Per-layer past keys (after rotary) and values of one generation (spec §3.1, §4.2, §8): [B, P, nh, d] each, of
/// <see cref="DType"/> (F32, or BF16/F16: half the memory and half the bytes every decoding step's attention reads),
/// P = prefix length + tokens seen so far. A P-Tuning v2 prefix is simply the initial content (its keys carry no
/// rotary), so prefix and cache go through the same "always visible past" path of <see cref="Ops.GlmAttention"/>.
/// Created by <see cref="GlmModel.CreateCache"/> and filled by
/// <see cref="GlmModel.Forward(Tensor, Tensor, Tensor?, GlmKvCache, bool)"/>.
/// </summary>
/// <remarks>
/// The buffers are allocated outside any <see cref="TensorScope"/> (they outlive every step) and grow by doubling,
/// and a step's new keys and values are written straight into their <see cref="Slots"/> by the step's QKV split
/// (rounded to the cache's dtype), with no copy of their own. Attention reads the past where it lies: <see cref="Past"/>
/// is a view of the buffer, not a copy. A batch of prompts of different lengths is left-padded
/// (as HF's tokenizer pads for generation): <see cref="SetLeftPadding"/> records where each row's pads go, and every
/// later step hides those past positions from its queries (the last row of HF's growing attention mask).
/// Multi-turn chat cannot reuse a cache across turns (§4.2: the previous answer becomes bidirectional context), so a
/// turn starts from a fresh cache.
/// </remarks>
public sealed class GlmKvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private int _capacity;
    private int _reservedRows;
    private bool _disposed;
    private int[]? _padCount; // per row: left pads written right after the prefix

    internal GlmKvCache(GlmConfig config, int batch, Device device, DType dtype = DType.F32)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"GlmKvCache: {dtype} is not F32, BF16 or F16", nameof(dtype));
        Config = config;
        Batch = batch;
        Device = device;
        DType = dtype;
        _keys = new Tensor?[config.NumLayers];
        _values = new Tensor?[config.NumLayers];
    }

    /// <summary>
    /// Rows the buffers have room for (they hold at least <see cref="Batch"/>; 0, the default: exactly that). With
    /// spare rows, <see cref="Append"/> writes newcomers
    /// whose text is no longer than the batch's into free rows and copies nothing of the running rows (otherwise both
    /// caches are copied into a new buffer): a continuous-batching server reserves its largest batch
    /// (<see cref="Generation.GlmBatchScheduler"/> does, for the running batch's cache). Every buffer then holds that
    /// many rows, used or not. Raising it reallocates the buffers once; lowering it frees nothing until they are
    /// next reallocated.
    /// </summary>
    public int ReservedRows
    {
        get => _reservedRows;
        set
        {
            ThrowIfDisposed();
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _reservedRows = value;
            if (_capacity == 0 || _keys[0]!.Shape[0] >= AllocatedRows(Batch)) return;
            var shape = new Shape(AllocatedRows(Batch), _capacity, Config.NumAttentionHeads, Config.HeadDim);
            using (TensorScope.Unscoped())
                for (int l = 0; l < Config.NumLayers; l++)
                {
                    _keys[l] = Grow(_keys[l], shape);
                    _values[l] = Grow(_values[l], shape);
                }
        }
    }

    /// <summary>Rows a new buffer for <paramref name="batch"/> live rows gets.</summary>
    private int AllocatedRows(int batch) => Math.Max(batch, _reservedRows);

    /// <summary>The live rows of a buffer (all of it when it has no spare rows).</summary>
    private Tensor LiveRows(Tensor buffer) => buffer.Shape[0] == Batch ? buffer : buffer.Narrow(0, 0, Batch);

    /// <summary>Storage type of the keys and values (see <see cref="GlmModel.KvCacheDType"/>).</summary>
    public DType DType { get; }

    /// <summary>The model's hyper-parameters (layer count, heads, head dim).</summary>
    public GlmConfig Config { get; }

    /// <summary>Batch size B (rows held; <see cref="KeepRows"/> reduces it).</summary>
    public int Batch { get; private set; }

    /// <summary>Where the buffers live.</summary>
    public Device Device { get; }

    /// <summary>Number of past positions P held (prefix length plus tokens appended).</summary>
    public int Length { get; private set; }

    /// <summary>Number of leading positions that came from the P-Tuning prefix (no rotary, never part of the text).</summary>
    public int PrefixLength { get; internal set; }

    /// <summary>Number of text tokens appended so far (<see cref="Length"/> − <see cref="PrefixLength"/>).</summary>
    public int TokenCount => Length - PrefixLength;

    /// <summary>Per row, the number of left-pad positions held after the prefix (all 0 unless <see cref="SetLeftPadding"/> was called).</summary>
    public IReadOnlyList<int> PadLeft => _padCount ?? new int[Batch];

    /// <summary>
    /// Declares that the first tokens written after the prefix (the prompt pass of a left-padded batch, e.g.
    /// <see cref="GlmInputs.PadLeft"/>) begin, in row b, with <paramref name="padLeft"/>[b] pad tokens. The prompt
    /// pass hides them with its own mask; every later forward hides them through the past (<see cref="PastMask"/>).
    /// Call it on a cache that holds no text token yet.
    /// </summary>
    public void SetLeftPadding(IReadOnlyList<int> padLeft)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(padLeft);
        if (padLeft.Count != Batch) throw new ArgumentException($"GlmKvCache.SetLeftPadding: {padLeft.Count} pad counts for a batch of {Batch}", nameof(padLeft));
        if (TokenCount != 0) throw new InvalidOperationException($"GlmKvCache.SetLeftPadding: the cache already holds {TokenCount} tokens; padding must come first");
        for (int b = 0; b < Batch; b++)
            if (padLeft[b] < 0) throw new ArgumentOutOfRangeException(nameof(padLeft), $"GlmKvCache.SetLeftPadding: row {b} has {padLeft[b]} pads");
        _padCount = [.. padLeft];
    }

    /// <summary>
    /// The mask of the past for the next forward: U8 [B, <see cref="Length"/>] with 1 on each row's pad positions
    /// (the prefix and every real token are visible), or null when nothing in the past is a pad.
    /// </summary>
    public Tensor? PastMask() => PastMaskBytes() is { } m ? Tensor.FromArray(m, new Shape(Batch, Length), Device) : null;

    /// <summary><see cref="PastMask"/>'s bytes on the host (null when nothing in the past is a pad), for a caller that
    /// sends them up with the step's other inputs.</summary>
    internal byte[]? PastMaskBytes()
    {
        ThrowIfDisposed();
        if (_padCount is null) return null;
        var m = new byte[Batch * Length];
        bool any = false;
        for (int b = 0; b < Batch; b++)
        {
            int end = Math.Min(Length, PrefixLength + _padCount[b]);
            for (int j = PrefixLength; j < end; j++) { m[b * Length + j] = 1; any = true; }
        }
        return any ? m : null;
    }

    /// <summary>
    /// Keeps only the rows <paramref name="rows"/> (strictly increasing indices), in that order, dropping the others:
    /// a batch whose finished sequences leave it, so later steps compute the live rows only. Each kept row's past
    /// (and its pad count) moves with it; the copy costs one pass over the kept part of the cache. Left padding that
    /// every kept row has (the rows that needed it left) is cut out on the way, so a batch that never empties — a
    /// server under steady load, where newcomers are aligned to the running rows — stays as long as its longest
    /// live row instead of growing with every step.
    /// </summary>
    public void KeepRows(IReadOnlyList<int> rows)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException("GlmKvCache.KeepRows: keep at least one row (dispose the cache to drop them all)", nameof(rows));
        for (int i = 0; i < rows.Count; i++)
            if (rows[i] < 0 || rows[i] >= Batch || (i > 0 && rows[i] <= rows[i - 1]))
                throw new ArgumentOutOfRangeException(nameof(rows), $"GlmKvCache.KeepRows: row indices must increase strictly within [0, {Batch}); got [{string.Join(", ", rows)}]");
        if (rows.Count == Batch) return; // strictly increasing and all of them: the identity
        int[]? pads = _padCount is null ? null : [.. rows.Select(r => _padCount[r])];
        int trim = pads is null ? 0 : Math.Min(pads.Min(), TokenCount); // pads all kept rows share
        if (_capacity > 0)
        {
            var shape = new Shape(AllocatedRows(rows.Count), _capacity, Config.NumAttentionHeads, Config.HeadDim);
            using (TensorScope.Unscoped())
                for (int l = 0; l < Config.NumLayers; l++)
                {
                    _keys[l] = Gather(_keys[l]!, shape, rows, trim);
                    _values[l] = Gather(_values[l]!, shape, rows, trim);
                }
        }
        _padCount = pads is null ? null : [.. pads.Select(p => p - trim)];
        Batch = rows.Count;
        Length -= trim;
    }

    /// <summary>
    /// Appends the rows of <paramref name="other"/> (a cache of the same model: the prompt pass of sequences that
    /// arrived while this batch was decoding) after this cache's rows, so they decode together from the next step on
    /// (continuous batching). The side with fewer text positions is moved right and the gap becomes left padding,
    /// hidden like the rest (<see cref="PastMask"/>); the P-Tuning prefix stays in front. Every row keeps its past,
    /// so each continues exactly as it would alone. Costs one copy of both caches; <paramref name="other"/> is left
    /// as it was (dispose it).
    /// </summary>
    public void Append(GlmKvCache other)
    {
        const string op = "GlmKvCache.Append";
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(other);
        other.ThrowIfDisposed();
        if (ReferenceEquals(other, this)) throw new ArgumentException($"{op}: a cache cannot be appended to itself", nameof(other));
        if (!ReferenceEquals(other.Config, Config) && other.Config != Config) throw new ArgumentException($"{op}: the caches belong to different model configs", nameof(other));
        if (other.Device != Device) throw new ArgumentException($"{op}: the caches are on {Device} and {other.Device}", nameof(other));
        if (other.DType != DType) throw new ArgumentException($"{op}: the caches hold {DType} and {other.DType}", nameof(other));
        if (other.PrefixLength != PrefixLength) throw new ArgumentException($"{op}: the caches start with {PrefixLength} and {other.PrefixLength} prefix positions", nameof(other));
        int text = Math.Max(TokenCount, other.TokenCount), length = PrefixLength + text, batch = Batch + other.Batch;
        int shiftThis = text - TokenCount, shiftOther = text - other.TokenCount;
        int[] pads = [.. PadLeft.Select(p => p + shiftThis), .. other.PadLeft.Select(p => p + shiftOther)];
        if (_capacity > 0 && shiftThis == 0 && _keys[0]!.Shape[0] >= batch)
        {
            // In place: the running rows stay where they are; the newcomers go into free rows, their text moved right
            // to end where the batch's does, the gap before it zeroed (masked, but still multiplied by a probability
            // of 0: stale memory could hold a NaN).
            using (TensorScope.Unscoped())
                for (int l = 0; l < Config.NumLayers; l++)
                {
                    PlaceRows(other._keys[l], other.Length, _keys[l]!, Batch, other.Batch, shiftOther);
                    PlaceRows(other._values[l], other.Length, _values[l]!, Batch, other.Batch, shiftOther);
                }
            _padCount = pads;
            Batch = batch;
            AppendsInPlace++;
            return;
        }
        if (length > 0)
        {
            int cap = Math.Max(length, Math.Max(16, Math.Max(_capacity, other._capacity)));
            var shape = new Shape(AllocatedRows(batch), cap, Config.NumAttentionHeads, Config.HeadDim);
            using (TensorScope.Unscoped())
                for (int l = 0; l < Config.NumLayers; l++)
                {
                    _keys[l] = Merge(_keys[l], other._keys[l], shape, shiftThis, other.Batch, shiftOther, other.Length);
                    _values[l] = Merge(_values[l], other._values[l], shape, shiftThis, other.Batch, shiftOther, other.Length);
                }
            _capacity = cap;
        }
        _padCount = pads;
        Batch = batch;
        Length = length;
    }

    /// <summary>Test switch: fills the spare rows of every buffer with <paramref name="value"/> (NaN: what stale memory may hold).</summary>
    internal void FillSpareRows(float value)
    {
        if (_capacity == 0 || _keys[0]!.Shape[0] == Batch) return;
        foreach (var buffer in _keys.Concat(_values))
        {
            using var spare = buffer!.Narrow(0, Batch, buffer.Shape[0] - Batch);
            using var fill = Tensor.Full(spare.Shape, value, DType, Device);
            spare.Backend.Copy(fill, spare);
        }
    }

    /// <summary>How many <see cref="Append"/> calls wrote into free rows without copying the running ones (tests).</summary>
    internal int AppendsInPlace { get; private set; }

    /// <summary><see cref="CopyRows"/> into rows of a buffer that were not zeroed: the gap before the moved text is zeroed first.</summary>
    private void PlaceRows(Tensor? src, int length, Tensor dst, int row0, int rows, int shift)
    {
        if (shift > 0)
        {
            using var gapRows = dst.Narrow(0, row0, rows);
            using var gap = gapRows.Narrow(1, PrefixLength, shift);
            using var zeros = Tensor.Zeros(gap.Shape, DType, Device);
            gap.Backend.Copy(zeros, gap);
        }
        CopyRows(src, length, dst, row0, rows, shift);
    }

    /// <summary>This cache's rows then <paramref name="otherRows"/> rows of <paramref name="theirs"/> in a new buffer,
    /// each side's text moved right by its shift (its prefix positions stay in front).</summary>
    private Tensor Merge(Tensor? mine, Tensor? theirs, Shape shape, int shiftMine, int otherRows, int shiftTheirs, int theirLength)
    {
        // Zeros, not uninitialised memory: the gap positions are masked, but attention still multiplies their values by
        // a probability of exactly 0, and 0 · NaN (whatever the memory held) would poison the row.
        var t = Tensor.Zeros(shape, DType, Device);
        CopyRows(mine, Length, t, 0, Batch, shiftMine);
        CopyRows(theirs, theirLength, t, Batch, otherRows, shiftTheirs);
        mine?.Dispose();
        return t;
    }

    /// <summary>Rows [0, rows) of <paramref name="src"/> (its first <paramref name="length"/> positions) into rows
    /// [row0, row0 + rows) of <paramref name="dst"/>: the prefix in place, the text <paramref name="shift"/> positions later.</summary>
    private void CopyRows(Tensor? src, int length, Tensor dst, int row0, int rows, int shift)
    {
        if (src is null || length == 0) return;
        using var dstRows = dst.Narrow(0, row0, rows);
        using var srcRows = src.Narrow(0, 0, rows);
        Span<(int From, int To, int Count)> parts = [(0, 0, Math.Min(PrefixLength, length)), (PrefixLength, PrefixLength + shift, length - PrefixLength)];
        foreach (var (from, to, count) in parts)
        {
            if (count <= 0) continue;
            using var s = srcRows.Narrow(1, from, count);
            using var d = dstRows.Narrow(1, to, count);
            d.Backend.Copy(s, d);
        }
    }

    /// <summary>Rows <paramref name="rows"/> of <paramref name="old"/> into a new buffer: the prefix in place, the text
    /// after its first <paramref name="trim"/> positions (common pads) moved left by that much.</summary>
    private Tensor Gather(Tensor old, Shape shape, IReadOnlyList<int> rows, int trim)
    {
        var t = Tensor.Empty(shape, DType, Device);
        Span<(int From, int To, int Count)> parts = [(0, 0, PrefixLength), (PrefixLength + trim, PrefixLength, TokenCount - trim)];
        // Consecutive kept rows move as one block: on a GPU each copy is a launch, and a row leaving a batch of 32
        // leaves two runs, not 31 rows (per part and layer).
        for (int i = 0; i < rows.Count;)
        {
            int run = 1;
            while (i + run < rows.Count && rows[i + run] == rows[i] + run) run++;
            using var srcRow = old.Narrow(0, rows[i], run);
            using var dstRow = t.Narrow(0, i, run);
            i += run;
            foreach (var (from, to, count) in parts)
            {
                if (count <= 0) continue;
                using var src = srcRow.Narrow(1, from, count);
                using var dst = dstRow.Narrow(1, to, count);
                dst.Backend.Copy(src, dst);
            }
        }
        old.Dispose();
        return t;
    }

    /// <summary>Layer <paramref name="layer"/>'s past keys and values as [B, P, nh, d] views, or nulls while empty.</summary>
    public (Tensor? Keys, Tensor? Values) Past(int layer)
    {
        ThrowIfDisposed();
        if (Length == 0) return (null, null);
        return (LiveRows(_keys[layer]!).Narrow(1, 0, Length), LiveRows(_values[layer]!).Narrow(1, 0, Length));
    }

    /// <summary>Writes layer <paramref name="layer"/>'s new keys and values [B, S, nh, d] after the current past;
    /// <see cref="Advance"/> commits them once every layer has been written.</summary>
    internal void Write(int layer, Tensor keys, Tensor values)
    {
        int s = keys.Shape[1];
        Reserve(s);
        var (k, v) = Slots(layer, s);
        using (k) k.Backend.Copy(keys, k);
        using (v) v.Backend.Copy(values, v);
    }

    /// <summary>
    /// Makes room for <paramref name="count"/> more positions before a step takes <see cref="Past"/> views: growing
    /// moves the buffers, so it must not happen between reading the past and writing the <see cref="Slots"/>.
    /// </summary>
    internal void Reserve(int count)
    {
        ThrowIfDisposed();
        EnsureCapacity(Length + count);
    }

    /// <summary>
    /// Layer <paramref name="layer"/>'s slots for the next <paramref name="count"/> positions after the past, as
    /// [B, count, nh, d] views to write the new keys and values into (<see cref="Reserve"/> first; <see cref="Advance"/>
    /// commits them once every layer has been written).
    /// </summary>
    internal (Tensor Keys, Tensor Values) Slots(int layer, int count)
    {
        ThrowIfDisposed();
        if (Length + count > _capacity)
            throw new InvalidOperationException($"GlmKvCache.Slots: {count} positions after {Length} exceed the reserved {_capacity}; call Reserve before taking the past");
        using var kr = _keys[layer]!.Narrow(0, 0, Batch); // the buffer may hold spare rows (ReservedRows)
        using var vr = _values[layer]!.Narrow(0, 0, Batch);
        return (kr.Narrow(1, Length, count), vr.Narrow(1, Length, count));
    }

    /// <summary>Makes the last <paramref name="count"/> written positions part of the past.</summary>
    internal void Advance(int count) => Length += count;

    private void EnsureCapacity(int needed)
    {
        if (needed <= _capacity) return;
        int cap = Math.Max(needed, Math.Max(16, 2 * _capacity));
        var shape = new Shape(AllocatedRows(Batch), cap, Config.NumAttentionHeads, Config.HeadDim);
        using (TensorScope.Unscoped())
            for (int i = 0; i < Config.NumLayers; i++)
            {
                _keys[i] = Grow(_keys[i], shape);
                _values[i] = Grow(_values[i], shape);
            }
        _capacity = cap;
    }

    private Tensor Grow(Tensor? old, Shape shape)
    {
        var t = Tensor.Empty(shape, DType, Device);
        if (old is null) return t;
        // Everything written so far (committed or pending for this step) of the live rows moves over.
        int used = Math.Min(old.Shape[1], _capacity);
        using (var oldRows = old.Narrow(0, 0, Batch))
        using (var newRows = t.Narrow(0, 0, Batch))
        using (var src = oldRows.Narrow(1, 0, used))
        using (var dst = newRows.Narrow(1, 0, used))
            dst.Backend.Copy(src, dst);
        old.Dispose();
        return t;
    }

    private void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(GlmKvCache));
    }

    /// <summary>Releases the buffers.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose();
            _values[i]?.Dispose();
        }
    }
}
