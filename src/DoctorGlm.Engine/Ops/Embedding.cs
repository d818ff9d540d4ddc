using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// Looks up rows of <paramref name="table"/> [V, H] for the token <paramref name="ids"/> (I32, any shape):
    /// the result has shape [..ids.Shape, H], F32 (the table may be stored as F32, BF16 or F16). An id outside [0, V) throws, naming its position and value. The
    /// gradient scatter-adds into the table only (ids have none); a frozen table costs nothing in backward.
    /// </summary>
    public static Tensor Embedding(Tensor ids, Tensor table) => Embedding(ids, table, idsChecked: false);

    /// <summary><see cref="Embedding(Tensor, Tensor)"/> for ids the caller has checked against the table's rows on the host.</summary>
    internal static Tensor Embedding(Tensor ids, Tensor table, bool idsChecked)
    {
        const string op = "Embedding";
        SameDevice(op, ("ids", ids), ("table", table));
        ExpectDType(op, "ids", ids, DType.I32);
        ExpectRank(op, "table", table, 2, "[vocab, hidden]");
        var tc = FloatContiguous(table, op, "table");
        var ic = ids.IsContiguous ? ids : ContiguousNoGrad(ids);
        int h = table.Shape[1];
        var y = Tensor.Empty(new Shape([.. ids.Shape.ToArray(), h]), DType.F32, table.Device);
        var be = table.Backend;
        be.EmbeddingForward(ic, tc, y, idsChecked);
        return Graph.Record(op, y, [null, table], (g, needs) =>
        {
            if (!needs(1)) return [null, null];
            var gt = Tensor.Empty(table.Shape, DType.F32, table.Device);
            be.EmbeddingBackward(ic, g, gt);
            return [null, gt];
        });
    }
}
