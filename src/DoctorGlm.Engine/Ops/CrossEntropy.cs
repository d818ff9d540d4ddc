using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// Mean softmax cross-entropy of <paramref name="logits"/> [N, V] (F32; reshape [B, S, V] to [B·S, V] first)
    /// against <paramref name="labels"/> [N] (I32), over the rows whose label is not <paramref name="ignoreIndex"/>,
    /// as torch's <c>cross_entropy(reduction="mean")</c>. Returns a one-element tensor.
    /// </summary>
    /// <remarks>
    /// <para>When every label is ignored (or N = 0) the loss is defined as 0 and the gradient is zero (torch
    /// returns NaN there; a batch of pure padding should not poison a training run).</para>
    /// <para>Throws for a label outside [0, V) that is not <paramref name="ignoreIndex"/> (naming row and value), and
    /// when a kept row's loss is not finite (naming the rows whose logits are NaN/infinite). Ignored rows are not
    /// inspected. Only the per-row log-sum-exp ([N] floats) is saved; backward recomputes the softmax from the logits.</para>
    /// </remarks>
    public static Tensor CrossEntropy(Tensor logits, Tensor labels, int ignoreIndex = -100) => CrossEntropy(logits, labels, null, ignoreIndex);

    /// <summary><see cref="CrossEntropy(Tensor, Tensor, int)"/> for labels whose values the caller also holds on the
    /// host (<paramref name="hostLabels"/>, the same values), so they are checked there without a copy from the device.</summary>
    internal static Tensor CrossEntropy(Tensor logits, Tensor labels, int[]? hostLabels, int ignoreIndex = -100)
    {
        const string op = "CrossEntropy";
        SameDevice(op, ("logits", logits), ("labels", labels));
        ExpectRank(op, "logits", logits, 2, "[rows, vocab]");
        ExpectDType(op, "labels", labels, DType.I32);
        int n = logits.Shape[0], v = logits.Shape[1];
        ExpectShape(op, "labels", labels, new Shape(n), $"one per row of {logits.Describe("logits")}");
        if (v == 0) throw new ArgumentException($"{op}: {logits.Describe("logits")} has no classes");
        var xc = F32Contiguous(logits, op, "logits");
        var lc = labels.IsContiguous ? labels : ContiguousNoGrad(labels);
        var be = logits.Backend;
        // Labels are one int per row: checking them on the host is one small copy on a GPU, done here once for every
        // backend, with messages that name the row.
        if (hostLabels is not null && hostLabels.Length != n) throw new ArgumentException($"{op}: {hostLabels.Length} host labels for {n} rows");
        hostLabels ??= lc.ToIntArray();
        int kept = 0;
        for (int r = 0; r < n; r++)
        {
            int t = hostLabels[r];
            if (t == ignoreIndex) continue;
            if ((uint)t >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(labels), t, $"{op}: labels[{r}] = {t} is outside [0, {v}) and is not the ignore index {ignoreIndex}");
            kept++;
        }
        var rowLoss = Tensor.Empty(new Shape(n), DType.F32, logits.Device);
        var lse = Tensor.Empty(new Shape(n), DType.F32, logits.Device);
        if (n > 0) be.CrossEntropyForward(xc, lc, ignoreIndex, rowLoss, lse);
        var losses = n == 0 ? [] : rowLoss.ToFloatArray();
        rowLoss.Dispose();
        // A kept row with a non-finite loss would make the mean NaN/∞: report every such row instead.
        double total = 0;
        List<int>? bad = null;
        for (int r = 0; r < n; r++)
        {
            if (hostLabels[r] == ignoreIndex) continue;
            if (!float.IsFinite(losses[r])) (bad ??= []).Add(r);
            else total += losses[r];
        }
        if (bad is not null)
            throw new ArgumentException($"{op}: the loss is not finite: logits rows {string.Join(", ", bad.Take(16))}{(bad.Count > 16 ? $", … ({bad.Count} rows)" : "")} contain NaN or infinite values", nameof(logits));
        var loss = Tensor.Full(new Shape(1), kept == 0 ? 0f : (float)(total / kept), DType.F32, logits.Device);
        return Graph.Record(op, loss, [logits, null], (g, _) =>
        {
            var gx = Tensor.Empty(logits.Shape, DType.F32, logits.Device);
            if (kept == 0) be.Fill(gx, 0f);
            else be.CrossEntropyBackward(xc, lc, lse, ignoreIndex, g, 1f / kept, gx);
            return [gx, null];
        });
    }
}
