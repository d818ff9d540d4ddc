using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Quantization;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Quantization;

/// <summary>ChatGLM's INT8/INT4 scheme against PyTorch (tools/reference/make_quant_fixtures.py), bit for bit.</summary>
public class QuantizationTests
{
    private static SafeTensorsFile Open() => SafeTensorsFile.Open(Path.Combine(Fixture.Dir("quant"), "quant.safetensors"));

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    public void QuantizeMatchesTheReferenceBitForBit(int bits)
    {
        using var f = Open();
        using var scope = TensorScope.Begin();
        var w = f.Load("weight");
        using var q = QuantizedWeight.Quantize(w, bits);
        Assert.Equal(f.Load($"scale{bits}").ToBytes(), q.Scale.ToBytes());
        Assert.Equal(f.Load(bits == 8 ? "q8" : "packed4").ToBytes(), q.Data.ToBytes());
        // de-quantized to fp16 as the reference does (fp16 product), compared exactly
        var deq16 = q.Dequantize(DType.F16).ToFloatArray();
        Assert.Equal(f.Floats($"dequant{bits}"), deq16);
        // and the fp32 de-quantization is the exact product
        var deq32 = q.Dequantize(DType.F32).ToFloatArray();
        var qv = f.Floats($"q{bits}");
        var sv = f.Floats($"scale{bits}");
        int cols = w.Shape[1];
        for (int i = 0; i < deq32.Length; i++) Assert.Equal(qv[i] * sv[i / cols], deq32[i]);
    }

    /// <summary>
    /// The vectorised quantizer against the per-element formula written out here (fp16 weights, fp16 scale, fp16
    /// quotient, round half to even, clamp) on rows that exercise it: random widths and scales, exact ties, values
    /// past fp16's range (infinite after rounding), subnormals, a NaN, an all-zero row — bit for bit.
    /// </summary>
    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    public void QuantizeEqualsThePerElementFormula(int bits)
    {
        const int rows = 40, cols = 1030;
        var rng = new Random(bits);
        var w = new float[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            float scale = (float)Math.Pow(10, rng.Next(-6, 3));
            for (int c = 0; c < cols; c++) w[r * cols + c] = (float)(rng.NextDouble() * 2 - 1) * scale;
        }
        for (int c = 0; c < cols; c++) w[2 * cols + c] = 0.5f * (c % 15 - 7); // max 3.5: INT4 scale 0.5, ties at every odd step
        w[3 * cols + 5] = 70000f;   // rounds to +inf in fp16: the whole row's scale is infinite
        w[4 * cols + 9] = 1e-7f;    // fp16 subnormal
        w[5 * cols + 1] = float.NaN;
        Array.Clear(w, 6 * cols, cols);
        using var scope = TensorScope.Begin();
        using var q = QuantizedWeight.Quantize(Tensor.FromArray(w, new Shape(rows, cols)), bits);
        var (wantQ, wantScale) = PerElement(w, rows, cols, bits);
        Assert.Equal(wantScale, q.Scale.ToBytes());
        Assert.Equal(bits == 8 ? wantQ.Select(v => (byte)v).ToArray() : QuantizedWeight.PackInt4(wantQ, rows, cols).Select(v => (byte)v).ToArray(), q.Data.ToBytes());
    }

    private static (sbyte[] Q, byte[] Scale) PerElement(float[] w, int rows, int cols, int bits)
    {
        float qmax = (1 << (bits - 1)) - 1;
        var q = new sbyte[rows * cols];
        var scale = new byte[2 * rows];
        for (int r = 0; r < rows; r++)
        {
            float max = 0;
            for (int c = 0; c < cols; c++) max = MathF.Max(max, MathF.Abs(HalfConvert.RoundToF16(w[r * cols + c])));
            ushort sBits = HalfConvert.FloatToF16(max / qmax);
            BitConverter.TryWriteBytes(scale.AsSpan(2 * r), sBits);
            float s = HalfConvert.F16ToFloat(sBits);
            if (s == 0) continue;
            for (int c = 0; c < cols; c++)
            {
                float ratio = HalfConvert.RoundToF16(HalfConvert.RoundToF16(w[r * cols + c]) / s);
                q[r * cols + c] = (sbyte)Math.Clamp(MathF.Round(ratio, MidpointRounding.ToEven), -qmax, qmax);
            }
        }
        return (q, scale);
    }

