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

public partial interface IBackend
{
    /// <summary>
    /// Fused de-quantize-and-multiply for decoding (few rows): y[r, o] = scale[o] · Σ_i x[r, i] · q[o, i], never
    /// materialising the de-quantized matrix, so each step reads the weight once at 1 byte (INT8) or ½ byte (INT4) per
    /// element. <paramref name="x"/> is F32 [rows, cols], or BF16/F16 (widened exactly); <paramref name="q"/> I8 [out, cols] (INT8) or [out, cols/2]
    /// (INT4, high nibble = even column); <paramref name="scale"/> F16 [out]; <paramref name="y"/> F32 [rows, out].
    /// Sums are fp32 in an order of the backend's choosing (not bit-identical to de-quantize + GEMM).
    /// </summary>
    void QuantizedMatVec(Tensor x, Tensor q, Tensor scale, int bits, Tensor y);
}
