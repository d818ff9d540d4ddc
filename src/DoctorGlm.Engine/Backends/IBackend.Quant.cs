namespace DoctorGlm.Engine.Backends;

public partial interface IBackend
{
    /// <summary>
    /// De-quantises an INT8 weight (spec §10): w[r, c] = q[r, c]·scale[r], the product formed in fp32 and rounded
    /// once to w's dtype. <paramref name="q"/> is I8 [rows, cols], <paramref name="scale"/> F16 [rows],
    /// <paramref name="w"/> [rows, cols] F32, F16 or BF16.
    /// </summary>
    void DequantizeInt8(Tensor q, Tensor scale, Tensor w);

    /// <summary>
    /// De-quantises an INT4 weight packed two per byte, the HIGH nibble holding the even column (spec §10):
    /// <paramref name="packed"/> is I8 [rows, cols/2], <paramref name="scale"/> F16 [rows], <paramref name="w"/>
    /// [rows, cols] F32, F16 or BF16.
    /// </summary>
    void DequantizeInt4(Tensor packed, Tensor scale, Tensor w);
}
