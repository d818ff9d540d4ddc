namespace DoctorGlm.Engine;

/// <summary>Element types a tensor can hold.</summary>
/// <remarks>
/// Math on the CPU backend is done in fp32; <see cref="F16"/> and <see cref="BF16"/> are storage formats
/// (checkpoints, GPU activations) converted with exact round-to-nearest-even (<see cref="HalfConvert"/>).
/// </remarks>
public enum DType
{
    /// <summary>IEEE-754 binary32.</summary>
    F32,
    /// <summary>IEEE-754 binary16.</summary>
    F16,
    /// <summary>bfloat16: the top 16 bits of a binary32.</summary>
    BF16,
    /// <summary>32-bit signed integer (token ids, labels, position ids).</summary>
    I32,
    /// <summary>8-bit unsigned integer (boolean masks: 1 = true).</summary>
    U8,
    /// <summary>8-bit signed integer (quantized weights).</summary>
    I8,
}

/// <summary>Facts about <see cref="DType"/> values.</summary>
public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.U8 or DType.I8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    /// <summary>True for the floating-point types.</summary>
    public static bool IsFloat(this DType t) => t is DType.F32 or DType.F16 or DType.BF16;

    /// <summary>The safetensors name of the type (F32, F16, BF16, I32, U8, I8).</summary>
    public static string SafeTensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.F16 => "F16", DType.BF16 => "BF16", DType.I32 => "I32", DType.U8 => "U8", DType.I8 => "I8",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}
