using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Quantization;

/// <summary>
/// A weight-only quantized matrix in ChatGLM's scheme (spec §10): per output row an fp16 scale
/// max|W_r|/(2^(b−1)−1), values round(W/scale) in [−127, 127] (INT8) or [−7, 7] (INT4, two per byte, the high
/// nibble holding the even column), no zero point. Same layout as THUDM's <c>weight</c> / <c>weight_scale</c> keys.
/// </summary>
public sealed class QuantizedWeight : IDisposable
{
    private QuantizedWeight(int bits, int rows, int columns, Tensor data, Tensor scale)
    {
        Bits = bits; Rows = rows; Columns = columns; Data = data; Scale = scale;
    }

    /// <summary>8 or 4.</summary>
    public int Bits { get; }

    /// <summary>Output features (rows of the [out, in] weight).</summary>
    public int Rows { get; }

    /// <summary>Input features (columns of the de-quantized weight).</summary>
    public int Columns { get; }

    /// <summary>I8 [rows, cols] (INT8) or [rows, cols/2] (INT4, packed).</summary>
    public Tensor Data { get; }

    /// <summary>F16 [rows].</summary>
    public Tensor Scale { get; }

    /// <summary>
    /// Quantizes <paramref name="weight"/> ([out, in], any float dtype; rounded to fp16 first, as the reference
    /// quantizes an fp16 checkpoint) exactly like THUDM's <c>quantization.py</c>: scale = fp16(max|w|/(2^(b−1)−1)),
    /// q = round_half_even(fp16(w/scale)). An all-zero row gets scale 0 and q 0 (the reference would divide 0 by 0).
    /// </summary>
    public static unsafe QuantizedWeight Quantize(Tensor weight, int bits)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (bits is not (8 or 4)) throw new ArgumentOutOfRangeException(nameof(bits), bits, "QuantizedWeight.Quantize: bits must be 8 or 4");
        if (weight.Rank != 2) throw new ArgumentException($"QuantizedWeight.Quantize: {weight.Describe("weight")} must be 2-D [out, in]");
        if (weight.DType is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"QuantizedWeight.Quantize: {weight.Describe("weight")} must be F32, BF16 or F16");
        int rows = weight.Shape[0], cols = weight.Shape[1];
        if (bits == 4 && cols % 2 != 0) throw new ArgumentException($"QuantizedWeight.Quantize: INT4 needs an even number of input features; {weight.Describe("weight")}");
        using var _ = TensorScope.Unscoped();
        // Rows are read where they are (a contiguous host tensor) or from one host copy in the weight's own dtype, and
        // the result is written straight into the packed tensor: no float[] of the whole matrix (268 MB for one of
        // ChatGLM-6B's MLP weights), so a model quantized while it loads stays near its final size.
        using var copy = weight.Device.Kind == DeviceKind.Cpu && weight.IsContiguous ? null : weight.HostContiguous();
        var host = copy ?? weight;
        var scale = Tensor.Empty(new Shape(rows), DType.F16, Device.Cpu);
        var data = Tensor.Empty(new Shape(rows, bits == 8 ? cols : cols / 2), DType.I8, Device.Cpu);
        nint src = (nint)host.Ptr<byte>(), scales = (nint)scale.Ptr<ushort>(), packed = (nint)data.Ptr<sbyte>();
        DType dtype = host.DType;
        long rowBytes = (long)cols * dtype.SizeOf(), packedRow = bits == 8 ? cols : cols / 2;
        try
        {
            QuantizeRows(bits, cols, dtype, src, rowBytes, scales, packed, packedRow, rows);
        }
        catch
        {
            data.Dispose(); scale.Dispose();
            throw;
        }
        if (weight.Device.Kind == DeviceKind.Cpu) return new QuantizedWeight(bits, rows, cols, data, scale);
        try { return new QuantizedWeight(bits, rows, cols, data.To(weight.Device), scale.To(weight.Device)); }
        finally { data.Dispose(); scale.Dispose(); }
    }

    private static unsafe void QuantizeRows(int bits, int cols, DType dtype, nint src, long rowBytes, nint scales, nint packed, long packedRow, int rows)
    {
        float qmax = (1 << (bits - 1)) - 1;
        // Row by row, each step a vectorised pass over the row (a 6B model's 5.6 billion weights are quantized when
        // it loads): the same IEEE operations as the per-element formula, so the same bits.
        Parallel.For(0, rows, () => (X: new float[cols], H: new Half[cols]), (r, _, buf) =>
        {
            var x = buf.X.AsSpan();
            var h = buf.H.AsSpan();
            fixed (float* xp = x) Backends.Cpu.CpuFloatConvert.ToSingle(dtype, (byte*)src + r * rowBytes, xp, cols);
            // x = fp16(w): the weights as an fp16 checkpoint holds them.
            TensorPrimitives.ConvertToHalf(x, h);
            TensorPrimitives.ConvertToSingle(h, x);
            float max = 0;
            foreach (float v in x) max = MathF.Max(max, MathF.Abs(v));
            ushort sBits = HalfConvert.FloatToF16(max / qmax); // fp16 ÷ int in fp32, rounded to fp16 as torch does
            ((ushort*)scales)[r] = sBits;
            float s = HalfConvert.F16ToFloat(sBits);
            var qr = new Span<sbyte>((sbyte*)packed + r * packedRow, (int)packedRow);
            if (s == 0) { qr.Clear(); return buf; } // all-zero row: q = 0
            // The fp16 quotient of two fp16 values, then rounded half to even and clamped.
            TensorPrimitives.Divide(x, s, x);
            TensorPrimitives.ConvertToHalf(x, h);
            TensorPrimitives.ConvertToSingle(h, x);
            TensorPrimitives.Round(x, MidpointRounding.ToEven, x);
            if (bits == 8)
                for (int c = 0; c < cols; c++) qr[c] = (sbyte)Math.Clamp(x[c], -qmax, qmax);
            else
                for (int k = 0; k < qr.Length; k++)
                {
                    int hi = (sbyte)Math.Clamp(x[2 * k], -qmax, qmax), lo = (sbyte)Math.Clamp(x[2 * k + 1], -qmax, qmax);
                    qr[k] = unchecked((sbyte)(((hi & 0xF) << 4) | (lo & 0xF))); // the layout of PackInt4
                }
            return buf;
        }, _ => { });
    }

    /// <summary>Packs INT4 values two per byte: byte k of a row = (q[2k] &amp; 0xF) &lt;&lt; 4 | (q[2k+1] &amp; 0xF).</summary>
    public static sbyte[] PackInt4(ReadOnlySpan<sbyte> q, int rows, int cols)
    {
        var packed = new sbyte[(long)rows * cols / 2];
        for (long i = 0; i < packed.LongLength; i++)
            packed[i] = unchecked((sbyte)(((q[(int)(2 * i)] & 0xF) << 4) | (q[(int)(2 * i + 1)] & 0xF)));
        return packed;
    }

    /// <summary>
    /// Wraps stored tensors (a pre-quantized checkpoint's <c>weight</c> and <c>weight_scale</c>), checking their
    /// dtypes and shapes; <paramref name="columns"/> is the de-quantized input width. Takes ownership of both.
    /// </summary>
    public static QuantizedWeight FromTensors(Tensor data, Tensor scale, int bits, int columns, string what = "quantized weight")
    {
        if (bits is not (8 or 4)) throw new ArgumentOutOfRangeException(nameof(bits), bits, $"{what}: bits must be 8 or 4");
        int rows = data.Rank == 2 ? data.Shape[0] : -1;
        int packed = bits == 8 ? columns : columns / 2;
        if (data.DType != DType.I8 || data.Shape != new Shape(rows, packed))
            throw new ArgumentException($"{what}: {data.Describe("weight")} must be I8 [out, {packed}] for INT{bits} with {columns} input features");
        if (scale.DType != DType.F16 || scale.Shape != new Shape(rows))
            throw new ArgumentException($"{what}: {scale.Describe("weight_scale")} must be F16 [{rows}]");
        return new QuantizedWeight(bits, rows, columns, data, scale);
    }

    /// <summary>The de-quantized weight [rows, cols] in <paramref name="dtype"/> (w = q·scale, rounded once).</summary>
    public Tensor Dequantize(DType dtype = DType.F32)
    {
        var w = Tensor.Empty(new Shape(Rows, Columns), dtype, Data.Device);
        if (Bits == 8) w.Backend.DequantizeInt8(Data, Scale, w);
        else w.Backend.DequantizeInt4(Data, Scale, w);
        return w;
    }

    /// <inheritdoc />
    public void Dispose() { Data.Dispose(); Scale.Dispose(); }
}
