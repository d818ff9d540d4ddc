using System.Buffers;
using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // Layout: q, k, v, output are [B, S, nh, d]; prefix keys/values [B, N, nh, d]. For one (batch, head) pair each
    // of them is an S×d (or N×d) matrix with row stride nh·d, so every product below is one strided GEMM on
    // CpuGemm. The score matrix of a pair is S×(N+S): prefix columns first, then the sequence's own keys.

    /// <summary>Start of (batch b, row 0, head h) in a [B, L, nh, d] tensor.</summary>
    private static float* HeadBase(float* p, int b, int len, int heads, int head, int d) => p + ((long)b * len * heads + head) * d;

    /// <summary>
    /// Fills <paramref name="p"/> (S×total, row-major) with softmax probabilities of one (batch, head) pair and
    /// returns nothing else; optionally writes each row's log-sum-exp. Blocked scores are set to
    /// <paramref name="maskedValue"/> (−10000·c) before the softmax, exactly like the reference's masked_fill, so a
    /// fully blocked row (left padding) comes out uniform rather than NaN.
    /// </summary>
    private static void AttentionProbabilities(float* q, float* k, float* pk, long pStride, byte* mask, byte* prefixMask, int b, int head, int seq,
        int nPrefix, int heads, int d, float scale, float maskedValue, float* p, float* lseRow)
    {
        int total = nPrefix + seq;
        long ld = (long)heads * d;
        if (nPrefix > 0)
            CpuGemm.Sgemm(false, true, seq, nPrefix, d, scale, HeadBase(q, b, seq, heads, head, d), ld, pk + b * pStride + (long)head * d, ld, 0f, p, total);
        CpuGemm.Sgemm(false, true, seq, seq, d, scale, HeadBase(q, b, seq, heads, head, d), ld, HeadBase(k, b, seq, heads, head, d), ld, 0f, p + nPrefix, total);
        for (int i = 0; i < seq; i++)
        {
            var row = new Span<float>(p + (long)i * total, total);
            if (mask != null)
            {
                byte* mrow = mask + ((long)b * seq + i) * seq;
                for (int j = 0; j < seq; j++) if (mrow[j] != 0) row[nPrefix + j] = maskedValue;
            }
            if (prefixMask != null)
            {
                byte* prow = prefixMask + (long)b * nPrefix;
                for (int j = 0; j < nPrefix; j++) if (prow[j] != 0) row[j] = maskedValue;
            }
            float max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, row);
            TensorPrimitives.Exp(row, row);
            float sum = TensorPrimitives.Sum(row);
            TensorPrimitives.Multiply(row, 1f / sum, row);
            if (lseRow != null) lseRow[i] = max + MathF.Log(sum);
        }
    }

    /// <summary>An fp32 copy of a 16-bit activation (exact), or the tensor itself when it is F32.</summary>
    private Tensor Widened(Tensor t)
    {
        if (t.DType == DType.F32) return t;
        var w = Tensor.Empty(t.Shape, DType.F32, Device);
        Copy(t, w);
        return w;
    }

    /// <inheritdoc />
    /// <remarks>16-bit q/k/v/output: the CPU widens them to fp32 copies for the duration of the call and rounds the
    /// output once at the end — the same values the CUDA kernels load and store element by element.</remarks>
    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor? prefixMask = null)
    {
        if (AttentionArguments.ActivationDType(nameof(AttentionForward), q, k, v, output) != DType.F32)
        {
            using Tensor q32 = Widened(q), k32 = Widened(k), v32 = Widened(v), o32 = Tensor.Empty(output.Shape, DType.F32, Device);
            AttentionForward(q32, k32, v32, prefixK, prefixV, mask, scale, maskedValue, o32, lse, prefixMask);
            Copy(o32, output);
            return;
        }
        long pStride = AttentionArguments.PrefixBatchStride(nameof(AttentionForward), prefixK, prefixV);
        if (prefixK is not null && prefixK.DType != DType.F32)
        {
            // A 16-bit KV cache: widened to fp32 (exact) for the call, the values the CUDA kernels load one by one.
            using Tensor pk32 = Widened(prefixK), pv32 = Widened(prefixV!);
            AttentionForward(q, k, v, pk32, pv32, mask, scale, maskedValue, output, lse, prefixMask);
            return;
        }
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + seq;
        long ld = (long)heads * d;
        float* pq = q.Ptr<float>(), pk = k.Ptr<float>(), pv = v.Ptr<float>(), po = output.Ptr<float>(), pl = lse.Ptr<float>();
        float* ppk = prefixK is null ? null : prefixK.Ptr<float>(), ppv = prefixV is null ? null : prefixV.Ptr<float>();
        byte* pm = mask is null ? null : mask.Ptr<byte>(), ppm = prefixMask is null ? null : prefixMask.Ptr<byte>();
        // (batch, head) pairs are independent: each writes its own output rows and lse entries.
        ForRows((long)batch * heads, (long)seq * total * d, bh =>
        {
            int b = (int)(bh / heads), head = (int)(bh % heads);
            var buf = ArrayPool<float>.Shared.Rent(seq * total);
            fixed (float* p = buf)
            {
                AttentionProbabilities(pq, pk, ppk, pStride, pm, ppm, b, head, seq, nPrefix, heads, d, scale, maskedValue, p, pl + bh * seq);
                float* o = HeadBase(po, b, seq, heads, head, d);
                if (nPrefix > 0) CpuGemm.Sgemm(false, false, seq, d, nPrefix, 1f, p, total, ppv + b * pStride + (long)head * d, ld, 0f, o, ld);
                CpuGemm.Sgemm(false, false, seq, d, seq, 1f, p + nPrefix, total, HeadBase(pv, b, seq, heads, head, d), ld, nPrefix > 0 ? 1f : 0f, o, ld);
            }
            ArrayPool<float>.Shared.Return(buf);
        });
    }

    /// <inheritdoc />
    /// <remarks>
    /// The CPU recomputes each row's softmax from the scores (max and sum) rather than from the saved lse: it is
    /// cheap here and exact for fully blocked rows, where lse ≈ −10000·c + log S has an fp32 ulp of ~2e-3.
    /// </remarks>
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor dOutput,
        Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dPrefixK, Tensor? dPrefixV)
    {
        if (AttentionArguments.ActivationDType(nameof(AttentionBackward), q, k, v, output) != DType.F32)
        {
            using Tensor q32 = Widened(q), k32 = Widened(k), v32 = Widened(v), o32 = Widened(output);
            AttentionBackward(q32, k32, v32, prefixK, prefixV, mask, scale, maskedValue, o32, lse, dOutput, dq, dk, dv, dPrefixK, dPrefixV);
            return;
        }
        AttentionArguments.RequireTrainingPrefix(nameof(AttentionBackward), prefixK, prefixV);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + seq;
        long ld = (long)heads * d;
        float* pq = q.Ptr<float>(), pk = k.Ptr<float>(), pv = v.Ptr<float>(), po = output.Ptr<float>(), pdo = dOutput.Ptr<float>();
        float* ppk = prefixK is null ? null : prefixK.Ptr<float>(), ppv = prefixV is null ? null : prefixV.Ptr<float>();
        byte* pm = mask is null ? null : mask.Ptr<byte>();
        float* pdq = dq is null ? null : dq.Ptr<float>(), pdk = dk is null ? null : dk.Ptr<float>(), pdv = dv is null ? null : dv.Ptr<float>();
        float* pdpk = dPrefixK is null ? null : dPrefixK.Ptr<float>(), pdpv = dPrefixV is null ? null : dPrefixV.Ptr<float>();
        // Each (batch, head) pair owns its heads' gradient rows, so the pairs run in parallel without races.
        ForRows((long)batch * heads, (long)seq * total * d, bh =>
        {
            int b = (int)(bh / heads), head = (int)(bh % heads);
            var pBuf = ArrayPool<float>.Shared.Rent(seq * total);
            var dBuf = ArrayPool<float>.Shared.Rent(seq * total);
            fixed (float* p = pBuf, ds = dBuf)
            {
                AttentionProbabilities(pq, pk, ppk, (long)nPrefix * ld, pm, null, b, head, seq, nPrefix, heads, d, scale, maskedValue, p, null);
                float* dO = HeadBase(pdo, b, seq, heads, head, d);
                float* o = HeadBase(po, b, seq, heads, head, d);
                float* qh = HeadBase(pq, b, seq, heads, head, d);
                // dV = Pᵀ·dO (prefix and sequence parts).
                if (pdpv != null) CpuGemm.Sgemm(true, false, nPrefix, d, seq, 1f, p, total, dO, ld, 0f, HeadBase(pdpv, b, nPrefix, heads, head, d), ld);
                if (pdv != null) CpuGemm.Sgemm(true, false, seq, d, seq, 1f, p + nPrefix, total, dO, ld, 0f, HeadBase(pdv, b, seq, heads, head, d), ld);
                if (pdq != null || pdk != null || pdpk != null)
                {
                    // dP = dO·Vᵀ, then dS = scale·P⊙(dP − Σ_j P_ij dP_ij), with Σ_j P_ij dP_ij = dO_i·O_i.
                    if (nPrefix > 0) CpuGemm.Sgemm(false, true, seq, nPrefix, d, 1f, dO, ld, HeadBase(ppv, b, nPrefix, heads, head, d), ld, 0f, ds, total);
                    CpuGemm.Sgemm(false, true, seq, seq, d, 1f, dO, ld, HeadBase(pv, b, seq, heads, head, d), ld, 0f, ds + nPrefix, total);
                    for (int i = 0; i < seq; i++)
                    {
                        float rowTerm = TensorPrimitives.Dot(new ReadOnlySpan<float>(dO + i * ld, d), new ReadOnlySpan<float>(o + i * ld, d));
                        var dsRow = new Span<float>(ds + (long)i * total, total);
                        TensorPrimitives.Subtract(dsRow, rowTerm, dsRow);
                        TensorPrimitives.Multiply(dsRow, new ReadOnlySpan<float>(p + (long)i * total, total), dsRow);
                        TensorPrimitives.Multiply(dsRow, scale, dsRow);
                        // A blocked score is a constant (masked_fill): neither q nor k gets gradient through it.
                        if (pm != null)
                        {
                            byte* mrow = pm + ((long)b * seq + i) * seq;
                            for (int j = 0; j < seq; j++) if (mrow[j] != 0) dsRow[nPrefix + j] = 0f;
                        }
                    }
                    if (pdq != null)
                    {
                        float* dqh = HeadBase(pdq, b, seq, heads, head, d);
                        if (nPrefix > 0) CpuGemm.Sgemm(false, false, seq, d, nPrefix, 1f, ds, total, HeadBase(ppk, b, nPrefix, heads, head, d), ld, 0f, dqh, ld);
                        CpuGemm.Sgemm(false, false, seq, d, seq, 1f, ds + nPrefix, total, HeadBase(pk, b, seq, heads, head, d), ld, nPrefix > 0 ? 1f : 0f, dqh, ld);
                    }
                    if (pdk != null) CpuGemm.Sgemm(true, false, seq, d, seq, 1f, ds + nPrefix, total, qh, ld, 0f, HeadBase(pdk, b, seq, heads, head, d), ld);
                    if (pdpk != null) CpuGemm.Sgemm(true, false, nPrefix, d, seq, 1f, ds, total, qh, ld, 0f, HeadBase(pdpk, b, nPrefix, heads, head, d), ld);
                }
            }
            ArrayPool<float>.Shared.Return(pBuf);
            ArrayPool<float>.Shared.Return(dBuf);
        });
    }
}
