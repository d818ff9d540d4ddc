namespace DoctorGlm.Engine;

/// <summary>Kinds of compute device.</summary>
public enum DeviceKind
{
    /// <summary>The host CPU.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through the CUDA driver API.</summary>
    Cuda,
}

/// <summary>A compute device: a kind and an ordinal.</summary>
/// <param name="Kind">Which backend owns memory on this device.</param>
/// <param name="Index">Ordinal among devices of that kind (0 for the CPU).</param>
public readonly record struct Device(DeviceKind Kind, int Index = 0)
{
    /// <summary>The host CPU.</summary>
    public static Device Cpu => new(DeviceKind.Cpu);

    /// <summary>CUDA device <paramref name="index"/>.</summary>
    public static Device Cuda(int index = 0) => new(DeviceKind.Cuda, index);

    /// <inheritdoc />
    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : $"cuda:{Index}";
}
