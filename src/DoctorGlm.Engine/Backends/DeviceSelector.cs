using DoctorGlm.Engine.Backends.Cuda;

namespace DoctorGlm.Engine.Backends;

/// <summary>Turns a user's device choice ("auto", "cpu", "cuda", "cuda:N") into a <see cref="Device"/> with a registered backend.</summary>
public static class DeviceSelector
{
    /// <summary>
    /// Resolves <paramref name="spec"/>: "cpu" is always the CPU; "cuda" / "cuda:N" initialises that GPU or throws
    /// <see cref="InvalidOperationException"/> with the reason; "auto" picks cuda:0 when a driver and GPU are present
    /// and otherwise falls back to the CPU, with <paramref name="note"/> saying why.
    /// </summary>
    public static Device Resolve(string spec, out string? note)
    {
        ArgumentNullException.ThrowIfNull(spec);
        note = null;
        var s = spec.Trim().ToLowerInvariant();
        if (s == "cpu") return Device.Cpu;
        if (s == "auto")
        {
            if (CudaBackend.TryInitialize(0, out var reason) is { } gpu) return gpu.Device;
            note = $"no usable CUDA GPU, running on the CPU: {reason}";
            return Device.Cpu;
        }
        if (s == "cuda" || s.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int ordinal = 0;
            if (s.Length > 4 && (!int.TryParse(s[5..], out ordinal) || ordinal < 0))
                throw new ArgumentException($"device '{spec}': expected cuda:N with N a device number", nameof(spec));
            return CudaBackend.TryInitialize(ordinal, out var reason) is { } gpu ? gpu.Device
                : throw new InvalidOperationException($"device '{spec}' is not available: {reason}");
        }
        throw new ArgumentException($"device '{spec}': expected auto, cpu, cuda or cuda:N", nameof(spec));
    }

    /// <summary><see cref="Resolve(string, out string?)"/> without the fallback note.</summary>
    public static Device Resolve(string spec) => Resolve(spec, out _);
}
