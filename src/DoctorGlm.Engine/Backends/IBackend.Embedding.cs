namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// Row gather: y[i, :] = table[ids[i], :] for <paramref name="ids"/> (I32, any shape, contiguous) and
    /// <paramref name="table"/> [V, H] (F32, BF16 or F16; y is F32); y holds ids.NumElements rows of H. Before writing anything, throws an
    /// <see cref="ArgumentOutOfRangeException"/> naming the first flat position whose id is outside [0, V), its
    /// value and V. <paramref name="idsChecked"/>: the caller has already checked every id against V on the host (a
    /// decoding step's few tokens), so a backend whose own check costs a round trip to the device may skip it.
    /// </summary>
    void EmbeddingForward(Tensor ids, Tensor table, Tensor y, bool idsChecked = false);

    /// <summary>
    /// Scatter-add of output-gradient rows: dtable (overwritten, [V, H]) = Σ_i e_{ids[i]} ⊗ dy[i, :]; rows no id
    /// selects are zero. Repeated ids accumulate in index order, so the result is deterministic. The ids must
    /// already be in range (validated by <see cref="EmbeddingForward"/>).
    /// </summary>
    void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dtable);
}
