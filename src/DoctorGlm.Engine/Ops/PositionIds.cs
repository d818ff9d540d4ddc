namespace DoctorGlm.Engine;

/// <summary>Builds ChatGLM's 2D position ids (spec §4.1, §4.3) for <see cref="Ops.Rotary2D"/>.</summary>
public static class PositionIds
{
    /// <summary>
    /// Position ids [B, 2, <paramref name="seqLen"/>] I32 for a batch of left-padded sequences. Per sample b, on its
    /// unpadded part (real index s = 0 … seqLen − padLeft[b] − 1): row 0 is s for s &lt; ctx[b] and maskPos[b] from
    /// there on; row 1 is 0 for s &lt; ctx[b] and s − ctx[b] + 1 from there on. The padLeft[b] leading pad
    /// positions get 0 in both rows.
    /// </summary>
    /// <param name="ctx">Per sample: index of the first &lt;sop&gt; in the unpadded sequence (its length when absent).</param>
    /// <param name="maskPos">Per sample: index of the first [gMASK] (else [MASK]) in the unpadded sequence.</param>
    /// <param name="seqLen">Padded sequence length S.</param>
    /// <param name="padLeft">Per sample number of left pad tokens (null = none).</param>
    /// <param name="device">Where to create the tensor (CPU by default).</param>
    public static Tensor Glm(int[] ctx, int[] maskPos, int seqLen, int[]? padLeft = null, Device? device = null)
    {
        CheckPadding("PositionIds.Glm", ctx, seqLen, padLeft); // before the allocation: a bad size gets its message
        var ids = new int[ctx.Length * 2 * seqLen];
        Fill(ids, ctx, maskPos, seqLen, padLeft);
        return Tensor.FromArray(ids, new Shape(ctx.Length, 2, seqLen), device);
    }

    /// <summary><see cref="Glm"/>'s values written into <paramref name="ids"/> (B·2·S ints; a caller packing several inputs into one upload).</summary>
    internal static void Fill(Span<int> ids, int[] ctx, int[] maskPos, int seqLen, int[]? padLeft)
    {
        const string op = "PositionIds.Glm";
        int batch = ctx.Length;
        if (maskPos.Length != batch) throw new ArgumentException($"{op}: maskPos has {maskPos.Length} entries but ctx has {batch} (one per sample)");
        CheckPadding(op, ctx, seqLen, padLeft);
        if (ids.Length != batch * 2 * seqLen) throw new ArgumentException($"{op}: {ids.Length} ids for [{batch}, 2, {seqLen}]");
        ids.Clear();
        for (int b = 0; b < batch; b++)
        {
            int pad = padLeft?[b] ?? 0;
            if (maskPos[b] < 0) throw new ArgumentOutOfRangeException(nameof(maskPos), $"{op}: maskPos[{b}] = {maskPos[b]} is negative");
            for (int s = 0; s < seqLen - pad; s++)
            {
                ids[(b * 2) * seqLen + pad + s] = s < ctx[b] ? s : maskPos[b];
                ids[(b * 2 + 1) * seqLen + pad + s] = s < ctx[b] ? 0 : s - ctx[b] + 1;
            }
        }
    }

    internal static void CheckPadding(string op, int[] ctx, int seqLen, int[]? padLeft)
    {
        if (ctx.Length == 0) throw new ArgumentException($"{op}: ctx is empty (one entry per sample)");
        if (seqLen < 1) throw new ArgumentOutOfRangeException(nameof(seqLen), $"{op}: seqLen = {seqLen} must be positive");
        if (padLeft is not null && padLeft.Length != ctx.Length)
            throw new ArgumentException($"{op}: padLeft has {padLeft.Length} entries but ctx has {ctx.Length} (one per sample)");
        for (int b = 0; b < ctx.Length; b++)
        {
            int pad = padLeft?[b] ?? 0;
            if (pad < 0 || pad > seqLen) throw new ArgumentOutOfRangeException(nameof(padLeft), $"{op}: padLeft[{b}] = {pad} is outside [0, {seqLen}]");
            if (ctx[b] < 0 || ctx[b] > seqLen - pad)
                throw new ArgumentOutOfRangeException(nameof(ctx), $"{op}: ctx[{b}] = {ctx[b]} is outside [0, {seqLen - pad}] (the unpadded length of sample {b})");
        }
    }
}