    [Fact]
    public void RoundsHalfToEvenAndPacksTheEvenColumnHigh()
    {
        using var scope = TensorScope.Begin();
        // max |w| = 7 → INT4 scale 1: halves must round to even (0.5 → 0, 1.5 → 2, 2.5 → 2, −2.5 → −2).
        var w = Tensor.FromArray([7f, 0.5f, 1.5f, 2.5f, -2.5f, -7f], new Shape(1, 6));
        using var q = QuantizedWeight.Quantize(w, 4);
        var packed = q.Data.ToBytes().Select(b => (sbyte)b).ToArray();
        // pairs (7, 0), (2, 2), (−2, −7): high nibble = first
        Assert.Equal(new sbyte[] { 0x70, 0x22, unchecked((sbyte)0xE9) }, packed);
        Assert.Equal(new float[] { 7, 0, 2, 2, -2, -7 }, q.Dequantize().ToFloatArray());
    }

    // Widths that run the vector loop and the scalar tail (1030 = 64·16 + 6; INT4: 32·32 + 3 bytes) and only the tail (14).
    [Theory]
    [InlineData(8, 1030, "F32")]
    [InlineData(8, 1030, "BF16")]
    [InlineData(4, 1030, "F32")]
    [InlineData(4, 1030, "F16")]
    [InlineData(4, 14, "BF16")]
    [InlineData(8, 14, "F16")]
    public void DequantizeEqualsThePerElementFormulaBitForBit(int bits, int cols, string dtype)
    {
        // Every code a checkpoint may hold (INT8 −128, INT4 −8 included: THUDM's quantizer never writes them, a file may)
        // and scales of every kind: normal, subnormal, zero, negative.
        const int rows = 9;
        var rng = new Random(bits * 1000 + cols);
        var bytes = new byte[rows * (bits == 8 ? cols : cols / 2)];
        rng.NextBytes(bytes);
        var scales = new ushort[rows];
        for (int r = 0; r < rows; r++) scales[r] = HalfConvert.FloatToF16((float)(rng.NextDouble() - 0.3) * (float)Math.Pow(10, rng.Next(-6, 3)));
        scales[1] = 0x0003; // subnormal
        scales[2] = 0;
        using var scope = TensorScope.Begin();
        var data = Tensor.FromBytes(bytes, new Shape(rows, bits == 8 ? cols : cols / 2), DType.I8, Device.Cpu);
        var scale = Tensor.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(scales.AsSpan()), new Shape(rows), DType.F16, Device.Cpu);
        using var q = QuantizedWeight.FromTensors(data, scale, bits, cols);
        var type = Enum.Parse<DType>(dtype);
        var got = q.Dequantize(type).ToBytes();
        var want = new byte[rows * cols * type.SizeOf()];
        for (int r = 0; r < rows; r++)
        {
            float sc = HalfConvert.F16ToFloat(scales[r]);
            for (int c = 0; c < cols; c++)
            {
                sbyte b = (sbyte)bytes[bits == 8 ? r * cols + c : r * (cols / 2) + c / 2];
                int v = bits == 8 ? b : c % 2 == 0 ? b >> 4 : (sbyte)(b << 4) >> 4;
                float x = v * sc;
                int e = r * cols + c;
                if (type == DType.F32) BitConverter.TryWriteBytes(want.AsSpan(4 * e), x);
                else BitConverter.TryWriteBytes(want.AsSpan(2 * e), type == DType.BF16 ? HalfConvert.FloatToBf16(x) : HalfConvert.FloatToF16(x));
            }
        }
        Assert.Equal(want, got);
    }

    [Fact]
    public void AllZeroRowsStayZero()
    {
        using var scope = TensorScope.Begin();
        using var q = QuantizedWeight.Quantize(Tensor.Zeros(new Shape(2, 4)), 8);
        Assert.All(q.Dequantize().ToFloatArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void QuantizedLinearEqualsLinearOnTheDequantizedWeightAndTrainsItsInput()
    {
        var rng = new RandomGenerator(11);
        using var scope = TensorScope.Begin();
        var w = rng.Normal(new Shape(9, 12), 0.2f);
        var b = rng.Normal(new Shape(9));
        using var q = QuantizedWeight.Quantize(w, 4);
        var x1 = rng.Normal(new Shape(2, 3, 12)); x1.RequiresGrad = true;
        var x2 = x1.Detach(); x2.RequiresGrad = true;
        var y1 = Ops.QuantizedLinear(x1, q, b);
        var y2 = Ops.Linear(x2, q.Dequantize(), b);
        Assert.Equal(y2.ToFloatArray(), y1.ToFloatArray());
        Ops.Sum(Ops.Mul(y1, y1)).Backward();
        Ops.Sum(Ops.Mul(y2, y2)).Backward();
        Assert.Equal(x2.Grad!.ToFloatArray(), x1.Grad!.ToFloatArray());
        // the quantization error is real but bounded by half a step per weight
        var wq = q.Dequantize().ToFloatArray();
        var wf = w.ToFloatArray();
        var sc = q.Scale.ToFloatArray();
        for (int i = 0; i < wf.Length; i++) Assert.True(Math.Abs(wq[i] - wf[i]) <= 0.5f * sc[i / 12] + 1e-3f, $"w[{i}]");
    }

    [Fact]
    public void StoredTensorsWithWrongShapesAreRejectedByName()
    {
        using var scope = TensorScope.Begin();
        var data = Tensor.FromBytes(new byte[12], new Shape(2, 6), DType.I8);
        var scale = Tensor.FromBytes(new byte[4], new Shape(2), DType.F16);
        var e = Assert.Throws<ArgumentException>(() => QuantizedWeight.FromTensors(data, scale, 4, 10, "layers.0.mlp.dense_h_to_4h"));
        Assert.Contains("layers.0.mlp.dense_h_to_4h", e.Message);
        Assert.Contains("[out, 5]", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedWeight.Quantize(Tensor.Zeros(new Shape(2, 4)), 3));
    }
}

/// <summary>The fused de-quantize-and-multiply (decoding) against de-quantize + GEMM.</summary>
public class QuantizedMatVecTests
{
    // 66 columns run the 256-bit loops and the scalar tails only; 1122 runs the AVX-512 loop (INT8: 17 × 64 weights,
    // INT4: 17 × 32 bytes), then one 256-bit step and a scalar tail.
    [Theory]
    [InlineData(8, 1, 66)]
    [InlineData(4, 1, 66)]
    [InlineData(8, 5, 66)]
    [InlineData(4, 16, 66)]
    [InlineData(8, 1, 1122)]
    [InlineData(4, 1, 1122)]
    [InlineData(4, 3, 1122)]
    public void Fused_path_matches_dequantize_then_multiply(int bits, int rows, int cols)
    {
        var rng = new RandomGenerator((ulong)(bits * 100 + rows + cols));
        using var scope = TensorScope.Begin();
        var w = rng.Normal(new Shape(37, cols), 0.3f);
        var b = rng.Normal(new Shape(37));
        using var q = QuantizedWeight.Quantize(w, bits);
        var x = rng.Normal(new Shape(rows, cols));
        float[] fused;
        using (DoctorGlm.Engine.Autograd.GradMode.NoGrad()) fused = Ops.QuantizedLinear(x, q, b).ToFloatArray();
        var reference = Ops.Linear(x, q.Dequantize(), b).ToFloatArray();
        double max = reference.Max(v => Math.Abs(v));
        for (int i = 0; i < reference.Length; i++)
            Assert.True(Math.Abs(fused[i] - reference[i]) <= 1e-5 * (max + 1), $"y[{i}] fused {fused[i]} vs {reference[i]}");
        // poisoned output buffer: the kernel writes every element
        var y = Tensor.Full(new Shape(rows, 37), float.NaN);
        x.Backend.QuantizedMatVec(x, q.Data, q.Scale, bits, y);
        Assert.DoesNotContain(y.ToFloatArray(), float.IsNaN);
    }

    /// <summary>
    /// A batch's rows go through the kernel in pairs (each weight unpacked once for two rows): every row's output must
    /// be bit for bit what the row alone gives, so a prompt decoded in a batch gets the answer it gets alone.
    /// </summary>
    [Theory]
    [InlineData(8, 5, 1122)]
    [InlineData(4, 5, 1122)]
    [InlineData(4, 4, 66)]
    public void Rows_in_a_batch_give_bit_for_bit_their_single_row_results(int bits, int rows, int cols)
    {
        var rng = new RandomGenerator((ulong)(bits * 1000 + rows + cols));
        using var scope = TensorScope.Begin();
        var w = rng.Normal(new Shape(41, cols), 0.3f); // 41: ten blocks of four weight rows and a leftover row
        using var q = QuantizedWeight.Quantize(w, bits);
        var x = rng.Normal(new Shape(rows, cols));
        var all = Tensor.Full(new Shape(rows, 41), float.NaN);
        x.Backend.QuantizedMatVec(x, q.Data, q.Scale, bits, all);
        var batched = all.ToFloatArray();
        for (int r = 0; r < rows; r++)
        {
            var one = Tensor.Full(new Shape(1, 41), float.NaN);
            x.Backend.QuantizedMatVec(x.Narrow(0, r, 1).Contiguous(), q.Data, q.Scale, bits, one);
            Assert.Equal(one.ToFloatArray(), batched.AsSpan(r * 41, 41).ToArray());
        }
    }

    [Theory]
    [InlineData(8, 3, 66, DType.BF16)]
    [InlineData(4, 1, 1122, DType.F16)]
    [InlineData(4, 5, 1122, DType.BF16)]
    public void A_16_bit_input_gives_its_fp32_values_results_bit_for_bit(int bits, int rows, int cols, DType dtype) =>
        Sixteen_bit_input_check(Device.Cpu, bits, rows, cols, dtype);

    /// <summary>QuantizedMatVec of a 16-bit x against the same values in F32, bit for bit, on <paramref name="device"/>
    /// (widening is exact; CudaBackendTests runs it on the GPU).</summary>
    internal static void Sixteen_bit_input_check(Device device, int bits, int rows, int cols, DType dtype)
    {
        var rng = new RandomGenerator((ulong)(bits * 10 + rows + cols));
        using var scope = TensorScope.Begin();
        using var q = QuantizedWeight.Quantize(rng.Normal(new Shape(37, cols), 0.3f), bits);
        var x16 = Ops.Cast(rng.Normal(new Shape(rows, cols)), dtype).To(device);
        var x32 = Ops.Cast(x16, DType.F32);
        var qd = q.Data.To(device);
        var qs = q.Scale.To(device);
        var y16 = Tensor.Full(new Shape(rows, 37), float.NaN, DType.F32, device);
        var y32 = Tensor.Full(new Shape(rows, 37), float.NaN, DType.F32, device);
        x16.Backend.QuantizedMatVec(x16, qd, qs, bits, y16);
        x32.Backend.QuantizedMatVec(x32, qd, qs, bits, y32);
        Assert.Equal(y32.ToFloatArray(), y16.ToFloatArray());
        Assert.DoesNotContain(y16.ToFloatArray(), float.IsNaN);
    }

    [Fact]
    public void Int4_with_an_odd_input_width_is_refused_rather_than_read_past_the_row()
    {
        using var scope = TensorScope.Begin();
        // 5 INT4 columns would need 2.5 bytes per row; a 2-byte row makes the last column read the next row's byte.
        var x = Tensor.Full(new Shape(1, 5), 1f);
        var q = Tensor.FromBytes(new byte[6], new Shape(3, 2), DType.I8, Device.Cpu);
        var scale = Tensor.Full(new Shape(3), 1f, DType.F16);
        var y = Tensor.Empty(new Shape(1, 3), DType.F32, Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => x.Backend.QuantizedMatVec(x, q, scale, 4, y));
        Assert.Contains("do not fit", e.Message);
    }
}
