using System.Collections.Concurrent;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Backends;

/// <summary>Finds the backend for a device. The CPU backend is always present; GPU backends register themselves.</summary>
public static class BackendRegistry
{
    private static readonly ConcurrentDictionary<Device, IBackend> s_backends = new();

    static BackendRegistry() => s_backends[Device.Cpu] = CpuBackend.Instance;

    /// <summary>The backend for <paramref name="device"/>.</summary>
    public static IBackend For(Device device) =>
        s_backends.TryGetValue(device, out var b) ? b
        : throw new InvalidOperationException($"no backend is registered for device {device}" +
            (device.Kind == DeviceKind.Cuda ? " (is the CUDA backend initialised and a GPU present?)" : ""));

    /// <summary>Registers (or replaces) the backend of a device.</summary>
    public static void Register(IBackend backend) => s_backends[backend.Device] = backend;

    /// <summary>Backends available in this process.</summary>
    public static IReadOnlyCollection<IBackend> All => s_backends.Values.ToArray();
}
