using System.Collections.Concurrent;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Backends.Cuda;

// The kernel families of IBackend (one section per IBackend.Family.cs), each a thin launch of kernels/<family>.cu.
// Argument validation that the CPU kernels do (ids, labels, non-finite losses) is done here with the same
// exception types and messages.
public sealed unsafe partial class CudaBackend
{
    // ---------------------------------------------------------------- LayerNorm

    /// <summary>Threads per block for row kernels (a multiple of 32 for the warp reductions).</summary>
    private const int RowBlock = 256;

    /// <summary>Rows per partial sum of dweight/dbias: the CPU's constant, so both sum in the same order.</summary>
    private const int LayerNormRowsPerChunk = 64;

    /// <inheritdoc />
    public void LayerNormForward(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd, Tensor? copy = null)
    {
        LayerNormArguments.CheckCopy(y, copy);
        long h = weight.NumElements, rows = x.NumElements / h;
        if (rows == 0) return;
        using var a = new KernelArgs().Add(Ptr(x)).Add((int)x.DType).Add(Ptr(weight)).Add(Ptr(bias)).Add(eps).Add(Ptr(y)).Add((int)y.DType)
            .Add(PtrOrNull(copy)).Add((int)(copy?.DType ?? DType.F32)).Add(Ptr(mean)).Add(Ptr(rstd)).Add(h);
        Launch("layernorm.cu", "layernorm_forward", ((uint)rows, 1, 1), (RowBlock, 1, 1), 0, a);
    }

