using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <summary>Pointer to element (b, s, head, 0) of a [B, L, nh, d] tensor, or null.</summary>
    private static float* Row(float* p, int b, int s, int len, int heads, int head, int d) => p + (((long)b * len + s) * heads + head) * d;

    private static float DotF(float* a, float* b, int n) => TensorPrimitives.Dot(new ReadOnlySpan<float>(a, n), new ReadOnlySpan<float>(b, n));

    private static void Axpy(float alpha, float* x, float* y, int n)
    {
        var ys = new Span<float>(y, n);
        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(x, n), alpha, ys, ys);
    }

    /// <summary>Scores of query row i against all N + S keys (prefix first) into <paramref name="scores"/>.</summary>
    private static void AttentionScores(float* q, float* k, float* pk, byte* mask, int b, int i, int head,
        int seq, int nPrefix, int heads, int d, float scale, float maskedValue, Span<float> scores)
    {
        float* qi = Row(q, b, i, seq, heads, head, d);
        for (int j = 0; j < nPrefix; j++) scores[j] = scale * DotF(qi, Row(pk, b, j, nPrefix, heads, head, d), d);
        byte* mrow = mask == null ? null : mask + ((long)b * seq + i) * seq;
        for (int j = 0; j < seq; j++)
            scores[nPrefix + j] = mrow != null && mrow[j] != 0 ? maskedValue : scale * DotF(qi, Row(k, b, j, seq, heads, head, d), d);
    }

    /// <inheritdoc />
    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse)
    {
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + seq;
        float* pq = q.Ptr<float>(), pk = k.Ptr<float>(), pv = v.Ptr<float>(), po = output.Ptr<float>(), pl = lse.Ptr<float>();
        float* ppk = prefixK is null ? null : prefixK.Ptr<float>(), ppv = prefixV is null ? null : prefixV.Ptr<float>();
        byte* pm = mask is null ? null : mask.Ptr<byte>();
        // (batch, head) pairs are independent: each writes its own output rows and lse entries.
        ForRows((long)batch * heads, (long)seq * total * d, bh =>
        {
            int b = (int)(bh / heads), head = (int)(bh % heads);
            var scores = new float[total];
            for (int i = 0; i < seq; i++)
            {
                AttentionScores(pq, pk, ppk, pm, b, i, head, seq, nPrefix, heads, d, scale, maskedValue, scores);
                float max = TensorPrimitives.Max(scores);
                TensorPrimitives.Subtract(scores, max, scores);
                TensorPrimitives.Exp(scores, scores);
                float sum = TensorPrimitives.Sum(scores);
                pl[bh * seq + i] = max + MathF.Log(sum);
                float inv = 1f / sum;
                float* oi = Row(po, b, i, seq, heads, head, d);
                new Span<float>(oi, d).Clear();
                for (int j = 0; j < nPrefix; j++) Axpy(scores[j] * inv, Row(ppv, b, j, nPrefix, heads, head, d), oi, d);
                for (int j = 0; j < seq; j++)
                    if (scores[nPrefix + j] != 0f) Axpy(scores[nPrefix + j] * inv, Row(pv, b, j, seq, heads, head, d), oi, d);
            }
        });
    }

    /// <inheritdoc />
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? prefixK, Tensor? prefixV, Tensor? mask,
        float scale, float maskedValue, Tensor output, Tensor lse, Tensor dOutput,
        Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dPrefixK, Tensor? dPrefixV)
    {
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int nPrefix = prefixK?.Shape[1] ?? 0, total = nPrefix + seq;
        float* pq = q.Ptr<float>(), pk = k.Ptr<float>(), pv = v.Ptr<float>(), po = output.Ptr<float>(), pl = lse.Ptr<float>(), pdo = dOutput.Ptr<float>();
        float* ppk = prefixK is null ? null : prefixK.Ptr<float>(), ppv = prefixV is null ? null : prefixV.Ptr<float>();
        byte* pm = mask is null ? null : mask.Ptr<byte>();
        float* pdq = dq is null ? null : dq.Ptr<float>(), pdk = dk is null ? null : dk.Ptr<float>(), pdv = dv is null ? null : dv.Ptr<float>();
        float* pdpk = dPrefixK is null ? null : dPrefixK.Ptr<float>(), pdpv = dPrefixV is null ? null : dPrefixV.Ptr<float>();
        // Each (batch, head) owns the gradient rows of its head, so the pairs run in parallel without races;
        // the rows are cleared by their owner before accumulating.
        ForRows((long)batch * heads, (long)seq * total * d, bh =>
        {
            int b = (int)(bh / heads), head = (int)(bh % heads);
            for (int j = 0; j < seq; j++)
            {
                if (pdk != null) new Span<float>(Row(pdk, b, j, seq, heads, head, d), d).Clear();
                if (pdv != null) new Span<float>(Row(pdv, b, j, seq, heads, head, d), d).Clear();
            }
            for (int j = 0; j < nPrefix; j++)
            {
                if (pdpk != null) new Span<float>(Row(pdpk, b, j, nPrefix, heads, head, d), d).Clear();
                if (pdpv != null) new Span<float>(Row(pdpv, b, j, nPrefix, heads, head, d), d).Clear();
            }
            var p = new float[total];
            for (int i = 0; i < seq; i++)
            {
                byte* mrow = pm == null ? null : pm + ((long)b * seq + i) * seq;
                if (nPrefix == 0 && mrow != null && new ReadOnlySpan<byte>(mrow, seq).IndexOf((byte)0) < 0)
                {
                    // No visible key (a left-pad row): every score is maskedValue, so P is exactly uniform. It is
                    // taken from the mask, not from lse ≈ maskedValue + log S, whose fp32 rounding (ulp 2e-3 at
                    // −30000) would put a relative error of that size on every P_ij.
                    p.AsSpan().Fill(1f / total);
                }
                else
                {
                    AttentionScores(pq, pk, ppk, pm, b, i, head, seq, nPrefix, heads, d, scale, maskedValue, p);
                    TensorPrimitives.Subtract(p, pl[bh * seq + i], p);
                    TensorPrimitives.Exp(p, p);
                }
                float* qi = Row(pq, b, i, seq, heads, head, d);
                float* doi = Row(pdo, b, i, seq, heads, head, d);
                float rowTerm = DotF(doi, Row(po, b, i, seq, heads, head, d), d); // Σ_j P_ij·dP_ij
                float* dqi = pdq == null ? null : Row(pdq, b, i, seq, heads, head, d);
                if (dqi != null) new Span<float>(dqi, d).Clear();
                for (int jj = 0; jj < total; jj++)
                {
                    bool isPrefix = jj < nPrefix;
                    int j = isPrefix ? jj : jj - nPrefix;
                    float pij = p[jj];
                    if (pij == 0f) continue; // nothing flows through an underflowed probability
                    float* vj = isPrefix ? Row(ppv, b, j, nPrefix, heads, head, d) : Row(pv, b, j, seq, heads, head, d);
                    float* dvj = isPrefix ? (pdpv == null ? null : Row(pdpv, b, j, nPrefix, heads, head, d)) : (pdv == null ? null : Row(pdv, b, j, seq, heads, head, d));
                    if (dvj != null) Axpy(pij, doi, dvj, d);
                    // A blocked score is a constant (masked_fill), so neither q nor k gets gradient through it.
                    if (!isPrefix && mrow != null && mrow[j] != 0) continue;
                    float ds = scale * pij * (DotF(doi, vj, d) - rowTerm);
                    float* kj = isPrefix ? Row(ppk, b, j, nPrefix, heads, head, d) : Row(pk, b, j, seq, heads, head, d);
                    if (dqi != null) Axpy(ds, kj, dqi, d);
                    float* dkj = isPrefix ? (pdpk == null ? null : Row(pdpk, b, j, nPrefix, heads, head, d)) : (pdk == null ? null : Row(pdk, b, j, seq, heads, head, d));
                    if (dkj != null) Axpy(ds, qi, dkj, d);
                }
            }
        });
    }
}
