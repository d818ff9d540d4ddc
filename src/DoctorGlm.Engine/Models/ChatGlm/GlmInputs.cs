namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// A model-ready batch (spec §4): token ids [B, S] I32, 2D position ids [B, 2, S] I32, the prefix-LM attention mask
/// [B, S, S] U8 (1 = blocked) and optional labels [B, S] I32, all built from the token ids the way HF's
/// <c>get_masks</c> / <c>get_position_ids</c> and the tokenizer's left padding do.
/// </summary>
public sealed class GlmInputs : IDisposable
{
    private GlmInputs(Tensor ids, Tensor positionIds, Tensor mask, Tensor? labels, int[] padLeft, int[] ctx, int[] maskPos)
    {
        Ids = ids; PositionIds = positionIds; Mask = mask; Labels = labels; PadLeft = padLeft; Ctx = ctx; MaskPos = maskPos;
    }

    /// <summary>Every id was checked to lie in [0, this) on the host (the config's vocabulary), so a model whose table
    /// has at least these rows may skip the embedding's own check, a round trip on a GPU.</summary>
    internal int CheckedVocabSize { get; private init; }

    /// <summary>With labels: the causal-LM targets [B·S] I32, labels shifted left by one (the last position −100), as
    /// <see cref="GlmModel.LanguageModelLoss"/> builds them; on the device with the rest, and on the host for the loss's checks.</summary>
    internal Tensor? Targets { get; private init; }

    /// <inheritdoc cref="Targets"/>
    internal int[]? HostTargets { get; private init; }

    /// <summary>Token ids [B, S] I32 (left-padded with the pad id).</summary>
    public Tensor Ids { get; }

    /// <summary>Position ids [B, 2, S] I32: row 0 position, row 1 block position (pads 0).</summary>
    public Tensor PositionIds { get; }

    /// <summary>Attention mask [B, S, S] U8, query × key, 1 = blocked.</summary>
    public Tensor Mask { get; }

    /// <summary>Labels [B, S] I32 aligned with <see cref="Ids"/> (−100 = ignored; left pads −100), or null.</summary>
    public Tensor? Labels { get; }

    /// <summary>Per sample: number of left pad tokens added.</summary>
    public IReadOnlyList<int> PadLeft { get; }

    /// <summary>Per sample: index of the first &lt;sop&gt; in the unpadded sequence (its length when absent).</summary>
    public IReadOnlyList<int> Ctx { get; }

    /// <summary>Per sample: index of the first [gMASK], else the first [MASK], in the unpadded sequence (0 when there is no &lt;sop&gt; and no mask).</summary>
    public IReadOnlyList<int> MaskPos { get; }

    /// <summary>Batch size B.</summary>
    public int BatchSize => Ids.Shape[0];

    /// <summary>Padded sequence length S.</summary>
    public int SeqLen => Ids.Shape[1];

