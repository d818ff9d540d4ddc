using System.Runtime.CompilerServices;

namespace DoctorGlm.Engine;

/// <summary>Exact conversions between fp32 and the 16-bit storage formats.</summary>
/// <remarks>
/// Both directions round to nearest, ties to even, and keep NaN a NaN (bf16 truncation would turn some
/// NaN payloads into infinities, so the quiet bit is forced). fp16 uses the BCL's <see cref="Half"/>,
/// whose conversion is IEEE round-to-nearest-even.
/// </remarks>
public static class HalfConvert
{
    /// <summary>fp32 → bf16 bits, round to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((u >> 16) | 0x0040); // NaN stays NaN (quiet)
        uint lsb = (u >> 16) & 1u;
        u += 0x7FFFu + lsb;
        return (ushort)(u >> 16);
    }

    /// <summary>bf16 bits → fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToFloat(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    /// <summary>fp32 → fp16 bits, round to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToF16(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    /// <summary>fp16 bits → fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16ToFloat(ushort h) => (float)BitConverter.UInt16BitsToHalf(h);

    /// <summary>Rounds a float to the nearest fp16 value and back (used where the reference computes in fp16).</summary>
    public static float RoundToF16(float f) => F16ToFloat(FloatToF16(f));
}
