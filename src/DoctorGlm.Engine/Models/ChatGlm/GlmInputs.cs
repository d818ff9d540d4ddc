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
        var padLeft = new int[batch];
        var ctx = new int[batch];
        var maskPos = new int[batch];
        var flat = new int[batch * seq];
        var flatLabels = labels is null ? null : new int[batch * seq];
        for (int b = 0; b < batch; b++)
        {
            var s = ids[b];
            padLeft[b] = seq - s.Length;
            for (int i = 0; i < s.Length; i++)
                if (s[i] < 0 || s[i] >= config.VocabSize)
                    throw new ArgumentOutOfRangeException(nameof(ids), $"{op}: sequence {b} token {i} = {s[i]} is outside the vocabulary [0, {config.VocabSize})");
            (ctx[b], maskPos[b]) = ContextAndMask(s, config, b);
            Array.Fill(flat, config.PadTokenId, b * seq, padLeft[b]);
            s.CopyTo(flat, b * seq + padLeft[b]);
            if (flatLabels is not null)
            {
                Array.Fill(flatLabels, -100, b * seq, padLeft[b]);
                labels![b].CopyTo(flatLabels, b * seq + padLeft[b]);
            }
        }
        var idsT = Tensor.FromArray(flat, new Shape(batch, seq), device);
        var pos = DoctorGlm.Engine.PositionIds.Glm(ctx, maskPos, seq, padLeft, device);
        var mask = AttentionMask.PrefixLm(ctx, seq, padLeft, device);
        var lab = flatLabels is null ? null : Tensor.FromArray(flatLabels, new Shape(batch, seq), device);
        return new GlmInputs(idsT, pos, mask, lab, padLeft, ctx, maskPos);
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
    }
}
