namespace DoctorGlm.Engine;

/// <summary>Builds ChatGLM's attention masks (spec §4.1, §4.3) for <see cref="Ops.GlmAttention"/>: U8, 1 = blocked.</summary>
public static class AttentionMask
{
    /// <summary>
    /// The prefix-LM mask [B, <paramref name="seqLen"/>, <paramref name="seqLen"/>] U8 (query i, key j; 1 = blocked).
    /// On sample b's unpadded part, query i is blocked from key j ⇔ j &gt; i and j ≥ ctx[b]: the context
    /// [0, ctx) is bidirectional, tokens from &lt;sop&gt; on are causal. The padLeft[b] leading pad rows and
    /// columns are fully blocked (a fully blocked row attends uniformly, see <see cref="Ops.GlmAttention"/>).
    /// </summary>
    /// <param name="ctx">Per sample: index of the first &lt;sop&gt; in the unpadded sequence (its length when absent).</param>
    /// <param name="seqLen">Padded sequence length S.</param>
    /// <param name="padLeft">Per sample number of left pad tokens (null = none).</param>
    /// <param name="device">Where to create the tensor (CPU by default).</param>
    public static Tensor PrefixLm(int[] ctx, int seqLen, int[]? padLeft = null, Device? device = null)
    {
        PositionIds.CheckPadding("AttentionMask.PrefixLm", ctx, seqLen, padLeft); // before the allocation: a bad size gets its message
        var m = new byte[ctx.Length * seqLen * seqLen];
        Fill(m, ctx, seqLen, padLeft);
        return Tensor.FromArray(m, new Shape(ctx.Length, seqLen, seqLen), device);
    }

    /// <summary><see cref="PrefixLm"/>'s values written into <paramref name="m"/> (B·S·S bytes; a caller packing several inputs into one upload).</summary>
    internal static void Fill(Span<byte> m, int[] ctx, int seqLen, int[]? padLeft)
    {
        const string op = "AttentionMask.PrefixLm";
        PositionIds.CheckPadding(op, ctx, seqLen, padLeft);
        int batch = ctx.Length;
        if (m.Length != (long)batch * seqLen * seqLen) throw new ArgumentException($"{op}: {m.Length} bytes for [{batch}, {seqLen}, {seqLen}]");
        for (int b = 0; b < batch; b++)
        {
            int pad = padLeft?[b] ?? 0;
            for (int i = 0; i < seqLen; i++)
                for (int j = 0; j < seqLen; j++)
                {
                    int ri = i - pad, rj = j - pad; // indices in the unpadded sequence
                    bool blocked = ri < 0 || rj < 0 || (rj > ri && rj >= ctx[b]);
                    m[(b * seqLen + i) * seqLen + j] = blocked ? (byte)1 : (byte)0;
                }
        }
    }
}
