namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void DequantizeInt8(Tensor q, Tensor scale, Tensor w) => Dequantize(q, scale, w, int4: false);

    /// <inheritdoc />
    public void DequantizeInt4(Tensor packed, Tensor scale, Tensor w) => Dequantize(packed, scale, w, int4: true);

    private static void Dequantize(Tensor q, Tensor scale, Tensor w, bool int4)
    {
        string op = int4 ? "DequantizeInt4" : "DequantizeInt8";
        if (w.Rank != 2) throw new ArgumentException($"{op}: {w.Describe("output")} must be 2-D [rows, cols]");
        int rows = w.Shape[0], cols = w.Shape[1];
        if (int4 && cols % 2 != 0) throw new ArgumentException($"{op}: {w.Describe("output")} needs an even column count");
        int packedCols = int4 ? cols / 2 : cols;
        if (q.DType != DType.I8 || q.Shape != new Shape(rows, packedCols))
            throw new ArgumentException($"{op}: {q.Describe("quantized weight")} must be I8 [{rows}, {packedCols}] for {w.Describe("output")}");
        if (scale.DType != DType.F16 || scale.NumElements != rows)
            throw new ArgumentException($"{op}: {scale.Describe("scale")} must be F16 with {rows} elements");
        if (!w.DType.IsFloat()) throw new ArgumentException($"{op}: {w.Describe("output")} must be F32, F16 or BF16");
        sbyte* pq = q.Ptr<sbyte>();
        ushort* ps = scale.Ptr<ushort>();
        // A row's values are made in fp32 (q·scale is exact there: ≤ 8 + 11 significant bits) straight into an fp32
        // output, or into a per-thread row buffer rounded once into a 16-bit one.
        ForRows(rows, cols, r =>
        {
            long offset = (long)r * cols;
            float* row = CpuRows.Target(w, offset, cols, 0);
            if (int4) CpuDequantize.Int4Row(pq + r * packedCols, HalfConvert.F16ToFloat(ps[r]), row, cols);
            else CpuDequantize.Int8Row(pq + r * packedCols, HalfConvert.F16ToFloat(ps[r]), row, cols);
            CpuRows.Write(row, w, offset, cols);
        });
    }
}

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void QuantizedMatVec(Tensor x, Tensor q, Tensor scale, int bits, Tensor y)
    {
        int rows = x.Shape[0], cols = x.Shape[1], outF = y.Shape[1];
        int packed = bits == 4 ? cols / 2 : cols;
        if (bits is not (8 or 4) || (bits == 4 && cols % 2 != 0) || q.DType != DType.I8 || q.Shape != new Shape(outF, packed) || scale.NumElements != outF || y.Shape[0] != rows)
            throw new ArgumentException($"QuantizedMatVec: x {x.Shape}, INT{bits} weight {q.Describe("q")}, scale {scale.Shape} and y {y.Shape} do not fit");
        if (!x.DType.IsFloat() || y.DType != DType.F32) throw new ArgumentException($"QuantizedMatVec: {x.Describe("x")} must be F32, BF16 or F16 and {y.Describe("y")} F32");
        float* py = y.Ptr<float>();
        // A 16-bit x (a cached step's attention output in its cache's dtype) is widened once, exactly.
        float[]? widened = null;
        float* px = x.Ptr<float>();
        if (x.DType != DType.F32)
        {
            widened = GC.AllocateUninitializedArray<float>(rows * cols, pinned: true);
            px = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref widened[0]);
            CpuFloatConvert.ToSingle(x.DType, x.Ptr<byte>(), px, (long)rows * cols);
        }
        sbyte* pq = q.Ptr<sbyte>();
        ushort* ps = scale.Ptr<ushort>();
        // Decoding is bound by reading q once: each weight row is widened in registers (int8 → int32 → fp32, exact)
        // and multiplied into the input rows as it streams, never written out in fp32. For INT4 the input rows are
        // split once into their even and odd columns, which pair with each byte's high and low nibble, so the nibbles
        // need no interleaving. The scale multiplies each row's sum.
        float[]? split = null;
        float* xs = px;
        if (bits == 4)
        {
            split = GC.AllocateUninitializedArray<float>(rows * cols, pinned: true);
            xs = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref split[0]);
            int half = cols / 2;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < half; c++)
                {
                    xs[(long)r * cols + c] = px[(long)r * cols + 2 * c];
                    xs[(long)r * cols + half + c] = px[(long)r * cols + 2 * c + 1];
                }
        }
        const int Block = 64; // output features per task: amortises the task's overhead over 64 weight rows
        ForRows((outF + Block - 1) / Block, (long)Block * cols * rows, blk =>
        {
            int o1 = (int)Math.Min(outF, (blk + 1) * Block), o = (int)blk * Block;
            // Four weight rows at a time share each load of the input row (see CpuWideningDot.Int8Rows4).
            // Input rows go in pairs (a batch being decoded): each weight is widened once for two rows, same sums.
            float* sums = stackalloc float[8];
            for (; o + 4 <= o1; o += 4)
            {
                sbyte* qr = pq + (long)o * packed;
                int r = 0;
                for (; r + 2 <= rows; r += 2)
                {
                    float* xr = xs + (long)r * cols, yr = xr + cols;
                    if (bits == 8) CpuWideningDot.Int8Rows4x2(qr, packed, xr, yr, cols, sums, sums + 4);
                    else CpuWideningDot.Int4Rows4x2(qr, packed, xr, xr + cols / 2, yr, yr + cols / 2, cols / 2, sums, sums + 4);
                    for (int j = 0; j < 4; j++)
                    {
                        float scale = HalfConvert.F16ToFloat(ps[o + j]);
                        py[(long)r * outF + o + j] = scale * sums[j];
                        py[(long)(r + 1) * outF + o + j] = scale * sums[4 + j];
                    }
                }
                for (; r < rows; r++)
                {
                    float* xr = xs + (long)r * cols;
                    if (bits == 8) CpuWideningDot.Int8Rows4(qr, packed, xr, cols, sums);
                    else CpuWideningDot.Int4Rows4(qr, packed, xr, xr + cols / 2, cols / 2, sums);
                    for (int j = 0; j < 4; j++) py[(long)r * outF + o + j] = HalfConvert.F16ToFloat(ps[o + j]) * sums[j];
                }
            }
            for (; o < o1; o++)
            {
                sbyte* qr = pq + (long)o * packed;
                float s = HalfConvert.F16ToFloat(ps[o]);
                for (int r = 0; r < rows; r++)
                {
                    float* xr = xs + (long)r * cols;
                    float dot = bits == 8 ? CpuWideningDot.Int8(qr, xr, cols) : CpuWideningDot.Int4(qr, xr, xr + cols / 2, cols / 2);
                    py[(long)r * outF + o] = s * dot;
                }
            }
        });
        GC.KeepAlive(split);
        GC.KeepAlive(widened);
    }
}
