using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// Matrix product op(a)·op(b) over the last two dimensions. a is [..., M, K] ([..., K, M] when
    /// <paramref name="transA"/>), b is [..., K, N] ([..., N, K] when <paramref name="transB"/>) with the same
    /// leading (batch) dimensions, or b is 2-D and shared by every batch. Result [..., M, N], F32. Either operand may
    /// be stored as F32, BF16 or F16 (accumulation is fp32; gradients are F32).
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        const string op = "MatMul";
        SameDevice(op, ("a", a), ("b", b));
        if (a.Rank < 2 || b.Rank < 2) throw new ArgumentException($"{op}: {a.Describe("a")} and {b.Describe("b")} must be at least 2-D");
        var ac = FloatContiguous(a, op, "a");
        var bc = FloatContiguous(b, op, "b");
        int m = transA ? a.Shape[-1] : a.Shape[-2];
        int k = transA ? a.Shape[-2] : a.Shape[-1];
        int kb = transB ? b.Shape[-1] : b.Shape[-2];
        int n = transB ? b.Shape[-2] : b.Shape[-1];
        if (k != kb) throw new ArgumentException($"{op}: inner dimensions differ: {a.Describe("a")}{(transA ? "ᵀ" : "")} has K={k}, {b.Describe("b")}{(transB ? "ᵀ" : "")} has K={kb}");
        bool shared = b.Rank == 2 && a.Rank > 2;
        if (!shared && !a.Shape.Dims[..^2].SequenceEqual(b.Shape.Dims[..^2]))
            throw new ArgumentException($"{op}: batch dimensions of {a.Describe("a")} and {b.Describe("b")} differ (b may also be 2-D)");
        int batch = (int)(a.NumElements / ((long)a.Shape[-1] * a.Shape[-2]));
        var outDims = a.Shape.ToArray();
        outDims[^2] = m; outDims[^1] = n;
        var c = Tensor.Empty(new Shape(outDims), DType.F32, a.Device);
        long sA = (long)m * k, sB = shared ? 0 : (long)k * n, sC = (long)m * n;
        var be = a.Backend;
        int lda = transA ? m : k, ldb = transB ? k : n;
        if (shared && !transA)
            be.Gemm(false, transB, batch * m, n, k, 1f, ac, 0, lda, 0, bc, 0, ldb, 0, 0f, c, 0, n, 0, 1); // fold batch into M
        else
            be.Gemm(transA, transB, m, n, k, 1f, ac, 0, lda, sA, bc, 0, ldb, sB, 0f, c, 0, n, sC, batch);

        return Graph.Record(op, c, [a, b], (g, needs) =>
        {
            Tensor? ga = null, gb = null;
            if (needs(0))
            {
                ga = Tensor.Empty(a.Shape, DType.F32, a.Device);
                if (!transA) be.Gemm(false, !transB, m, k, n, 1f, g, 0, n, sC, bc, 0, ldb, sB, 0f, ga, 0, k, sA, batch);   // dA = dC·op(B)ᵀ
                else be.Gemm(transB, true, k, m, n, 1f, bc, 0, ldb, sB, g, 0, n, sC, 0f, ga, 0, m, sA, batch);          // dAᵀ = op(B)·dCᵀ
            }
            if (needs(1))
            {
                gb = Tensor.Empty(b.Shape, DType.F32, b.Device);
                if (shared && !transA)
                {
                    // Shared b: its gradient sums over the batch, which folding the batch into the GEMM's K does for free.
                    if (!transB) be.Gemm(true, false, k, n, batch * m, 1f, ac, 0, k, 0, g, 0, n, 0, 0f, gb, 0, n, 0, 1);
                    else be.Gemm(true, false, n, k, batch * m, 1f, g, 0, n, 0, ac, 0, k, 0, 0f, gb, 0, k, 0, 1);
                }
                else
                {
                    int bBatch = shared ? 1 : batch;
                    for (int i = 0; i < (shared ? batch : 1); i++)
                    {
                        float beta = i == 0 ? 0f : 1f;
                        long ao = shared ? i * sA : 0, go = shared ? i * sC : 0;
                        if (!transB) be.Gemm(!transA, false, k, n, m, 1f, ac, ao, lda, sA, g, go, n, sC, beta, gb, 0, n, sB, bBatch);   // dB = op(A)ᵀ·dC
                        else be.Gemm(true, transA, n, k, m, 1f, g, go, n, sC, ac, ao, lda, sA, beta, gb, 0, k, sB, bBatch);            // dBᵀ = dCᵀ·op(A)
                    }
                }
            }
            return [ga, gb];
        });
    }
}