    /// <inheritdoc />
    public void LayerNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        long h = weight.NumElements, rows = x.NumElements / h;
        if (dx is not null && rows > 0)
        {
            using var a = new KernelArgs().Add(Ptr(dy)).Add(Ptr(x)).Add((int)x.DType).Add(Ptr(weight)).Add(Ptr(mean)).Add(Ptr(rstd)).Add(Ptr(dx)).Add(h);
            Launch("layernorm.cu", "layernorm_backward_dx", ((uint)rows, 1, 1), (RowBlock, 1, 1), 0, a);
        }
        if (dweight is null && dbias is null) return;
        long chunks = Math.Max(1, (rows + LayerNormRowsPerChunk - 1) / LayerNormRowsPerChunk);
        if (chunks > 65535) throw new NotSupportedException($"LayerNormBackward: {rows} rows exceed the kernel's {65535 * LayerNormRowsPerChunk}-row limit");
        using var pw = dweight is null ? null : Temp(chunks * h * sizeof(double));
        using var pb = dbias is null ? null : Temp(chunks * h * sizeof(double));
        if (rows == 0)
        {
            if (dweight is not null) Fill(dweight, 0f);
            if (dbias is not null) Fill(dbias, 0f);
            return;
        }
        using (var a = new KernelArgs().Add(Ptr(dy)).Add(Ptr(x)).Add((int)x.DType).Add(Ptr(mean)).Add(Ptr(rstd))
                   .Add(pw?.Pointer ?? 0UL).Add(pb?.Pointer ?? 0UL).Add(rows).Add(h).Add(LayerNormRowsPerChunk))
            Launch("layernorm.cu", "layernorm_backward_partials", ((uint)((h + RowBlock - 1) / RowBlock), (uint)chunks, 1), (RowBlock, 1, 1), 0, a);
        foreach (var (part, dst) in new[] { (pw, dweight), (pb, dbias) })
        {
            if (part is null || dst is null) continue;
            using var r = new KernelArgs().Add(part.Pointer).Add(Ptr(dst)).Add(chunks).Add(h);
            LaunchElementwise("layernorm.cu", "layernorm_backward_reduce", h, r);
        }
    }

    // ---------------------------------------------------------------- GELU, dropout

    /// <inheritdoc />
    public void GeluForward(Tensor x, Tensor y) => Gelu(x, null, null, y);

    /// <inheritdoc />
    public void GeluBackward(Tensor x, Tensor dy, Tensor dx) => Gelu(x, null, dy, dx);

    /// <inheritdoc />
    public void BiasGeluForward(Tensor x, Tensor bias, Tensor y) => Gelu(x, bias, null, y);

    /// <inheritdoc />
    public void BiasGeluBackward(Tensor x, Tensor bias, Tensor dy, Tensor dx) => Gelu(x, bias, dy, dx);

    /// <summary>gelu.cu's two kernels: forward (dy null) or backward, of x or of x + bias (bias null: none).</summary>
    private void Gelu(Tensor x, Tensor? bias, Tensor? dy, Tensor output)
    {
        long n = output.NumElements, f = bias?.NumElements ?? 1;
        using var a = new KernelArgs().Add(Ptr(x)).Add((int)x.DType).Add(PtrOrNull(bias));
        if (dy is not null) a.Add(Ptr(dy));
        a.Add(Ptr(output)).Add((int)output.DType).Add(n).Add(f);
        LaunchElementwise("gelu.cu", dy is null ? "gelu_forward" : "gelu_backward", n, a);
    }

    /// <inheritdoc />
    public void TanhForward(Tensor x, Tensor y)
    {
        using var a = new KernelArgs().Add(Ptr(x)).Add(Ptr(y)).Add(y.NumElements);
        LaunchElementwise("tanh.cu", "tanh_forward", y.NumElements, a);
    }

    /// <inheritdoc />
    public void TanhBackward(Tensor y, Tensor dy, Tensor dx)
    {
        using var a = new KernelArgs().Add(Ptr(y)).Add(Ptr(dy)).Add(Ptr(dx)).Add(dx.NumElements);
        LaunchElementwise("tanh.cu", "tanh_backward", dx.NumElements, a);
    }

    /// <inheritdoc />
    public void DropoutForward(Tensor x, Tensor y, float p, ulong stream)
    {
        float scale = 1f / (1f - p); // the CPU's fp32 expression, so kept values are bit-identical
        using var a = new KernelArgs().Add(Ptr(x)).Add((int)x.DType).Add(Ptr(y)).Add((int)y.DType).Add(p).Add(scale).Add(stream).Add(y.NumElements);
        LaunchElementwise("dropout.cu", "dropout_forward", y.NumElements, a);
    }

    // ---------------------------------------------------------------- embedding

    /// <inheritdoc />
    public void EmbeddingForward(Tensor ids, Tensor table, Tensor y, bool idsChecked = false)
    {
        int v = table.Shape[0];
        long h = table.Shape[1], n = ids.NumElements;
        if (n == 0) return;
        // A decoding step's ids were checked by the host as it uploaded them: the device check's round trip is skipped.
        if (!idsChecked) CheckIds(ids, v, n);
        using var f = new KernelArgs().Add(Ptr(ids)).Add(Ptr(table)).Add((int)table.DType).Add(Ptr(y)).Add(n).Add(h);
        LaunchElementwise("embedding.cu", "embedding_forward", n * h, f);
    }

    /// <summary>
    /// Throws naming the first id outside [0, V): validated on the device (one atomicMin), then a single position
    /// read back, so the ids themselves never cross the bus; the price is one round trip.
    /// </summary>
    private void CheckIds(Tensor ids, int v, long n)
    {
        using var slot = Temp(sizeof(ulong));
        Upload<ulong>([(ulong)n], slot.Pointer);
        using (var a = new KernelArgs().Add(Ptr(ids)).Add(n).Add(v).Add(slot.Pointer))
            LaunchElementwise("embedding.cu", "embedding_validate", n, a);
        long first = (long)Download<ulong>(slot.Pointer, 1)[0];
        if (first < n)
        {
            int id = Download<int>(Ptr(ids) + (ulong)(first * sizeof(int)), 1)[0];
            throw new ArgumentOutOfRangeException(nameof(ids), id, $"Embedding: ids[{first}] = {id} is outside the table's {v} rows");
        }
    }

    /// <inheritdoc />
    public void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dtable)
    {
        long h = dtable.Shape[1], n = ids.NumElements;
        Fill(dtable, 0f);
        using var a = new KernelArgs().Add(Ptr(ids)).Add(Ptr(dy)).Add(Ptr(dtable)).Add(n).Add(h);
        LaunchElementwise("embedding.cu", "embedding_backward", h, a);
    }

    // ---------------------------------------------------------------- cross-entropy

    /// <inheritdoc />
    public void CrossEntropyForward(Tensor logits, Tensor labels, int ignoreIndex, Tensor rowLoss, Tensor lse)
    {
        int n = logits.Shape[0], v = logits.Shape[1];
        if (n == 0) return;
        // Labels were validated by Ops.CrossEntropy (one small host copy there, shared by every backend).
        using var a = new KernelArgs().Add(Ptr(logits)).Add(Ptr(labels)).Add(ignoreIndex).Add(Ptr(rowLoss)).Add(Ptr(lse)).Add((long)v);
        Launch("cross_entropy.cu", "cross_entropy_forward", ((uint)n, 1, 1), (RowBlock * 2, 1, 1), 0, a);
    }

    /// <inheritdoc />
    public void CrossEntropyBackward(Tensor logits, Tensor labels, Tensor lse, int ignoreIndex, Tensor dloss, float invCount, Tensor dlogits)
    {
        long n = logits.Shape[0], v = logits.Shape[1];
        using var a = new KernelArgs().Add(Ptr(logits)).Add(Ptr(labels)).Add(Ptr(lse)).Add(ignoreIndex).Add(Ptr(dloss)).Add(invCount)
            .Add(Ptr(dlogits)).Add(n).Add(v);
        LaunchElementwise("cross_entropy.cu", "cross_entropy_backward", n * v, a);
    }

    // ---------------------------------------------------------------- sampling candidates

    /// <summary>Threads per row of select_candidates (its SELECT_THREADS: the kernel's shared arrays are sized by it).</summary>
    private const int SelectThreads = 512;

    /// <inheritdoc />
    public void SelectCandidates(Tensor scores, Tensor penaltyIds, Tensor settings, Tensor topK, Tensor candidateIds, Tensor candidateScores, Tensor counts)
    {
        SamplingArguments.Check(scores, penaltyIds, settings, topK, candidateIds, candidateScores, counts);
        int rows = scores.Shape[0], l = penaltyIds.Shape[1], capacity = candidateIds.Shape[1];
        long v = scores.Shape[1];
        if (rows == 0) return;
        using var a = new KernelArgs().Add(Ptr(scores)).Add(Ptr(penaltyIds)).Add(l).Add(Ptr(settings)).Add(Ptr(topK))
            .Add(Ptr(candidateIds)).Add(Ptr(candidateScores)).Add(Ptr(counts)).Add(v).Add(capacity);
        Launch("sampling.cu", "select_candidates", ((uint)rows, 1, 1), (SelectThreads, 1, 1), 0, a);
    }

    // ---------------------------------------------------------------- rotary

    private readonly ConcurrentDictionary<int, Tensor> _invFreq = new();

    /// <inheritdoc />
    public void Rotary2D(Tensor x, Tensor positionIds, Tensor y, bool inverse)
    {
        int batch = x.Shape[0], seq = x.Shape[1], heads = x.Shape[2], d = x.Shape[3];
        var inv = RotaryInvFreq(d);
        long pairs = (long)batch * seq * heads * (d / 2);
        using var a = new KernelArgs().Add(Ptr(x)).Add((int)x.DType).Add(x.Strides[0]).Add(x.Strides[1]).Add(x.Strides[2])
            .Add(Ptr(positionIds)).Add(Ptr(y)).Add((int)y.DType).Add(y.Strides[0]).Add(y.Strides[1]).Add(y.Strides[2]).Add(Ptr(inv))
            .Add(batch).Add(seq).Add(heads).Add(d).Add(inverse ? 1 : 0);
        LaunchElementwise("rotary.cu", "rotary2d", pairs, a);
    }

    /// <summary>θ_j for head size d from the CPU backend's own function (fp16-rounded, as doubles), uploaded once: both backends rotate by identical angles.</summary>
    private Tensor RotaryInvFreq(int d) => _invFreq.GetOrAdd(d / 2, r =>
    {
        using var _ = TensorScope.Unscoped();
        var f = CpuBackend.RotaryInvFreq(r);
        var bytes = new byte[f.Length * sizeof(double)];
        Buffer.BlockCopy(f, 0, bytes, 0, bytes.Length);
        return Tensor.FromBytes(bytes, new Shape(Math.Max(1, f.Length * 2)), DType.F32, Device); // 2 floats per double
    });

    /// <inheritdoc />
    public void SplitQkvRotary(Tensor qkv, Tensor? bias, Tensor positionIds, Tensor q, Tensor k, Tensor v)
    {
        RotaryArguments.CheckSplit(qkv, bias, positionIds, q, k, v);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        long pairs = (long)batch * seq * heads * (d / 2);
        if (pairs == 0) return;
        var inv = RotaryInvFreq(d);
        using var a = new KernelArgs().Add(Ptr(qkv)).Add((int)qkv.DType).Add(qkv.Strides[0]).Add(qkv.Strides[1]).Add(qkv.Strides[2])
            .Add(PtrOrNull(bias)).Add(Ptr(positionIds)).Add(Ptr(q)).Add(q.Strides[0]).Add(q.Strides[1]).Add(q.Strides[2])
            .Add(Ptr(k)).Add(Ptr(v)).Add(k.Strides[0]).Add(k.Strides[1]).Add(k.Strides[2]).Add((int)q.DType)
            .Add(Ptr(inv)).Add(batch).Add(seq).Add(heads).Add(d);
        LaunchElementwise("rotary.cu", "split_qkv_rotary", pairs, a);
    }

    // ---------------------------------------------------------------- optimizers

    /// <inheritdoc />
    public void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, double lr, double beta1, double beta2,
        double eps, double weightDecay, double biasCorrection1, double biasCorrection2)
    {
        // The same fp32 factors, derived in double, as CpuBackend.AdamWStep.
        using var a = new KernelArgs().Add(Ptr(param)).Add(Ptr(grad)).Add(Ptr(expAvg)).Add(Ptr(expAvgSq)).Add(param.NumElements)
            .Add((float)(1.0 - lr * weightDecay)).Add((float)beta1).Add((float)(1.0 - beta1)).Add((float)beta2).Add((float)(1.0 - beta2))
            .Add((float)(lr / biasCorrection1)).Add((float)Math.Sqrt(biasCorrection2)).Add((float)eps);
        LaunchElementwise("optim.cu", "adamw_step", param.NumElements, a);
    }

    /// <inheritdoc />
    public void LionStep(Tensor param, Tensor grad, Tensor expAvg, double lr, double beta1, double beta2, double weightDecay)
    {
        using var a = new KernelArgs().Add(Ptr(param)).Add(Ptr(grad)).Add(Ptr(expAvg)).Add(param.NumElements)
            .Add((float)(1.0 - lr * weightDecay)).Add((float)lr).Add((float)beta1).Add((float)(1.0 - beta1)).Add((float)beta2).Add((float)(1.0 - beta2));
        LaunchElementwise("optim.cu", "lion_step", param.NumElements, a);
    }

    // Elements per chunk of a multi-tensor launch: big enough that a block's loop amortises its table reads,
    // small enough that a few large tensors still spread over every SM.
    private const long MultiTensorChunk = 1 << 16;

    /// <summary>
    /// The device-side tables of a multi-tensor launch, uploaded in one copy: per tensor, its pointer columns (e.g.
    /// p, g, m, v), its length and float columns (e.g. its step size); per chunk, its tensor and start element.
    /// </summary>
    private sealed class TensorTable(Scratch buffer, byte[] content, ulong[] pointerColumns, ulong lengths, ulong[] floatColumns, ulong chunkTensor, ulong chunkStart, int chunks)
    {
        public Scratch Buffer { get; } = buffer;
        public byte[] Content { get; } = content;
        public ulong[] PointerColumns { get; } = pointerColumns;
        public ulong Lengths { get; } = lengths;
        public ulong[] FloatColumns { get; } = floatColumns;
        public ulong ChunkTensor { get; } = chunkTensor;
        public ulong ChunkStart { get; } = chunkStart;
        public int Chunks { get; } = chunks;
    }

    /// <summary>
    /// Recently used tables, newest last. A training step updates the same tensors every step, so its table is found
    /// here by content and the step launches without an upload (an upload from pageable host memory waits for the
    /// stream to drain). A table is only ever replaced, never changed, so a hit is exact by construction.
    /// </summary>
    private readonly List<TensorTable> _tables = new();
    private const int CachedTables = 8;

    /// <summary>The table for these tensors (cached: the caller does not own it).</summary>
    private TensorTable Table(IReadOnlyList<long> lengths, ulong[][] pointers, float[][] floats)
    {
        int count = lengths.Count;
        var chunkTensor = new List<int>();
        var chunkStart = new List<long>();
        for (int t = 0; t < count; t++)
            for (long s = 0; s < lengths[t]; s += MultiTensorChunk) { chunkTensor.Add(t); chunkStart.Add(s); }
        // 8-byte columns first, then 4-byte ones: every column stays naturally aligned.
        long bytes = (pointers.Length + 1) * 8L * count + 8L * chunkStart.Count + floats.Length * 4L * count + 4L * chunkTensor.Count;
        var blob = new byte[Math.Max(bytes, 8)];
        long at = 0;
        long Put<T>(ReadOnlySpan<T> values) where T : unmanaged
        {
            long start = at;
            var b = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values);
            b.CopyTo(blob.AsSpan((int)at));
            at += b.Length;
            return start;
        }
        var pointerAt = pointers.Select(c => Put<ulong>(c)).ToArray();
        long lengthsAt = Put<long>(lengths.ToArray());
        long startAt = Put<long>(chunkStart.ToArray());
        var floatAt = floats.Select(c => Put<float>(c)).ToArray();
        long tensorAt = Put<int>(chunkTensor.ToArray());
        lock (_tables)
        {
            int hit = _tables.FindIndex(t => t.Content.AsSpan().SequenceEqual(blob));
            if (hit >= 0)
            {
                var found = _tables[hit];
                _tables.RemoveAt(hit);
                _tables.Add(found);
                return found;
            }
            var buffer = Temp(blob.Length);
            Upload<byte>(blob, buffer.Pointer);
            ulong b0 = buffer.Pointer;
            var table = new TensorTable(buffer, blob, pointerAt.Select(o => b0 + (ulong)o).ToArray(), b0 + (ulong)lengthsAt,
                floatAt.Select(o => b0 + (ulong)o).ToArray(), b0 + (ulong)tensorAt, b0 + (ulong)startAt, chunkTensor.Count);
            _tables.Add(table);
            if (_tables.Count > CachedTables)
            {
                // Back to the pool; kernels already queued that read it run before any later user (stream order).
                _tables[0].Buffer.Dispose();
                _tables.RemoveAt(0);
            }
            return table;
        }
    }

    /// <summary>Returns the cached multi-tensor tables to the pool.</summary>
    private void ReleaseTables()
    {
        lock (_tables)
        {
            foreach (var t in _tables) t.Buffer.Dispose();
            _tables.Clear();
        }
    }

    private uint MultiTensorGrid(int chunks) => (uint)Math.Clamp(chunks, 1, _multiprocessors * 8);

    /// <inheritdoc />
    public void AdamWStep(IReadOnlyList<AdamWUpdate> updates, double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        if (updates.Count == 0) return;
        // Per parameter, the same fp32 factors as the single-tensor kernel derives from its own step count; when every
        // parameter is at the same step (the usual case) they go as two scalars and the table stays the same.
        var stepSize = updates.Select(u => (float)(lr / u.BiasCorrection1)).ToArray();
        var bc2Sqrt = updates.Select(u => (float)Math.Sqrt(u.BiasCorrection2)).ToArray();
        bool uniform = stepSize.All(x => x.Equals(stepSize[0])) && bc2Sqrt.All(x => x.Equals(bc2Sqrt[0]));
        var table = Table(updates.Select(u => u.Param.NumElements).ToArray(),
            [
                updates.Select(u => Ptr(u.Param)).ToArray(), updates.Select(u => Ptr(u.Grad)).ToArray(),
                updates.Select(u => Ptr(u.ExpAvg)).ToArray(), updates.Select(u => Ptr(u.ExpAvgSq)).ToArray(),
            ],
            uniform ? [] : [stepSize, bc2Sqrt]);
        if (table.Chunks == 0) return;
        var c = table.PointerColumns;
        using var a = new KernelArgs().Add(c[0]).Add(c[1]).Add(c[2]).Add(c[3]).Add(table.Lengths)
            .Add(uniform ? 0UL : table.FloatColumns[0]).Add(uniform ? 0UL : table.FloatColumns[1]).Add(stepSize[0]).Add(bc2Sqrt[0]).Add(table.ChunkTensor).Add(table.ChunkStart).Add(table.Chunks).Add(MultiTensorChunk)
            .Add((float)(1.0 - lr * weightDecay)).Add((float)beta1).Add((float)(1.0 - beta1)).Add((float)beta2).Add((float)(1.0 - beta2)).Add((float)eps);
        Launch("optim.cu", "adamw_multi", (MultiTensorGrid(table.Chunks), 1, 1), (Block, 1, 1), 0, a);
    }

    /// <inheritdoc />
    public void LionStep(IReadOnlyList<LionUpdate> updates, double lr, double beta1, double beta2, double weightDecay)
    {
        if (updates.Count == 0) return;
        var table = Table(updates.Select(u => u.Param.NumElements).ToArray(),
            [updates.Select(u => Ptr(u.Param)).ToArray(), updates.Select(u => Ptr(u.Grad)).ToArray(), updates.Select(u => Ptr(u.ExpAvg)).ToArray()], []);
        if (table.Chunks == 0) return;
        var c = table.PointerColumns;
        using var a = new KernelArgs().Add(c[0]).Add(c[1]).Add(c[2]).Add(table.Lengths)
            .Add(table.ChunkTensor).Add(table.ChunkStart).Add(table.Chunks).Add(MultiTensorChunk)
            .Add((float)(1.0 - lr * weightDecay)).Add((float)lr).Add((float)beta1).Add((float)(1.0 - beta1)).Add((float)beta2).Add((float)(1.0 - beta2));
        Launch("optim.cu", "lion_multi", (MultiTensorGrid(table.Chunks), 1, 1), (Block, 1, 1), 0, a);
    }

    /// <inheritdoc />
    public double SumOfSquares(IReadOnlyList<Tensor> xs)
    {
        if (xs.Count == 0) return 0;
        var table = Table(xs.Select(x => x.NumElements).ToArray(), [xs.Select(x => Ptr(x)).ToArray()], []);
        if (table.Chunks == 0) return 0;
        uint grid = MultiTensorGrid(table.Chunks);
        using var partials = Temp(grid * sizeof(double));
        using var a = new KernelArgs().Add(table.PointerColumns[0]).Add(table.Lengths).Add(table.ChunkTensor).Add(table.ChunkStart)
            .Add(table.Chunks).Add(MultiTensorChunk).Add(partials.Pointer);
        Launch("optim.cu", "sumsq_multi", (grid, 1, 1), (Block, 1, 1), 0, a);
        double s = 0;
        foreach (var p in Download<double>(partials.Pointer, grid)) s += p;
        return s;
    }

    // ---------------------------------------------------------------- attention

    /// <summary>Largest square tile whose backward shared memory (the biggest of the three kernels) fits the default 48 KiB.</summary>
    internal static int AttentionTile(int d)
    {
        for (int t = 32; t > 1; t /= 2)
            if (AttentionSharedBytes(t, d, backwardKeys: true) <= 48 * 1024) return t;
        return 1;
    }

    internal static int AttentionSharedBytes(int t, int d, bool backwardKeys) =>
        backwardKeys ? (6 * t * d + 2 * t * t + 3 * t) * sizeof(float) : (5 * t * d + 2 * t * t + 3 * t) * sizeof(float);

    private const int AttentionThreads = 128;

    /// <summary>attention.cu's DECODE_WARPS (warps per block of attention_decode) and DECODE_DIMS (head dims per lane: d ≤ 128).</summary>
    private const int DecodeWarps = 16, DecodeDims = 4;

    /// <summary>Keys a split of attention_decode streams at least (below that, the combine costs more than it saves).</summary>
    private const int DecodeMinKeysPerSplit = 256;

    /// <summary>Test switch: the number of key splits of a decoding step's attention (null: chosen from the grid).</summary>
    internal int? DecodeAttentionSplits { get; set; }

    /// <summary>
    /// attention_decode over (heads, batch, splits) blocks. With few rows and heads (batch 1: 32 blocks for 132 SMs)
    /// the past is cut into ranges of at least <see cref="DecodeMinKeysPerSplit"/> keys so that about two blocks per
    /// SM stream it, and attention_decode_combine merges the ranges.
    /// </summary>
    private void DecodeAttention(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, int pdt, long pStride, Tensor? mask, Tensor? prefixMask,
        float scale, float maskedValue, Tensor output, Tensor lse)
    {
        int batch = q.Shape[0], heads = q.Shape[2], d = q.Shape[3], nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + 1;
        long rows = (long)batch * heads;
        int splits = DecodeAttentionSplits ?? (int)Math.Clamp((2L * _multiprocessors + rows - 1) / rows, 1, Math.Max(1, total / DecodeMinKeysPerSplit));
        splits = Math.Clamp(splits, 1, total);
        int chunk = (total + splits - 1) / splits;
        splits = (total + chunk - 1) / chunk; // no empty split
        using var pm = splits > 1 ? Temp(rows * splits * sizeof(float)) : null;
        using var pl = splits > 1 ? Temp(rows * splits * sizeof(float)) : null;
        using var po = splits > 1 ? Temp(rows * splits * d * sizeof(float)) : null;
        using (var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(pdt)
                   .Add(pStride).Add(PtrOrNull(mask)).Add(PtrOrNull(prefixMask)).Add(nPrefix).Add(heads).Add(d).Add(scale).Add(maskedValue).Add(chunk)
                   .Add(Ptr(output)).Add(Ptr(lse)).Add(pm?.Pointer ?? 0UL).Add(pl?.Pointer ?? 0UL).Add(po?.Pointer ?? 0UL))
            Launch("attention.cu", "attention_decode", ((uint)heads, (uint)batch, (uint)splits), (DecodeWarps * 32, 1, 1), 0, a);
        if (splits == 1) return;
        using var c = new KernelArgs().Add(pm!.Pointer).Add(pl!.Pointer).Add(po!.Pointer).Add(splits).Add(heads).Add(d).Add((int)q.DType)
            .Add(Ptr(output)).Add(Ptr(lse));
        Launch("attention.cu", "attention_decode_combine", ((uint)heads, (uint)batch, 1), (128, 1, 1), 0, c);
    }

    /// <summary>
    /// Which attention kernels this backend runs: by default <see cref="CudaAttentionKernel.Auto"/> (tensor cores for
    /// BF16 activations, the fp32 kernels, which match the CPU backend to fp32 rounding, otherwise).
    /// <see cref="CudaAttentionKernel.TensorCores"/> also takes F32 and F16 calls, rounding them to bf16 for the
    /// products; <see cref="CudaAttentionKernel.Fp32"/> keeps every product in fp32. A forward and its backward must
    /// run under the same setting. Decoding steps (one query) run <c>attention_decode</c> under every setting.
    /// </summary>
    public CudaAttentionKernel AttentionKernel { get; set; } = CudaAttentionKernel.Auto;

    private long _tensorCoreAttentionForwards;

    /// <summary>How many attention forwards ran on the tensor-core kernels so far (tests check which kernel set a model's pass took).</summary>
    internal long TensorCoreAttentionForwards => Interlocked.Read(ref _tensorCoreAttentionForwards);

    // attention_mma.cu's tiles: ATT_BQ query rows per forward/dQ block, ATT_BK keys per tile and dK/dV block,
    // ATT_BQ_DKV query rows per dK/dV step; bf16 rows padded by 8 elements.
    private const int MmaQueryRows = 64, MmaKeyRows = 64, MmaKeyPassQueryRows = 32;

    internal enum MmaAttentionPass { Forward, BackwardQuery, BackwardKeys }

    /// <summary>Dynamic shared memory of an attention_mma.cu kernel (the layout at the top of each kernel).</summary>
    internal static uint MmaAttentionSharedBytes(MmaAttentionPass pass, int d)
    {
        int row = (d + 8) * sizeof(ushort);
        return (uint)(pass switch
        {
            MmaAttentionPass.Forward => (MmaQueryRows + 2 * MmaKeyRows) * row + MmaQueryRows * MmaKeyRows,
            MmaAttentionPass.BackwardQuery => (2 * MmaQueryRows + 2 * MmaKeyRows) * row + MmaQueryRows * MmaKeyRows,
            _ => (2 * MmaKeyRows + 2 * MmaKeyPassQueryRows) * row + 3 * MmaKeyPassQueryRows * sizeof(float) + MmaKeyPassQueryRows * MmaKeyRows,
        });
    }

    /// <summary>
    /// Whether the tensor-core kernels take this call: selected (<see cref="CudaAttentionKernel.TensorCores"/>, or
    /// <see cref="CudaAttentionKernel.Auto"/> with BF16 activations <paramref name="act"/>), head size 64 or 128,
    /// sm_80+, and rows the kernels' 16-byte vector loads can read.
    /// </summary>
    private bool UseTensorCoreAttention(DType act, int d, params Tensor?[] rowsRead)
    {
        bool selected = AttentionKernel == CudaAttentionKernel.TensorCores || (AttentionKernel == CudaAttentionKernel.Auto && act == DType.BF16);
        if (!selected || ComputeCapability < 80 || (d != 64 && d != 128)) return false;
        foreach (var t in rowsRead)
            if (t is not null && (Ptr(t) % 16 != 0 || !t.IsContiguous)) return false;
        return true;
    }

    /// <inheritdoc />
    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor? prefixMask = null)
    {
        AttentionArguments.ActivationDType(nameof(AttentionForward), q, k, v, output);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0;
        // The prefix may be a view of a KV cache buffer (rows contiguous, any batch stride) in F32 or 16 bits.
        long pStride = AttentionArguments.PrefixBatchStride(nameof(AttentionForward), prefixK, prefixV);
        int pdt = (int)(prefixK?.DType ?? DType.F32);
        if (batch == 0 || seq == 0 || heads == 0) return; // a zero-sized grid is a launch error
        if (seq == 1 && d <= 32 * DecodeDims)
        {
            // A decoding step: one query per (batch, head) over the past, whichever kernel set is selected.
            DecodeAttention(q, k, v, prefixK, prefixV, pdt, pStride, mask, prefixMask, scale, maskedValue, output, lse);
            return;
        }
        bool prefixAligned = prefixK is null || (Ptr(prefixK) % 16 == 0 && Ptr(prefixV!) % 16 == 0 && pStride % 8 == 0);
        if (prefixAligned && UseTensorCoreAttention(q.DType, d, q, k, v))
        {
            using var m = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(pdt).Add(pStride)
                .Add(PtrOrNull(mask))
                .Add(PtrOrNull(prefixMask)).Add(seq).Add(nPrefix).Add(heads).Add(scale).Add(maskedValue).Add(Ptr(output)).Add(Ptr(lse));
            Interlocked.Increment(ref _tensorCoreAttentionForwards);
            Launch("attention_mma.cu", $"attention_mma_forward_d{d}", ((uint)((seq + MmaQueryRows - 1) / MmaQueryRows), (uint)heads, (uint)batch),
                (AttentionThreads, 1, 1), MmaAttentionSharedBytes(MmaAttentionPass.Forward, d), m);
            return;
        }
        int t = AttentionTile(d);
        int shared = (4 * t * d + t * t + 3 * t) * sizeof(float);
        using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(pdt).Add(pStride)
            .Add(PtrOrNull(mask)).Add(PtrOrNull(prefixMask)).Add(seq).Add(nPrefix).Add(heads).Add(d).Add(scale).Add(maskedValue).Add(t).Add(Ptr(output)).Add(Ptr(lse));
        Launch("attention.cu", "attention_forward", ((uint)((seq + t - 1) / t), (uint)heads, (uint)batch), (AttentionThreads, 1, 1), (uint)shared, a);
    }

    /// <inheritdoc />
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor dOutput,
        Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dPrefixK, Tensor? dPrefixV)
    {
        AttentionArguments.ActivationDType(nameof(AttentionBackward), q, k, v, output);
        AttentionArguments.RequireTrainingPrefix(nameof(AttentionBackward), prefixK, prefixV);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + seq;
        if (batch == 0 || seq == 0 || heads == 0) return; // a zero-sized grid is a launch error
        int t = AttentionTile(d);
        long rows = (long)batch * heads * seq;
        using var delta = Temp(rows * sizeof(float));
        using var blocked = Temp(rows * sizeof(int));
        using (var p = new KernelArgs().Add(Ptr(output)).Add((int)output.DType).Add(Ptr(dOutput)).Add(PtrOrNull(mask)).Add(batch).Add(seq).Add(nPrefix)
                   .Add(heads).Add(d).Add(delta.Pointer).Add(blocked.Pointer))
            LaunchElementwise("attention.cu", "attention_backward_prep", rows, p);
        if (UseTensorCoreAttention(q.DType, d, q, k, v, prefixK, prefixV, dOutput))
        {
            if (dq is not null)
            {
                using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(PtrOrNull(mask))
                    .Add(Ptr(lse)).Add(delta.Pointer).Add(Ptr(dOutput)).Add(seq).Add(nPrefix).Add(heads).Add(scale).Add(Ptr(dq));
                Launch("attention_mma.cu", $"attention_mma_backward_dq_d{d}", ((uint)((seq + MmaQueryRows - 1) / MmaQueryRows), (uint)heads, (uint)batch),
                    (AttentionThreads, 1, 1), MmaAttentionSharedBytes(MmaAttentionPass.BackwardQuery, d), a);
            }
            if (dk is not null || dv is not null || dPrefixK is not null || dPrefixV is not null)
            {
                using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(PtrOrNull(mask))
                    .Add(Ptr(lse)).Add(delta.Pointer).Add(blocked.Pointer).Add(Ptr(dOutput)).Add(seq).Add(nPrefix).Add(heads).Add(scale).Add(maskedValue)
                    .Add(PtrOrNull(dk)).Add(PtrOrNull(dv)).Add(PtrOrNull(dPrefixK)).Add(PtrOrNull(dPrefixV));
                Launch("attention_mma.cu", $"attention_mma_backward_dkv_d{d}", ((uint)((total + MmaKeyRows - 1) / MmaKeyRows), (uint)heads, (uint)batch),
                    (AttentionThreads, 1, 1), MmaAttentionSharedBytes(MmaAttentionPass.BackwardKeys, d), a);
            }
            return;
        }
        var grid = ((uint)((seq + t - 1) / t), (uint)heads, (uint)batch);
        if (dq is not null)
        {
            using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(PtrOrNull(mask))
                .Add(Ptr(lse)).Add(delta.Pointer).Add(blocked.Pointer).Add(Ptr(dOutput))
                .Add(seq).Add(nPrefix).Add(heads).Add(d).Add(scale).Add(maskedValue).Add(t).Add(Ptr(dq));
            Launch("attention.cu", "attention_backward_dq", grid, (AttentionThreads, 1, 1), (uint)AttentionSharedBytes(t, d, false), a);
        }
        if (dk is not null || dv is not null || dPrefixK is not null || dPrefixV is not null)
        {
            using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(k)).Add(Ptr(v)).Add((int)q.DType).Add(PtrOrNull(prefixK)).Add(PtrOrNull(prefixV)).Add(PtrOrNull(mask))
                .Add(Ptr(lse)).Add(delta.Pointer).Add(blocked.Pointer).Add(Ptr(dOutput))
                .Add(seq).Add(nPrefix).Add(heads).Add(d).Add(scale).Add(maskedValue).Add(t)
                .Add(PtrOrNull(dk)).Add(PtrOrNull(dv)).Add(PtrOrNull(dPrefixK)).Add(PtrOrNull(dPrefixV));
            Launch("attention.cu", "attention_backward_dkv", ((uint)((total + t - 1) / t), (uint)heads, (uint)batch), (AttentionThreads, 1, 1),
                (uint)AttentionSharedBytes(t, d, true), a);
        }
    }

    // ---------------------------------------------------------------- weight-only quantisation (spec §10)

    /// <summary>
    /// De-quantises an INT8 weight: <paramref name="w"/>[r, c] = <paramref name="q"/>[r, c]·<paramref name="scale"/>[r]
    /// for <paramref name="q"/> I8 [rows, cols], <paramref name="scale"/> F16 [rows], <paramref name="w"/> [rows, cols]
    /// F32, F16 or BF16.
    /// </summary>
    public void DequantizeInt8(Tensor q, Tensor scale, Tensor w) => Dequantize("dequant_int8", q, scale, w, packedCols: w.Shape[^1]);

    /// <summary>
    /// De-quantises an INT4 weight packed two per byte, high nibble = even column: <paramref name="packed"/> is I8
    /// [rows, cols/2], <paramref name="scale"/> F16 [rows], <paramref name="w"/> [rows, cols] F32, F16 or BF16.
    /// </summary>
    public void DequantizeInt4(Tensor packed, Tensor scale, Tensor w) => Dequantize("dequant_int4", packed, scale, w, packedCols: w.Shape[^1] / 2);

    private void Dequantize(string kernel, Tensor q, Tensor scale, Tensor w, int packedCols)
    {
        if (w.Rank != 2) throw new ArgumentException($"{kernel}: {w.Describe("output")} must be 2-D [rows, cols]");
        int rows = w.Shape[0], cols = w.Shape[1];
        if (q.DType != DType.I8 || q.Shape != new Shape(rows, packedCols))
            throw new ArgumentException($"{kernel}: {q.Describe("quantized weight")} must be I8 [{rows}, {packedCols}] for {w.Describe("output")}");
        if (kernel == "dequant_int4" && cols % 2 != 0) throw new ArgumentException($"{kernel}: {w.Describe("output")} needs an even column count");
        if (scale.DType != DType.F16 || scale.NumElements != rows)
            throw new ArgumentException($"{kernel}: {scale.Describe("scale")} must be F16 with {rows} elements");
        if (!w.DType.IsFloat()) throw new ArgumentException($"{kernel}: {w.Describe("output")} must be F32, F16 or BF16");
        RequireContiguous(q, "quantized weight");
        RequireContiguous(w, "output");
        long n = (long)rows * cols;
        using var a = new KernelArgs().Add(Ptr(q)).Add(Ptr(scale)).Add(Ptr(w)).Add((int)w.DType).Add((long)rows).Add((long)cols);
        LaunchElementwise("quant.cu", kernel, n, a);
    }

    /// <summary>Rows one fused launch handles (the kernel's QMV_MAX_ROWS); more rows run in several launches.</summary>
    private const int QuantMatVecMaxRows = 16;

    /// <inheritdoc />
    public void QuantizedMatVec(Tensor x, Tensor q, Tensor scale, int bits, Tensor y)
    {
        int rows = x.Shape[0], cols = x.Shape[1], outF = y.Shape[1];
        int packed = bits == 4 ? cols / 2 : cols;
        if (bits is not (8 or 4) || (bits == 4 && cols % 2 != 0) || q.DType != DType.I8 || q.Shape != new Shape(outF, packed) || scale.DType != DType.F16 || scale.NumElements != outF || y.Shape[0] != rows)
            throw new ArgumentException($"QuantizedMatVec: x {x.Shape}, INT{bits} weight {q.Describe("q")}, scale {scale.Shape} and y {y.Shape} do not fit");
        RequireContiguous(x, "x");
        RequireContiguous(y, "y");
        if (!x.DType.IsFloat() || y.DType != DType.F32) throw new ArgumentException($"QuantizedMatVec: {x.Describe("x")} must be F32, BF16 or F16 and {y.Describe("y")} F32");
        if (outF == 0) return; // a zero-sized grid is a launch error, not an empty launch
        for (int r0 = 0; r0 < rows; r0 += QuantMatVecMaxRows)
        {
            int n = Math.Min(QuantMatVecMaxRows, rows - r0);
            using var a = new KernelArgs().Add(Ptr(x) + (ulong)((long)r0 * cols * x.DType.SizeOf())).Add((int)x.DType).Add(Ptr(q)).Add(Ptr(scale)).Add(Ptr(y) + (ulong)((long)r0 * outF * 4))
                .Add(bits).Add((long)n).Add((long)cols).Add((long)outF);
            uint warpsPerBlock = Block / 32;
            Launch("quant.cu", "quant_matvec", ((uint)((outF + warpsPerBlock - 1) / warpsPerBlock), 1, 1), (Block, 1, 1), 0, a);
        }
    }
}
