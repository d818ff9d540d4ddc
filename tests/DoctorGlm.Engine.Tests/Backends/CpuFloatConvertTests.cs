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
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) Assert.Skip("the in-register fp16 widening needs AVX-512");
        var bits = new ushort[1 << 16];
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        var got = new float[16];
        fixed (ushort* pb = bits)
        fixed (float* pg = got)
            for (int i = 0; i < bits.Length; i += 16)
            {
                System.Runtime.Intrinsics.Vector512.Store(CpuWideningDot.F16Widener.Widen16(pb + i), pg);
                for (int j = 0; j < 16; j++)
                {
                    float want = HalfConvert.F16ToFloat(bits[i + j]);
                    // NaN payloads need not survive, but a NaN must stay a NaN (and an infinity an infinity).
                    Assert.True(BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got[j]) || (float.IsNaN(want) && float.IsNaN(got[j])),
                        $"0x{bits[i + j]:X4}: got {got[j]} (0x{BitConverter.SingleToUInt32Bits(got[j]):X8}), want {want}");
                }
            }
    }
}