    /// <summary>
    /// Builds a batch from unpadded token id sequences: shorter sequences are left-padded with
    /// <see cref="GlmConfig.PadTokenId"/> to the longest; each sample's mask and positions are built on its own
    /// tokens (spec §4.1: ctx = first &lt;sop&gt;, mask_pos = first [gMASK] else [MASK]) and then padded as in §4.3
    /// (positions 0, pad rows and columns blocked). Already equal-length batches (e.g. right-padded training data,
    /// §5.1) are used as given. <paramref name="labels"/>, when given, must match the ids' lengths and are
    /// left-padded with −100.
    /// </summary>
    public static GlmInputs Build(int[][] ids, GlmConfig config, int[][]? labels = null, Device? device = null)
    {
        const string op = "GlmInputs.Build";
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(config);
        if (ids.Length == 0) throw new ArgumentException($"{op}: the batch is empty", nameof(ids));
        if (labels is not null && labels.Length != ids.Length)
            throw new ArgumentException($"{op}: {labels.Length} label rows for {ids.Length} sequences", nameof(labels));
        int batch = ids.Length;
        int seq = 0;
        for (int b = 0; b < batch; b++)
        {
            if (ids[b] is null || ids[b].Length == 0) throw new ArgumentException($"{op}: sequence {b} is empty", nameof(ids));
            if (labels is not null && labels[b].Length != ids[b].Length)
                throw new ArgumentException($"{op}: sequence {b} has {ids[b].Length} ids but {labels[b].Length} labels", nameof(labels));
            seq = Math.Max(seq, ids[b].Length);
        }
        // One host buffer, one upload (each is a round trip on a GPU): ids, positions, then labels and the loss's
        // shifted targets as I32, then the mask's bytes; the tensors are views of it.
        long tokens = (long)batch * seq;
        long ints = tokens * (labels is null ? 3 : 5), maskBytes = tokens * seq;
        var packed = GC.AllocateUninitializedArray<byte>(checked((int)(4 * ints + maskBytes)));
        var all = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(packed.AsSpan(0, (int)(4 * ints)));
        var flat = all[..(int)tokens];
        var flatLabels = labels is null ? default : all.Slice((int)(3 * tokens), (int)tokens);
        var padLeft = new int[batch];
        var ctx = new int[batch];
        var maskPos = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            var s = ids[b];
            padLeft[b] = seq - s.Length;
            for (int i = 0; i < s.Length; i++)
                if (s[i] < 0 || s[i] >= config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(ids), $"{op}: sequence {b} token {i} = {s[i]} is outside the vocabulary [0, {config.VocabSize})");
            (ctx[b], maskPos[b]) = ContextAndMask(s, config, b);
            flat.Slice(b * seq, padLeft[b]).Fill(config.PadTokenId);
            s.CopyTo(flat[(b * seq + padLeft[b])..]);
            if (labels is not null)
            {
                flatLabels.Slice(b * seq, padLeft[b]).Fill(-100);
                labels[b].CopyTo(flatLabels[(b * seq + padLeft[b])..]);
            }
        }
        DoctorGlm.Engine.PositionIds.Fill(all.Slice((int)tokens, (int)(2 * tokens)), ctx, maskPos, seq, padLeft);
        AttentionMask.Fill(packed.AsSpan((int)(4 * ints)), ctx, seq, padLeft);
        int[]? hostTargets = null;
        if (labels is not null)
        {
            // Position t predicts label t + 1 (spec §5.1); the last position predicts nothing.
            var targets = all.Slice((int)(4 * tokens), (int)tokens);
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < seq; t++)
                    targets[b * seq + t] = t + 1 < seq ? flatLabels[b * seq + t + 1] : -100;
            hostTargets = targets.ToArray();
        }
        using var upload = Tensor.FromArray(packed, new Shape(packed.Length), device);
        var idsT = upload.Reinterpret(DType.I32, new Shape(batch, seq), 0);
        var pos = upload.Reinterpret(DType.I32, new Shape(batch, 2, seq), tokens);
        var lab = labels is null ? null : upload.Reinterpret(DType.I32, new Shape(batch, seq), 3 * tokens);
        var mask = upload.Reinterpret(DType.U8, new Shape(batch, seq, seq), 4 * ints);
        return new GlmInputs(idsT, pos, mask, lab, padLeft, ctx, maskPos)
        {
            CheckedVocabSize = config.VocabSize,
            Targets = labels is null ? null : upload.Reinterpret(DType.I32, new Shape(batch * seq), 4 * tokens),
            HostTargets = hostTargets,
        };
    }

    /// <summary>
    /// ctx = index of the first &lt;sop&gt; (the length when absent, as the tokenizer's <c>_pad</c>); mask_pos =
    /// index of the first [gMASK], else the first [MASK]. A sequence with a &lt;sop&gt; but no mask token has no
    /// defined position for its generated part, so it is rejected.
    /// </summary>
    public static (int Ctx, int MaskPos) ContextAndMask(ReadOnlySpan<int> ids, GlmConfig config, int sample = 0)
    {
        int ctx = ids.IndexOf(config.BosTokenId);
        if (ctx < 0) ctx = ids.Length;
        int maskPos = ids.IndexOf(config.GMaskTokenId);
        if (maskPos < 0) maskPos = ids.IndexOf(config.MaskTokenId);
        if (maskPos < 0)
        {
            if (ctx < ids.Length)
                throw new ArgumentException($"GlmInputs: sequence {sample} has <sop> ({config.BosTokenId}) at {ctx} but neither [gMASK] ({config.GMaskTokenId}) nor [MASK] ({config.MaskTokenId})");
            maskPos = 0; // unused: every token is context
        }
        return (ctx, maskPos);
    }

    /// <summary>
    /// One training sequence of the official fine-tuning script (spec §5.1): prompt ids truncated to
    /// <paramref name="maxSourceLength"/> − 1, answer ids truncated to <paramref name="maxTargetLength"/> − 2, then
    /// input = prompt + [gMASK, &lt;sop&gt;] + answer + [&lt;eop&gt;] right-padded with the pad id to
    /// maxSourceLength + maxTargetLength; labels = −100 before &lt;sop&gt;, the input ids from &lt;sop&gt; on, and
    /// −100 wherever the label equals the pad id (ignore_pad_token_for_loss).
    /// </summary>
    public static (int[] Ids, int[] Labels) TrainingSequence(ReadOnlySpan<int> prompt, ReadOnlySpan<int> answer, GlmConfig config, int maxSourceLength, int maxTargetLength)
    {
        if (maxSourceLength < 1) throw new ArgumentOutOfRangeException(nameof(maxSourceLength), maxSourceLength, "must be at least 1");
        if (maxTargetLength < 2) throw new ArgumentOutOfRangeException(nameof(maxTargetLength), maxTargetLength, "must be at least 2 (<sop> and <eop>)");
        var a = prompt[..Math.Min(prompt.Length, maxSourceLength - 1)];
        var b = answer[..Math.Min(answer.Length, maxTargetLength - 2)];
        int total = maxSourceLength + maxTargetLength;
        var ids = new int[total];
        Array.Fill(ids, config.PadTokenId);
        a.CopyTo(ids);
        ids[a.Length] = config.GMaskTokenId;
        ids[a.Length + 1] = config.BosTokenId;
        b.CopyTo(ids.AsSpan(a.Length + 2));
        int end = a.Length + 2 + b.Length;
        ids[end] = config.EosTokenId;
        int ctx = a.Length + 1;
        var labels = new int[total];
        for (int i = 0; i < total; i++)
            labels[i] = i < ctx || i > end || ids[i] == config.PadTokenId ? -100 : ids[i];
        return (ids, labels);
    }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        Ids.Dispose();
        PositionIds.Dispose();
        Mask.Dispose();
        Labels?.Dispose();
        Targets?.Dispose();
    }
}
