using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Backends;

/// <summary>
/// The vectorised run converters must give exactly <see cref="HalfConvert"/>'s bits (the scalar definition,
/// itself tested against known roundings) for every kind of value: ties, subnormals, infinities, NaN payloads
/// whose truncation would be infinity, and run lengths that leave a scalar tail.
/// </summary>
public unsafe class CpuFloatConvertTests
{
    private static float[] Values(int n)
    {
        var rng = new Random(n);
        var special = new uint[]
        {
            0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF,
            0x3F80_8000, 0x3F81_8000, 0x3F80_7FFF, 0x3F80_8001, 0x0000_0001, 0x807F_FFFF, 0x7F7F_FFFF, 0x477F_F000,
        };
        var x = new float[n];
        for (int i = 0; i < n; i++)
            x[i] = i < special.Length ? BitConverter.UInt32BitsToSingle(special[i])
                : i % 3 == 0 ? BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32))
                : (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-8, 6)));
        return x;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(37)]
    [InlineData(4099)]
    public void SingleToBf16MatchesScalar(int n)
    {
        var x = Values(n);
        var got = new ushort[n];
        fixed (float* px = x) fixed (ushort* pg = got) CpuFloatConvert.FromSingle(px, DType.BF16, pg, n);
        for (int i = 0; i < n; i++)
            Assert.True(HalfConvert.FloatToBf16(x[i]) == got[i], $"[{i}] 0x{BitConverter.SingleToUInt32Bits(x[i]):X8}: got 0x{got[i]:X4}, want 0x{HalfConvert.FloatToBf16(x[i]):X4}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(37)]
    [InlineData(4099)]
    public void SingleToF16MatchesScalar(int n)
    {
        var x = Values(n);
        var got = new ushort[n];
        fixed (float* px = x) fixed (ushort* pg = got) CpuFloatConvert.FromSingle(px, DType.F16, pg, n);
        for (int i = 0; i < n; i++)
        {
            ushort want = HalfConvert.FloatToF16(x[i]);
            bool bothNaN = float.IsNaN(x[i]) && float.IsNaN(HalfConvert.F16ToFloat(got[i]));
            Assert.True(want == got[i] || bothNaN, $"[{i}] {x[i]}: got 0x{got[i]:X4}, want 0x{want:X4}");
        }
    }

    [Theory]
    [InlineData("BF16", 1)]
    [InlineData("BF16", 37)]
    [InlineData("BF16", 4099)]
    [InlineData("F16", 37)]
    [InlineData("F16", 4099)]
    public void ToSingleIsExact(string type, int n)
    {
        var dt = Enum.Parse<DType>(type);
        var rng = new Random(n);
        var bits = new ushort[n];
        for (int i = 0; i < n; i++) bits[i] = (ushort)rng.Next(0, 1 << 16);
        var got = new float[n];
        fixed (ushort* pb = bits) fixed (float* pg = got) CpuFloatConvert.ToSingle(dt, pb, pg, n);
        for (int i = 0; i < n; i++)
        {
            float want = dt == DType.BF16 ? HalfConvert.Bf16ToFloat(bits[i]) : HalfConvert.F16ToFloat(bits[i]);
            Assert.True(BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got[i]) || (float.IsNaN(want) && float.IsNaN(got[i])),
                $"[{i}] 0x{bits[i]:X4}: got {got[i]}, want {want}");
        }
    }

    [Fact]
    public void F16WideningInRegistersIsExactForEveryBitPattern()
    {
        // Both widths (the GEMM's 8-wide panel loads, the dot products' 16-wide rows) against the scalar definition.
        var got8 = new float[8];
        var got16 = new float[16];
        for (int i = 0; i < 1 << 16; i += 16)
        {
            var u = Enumerable.Range(i, 16).Select(v => (uint)v).ToArray();
            System.Runtime.Intrinsics.Vector512.CopyTo(CpuFloatConvert.F16BitsToSingle(System.Runtime.Intrinsics.Vector512.Create(u)), got16);
            System.Runtime.Intrinsics.Vector256.CopyTo(CpuFloatConvert.F16BitsToSingle(System.Runtime.Intrinsics.Vector256.Create(u.AsSpan(0, 8))), got8);
            for (int j = 0; j < 16; j++)
            {
                float want = HalfConvert.F16ToFloat((ushort)(i + j));
                Same(want, got16[j], i + j);
                if (j < 8) Same(want, got8[j], i + j);
            }
        }

        // NaN payloads need not survive, but a NaN must stay a NaN (and an infinity an infinity).
        static void Same(float want, float got, int bits) =>
            Assert.True(BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got) || (float.IsNaN(want) && float.IsNaN(got)),
                $"0x{bits:X4}: got {got} (0x{BitConverter.SingleToUInt32Bits(got):X8}), want {want}");
    }
}
