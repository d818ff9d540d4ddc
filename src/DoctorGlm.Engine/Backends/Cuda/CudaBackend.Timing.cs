using DoctorGlm.Engine.Backends.Cuda.Native;

namespace DoctorGlm.Engine.Backends.Cuda;

// Timing hooks for benchmarks: events on the backend's one stream, and the L2 size a benchmark must overwrite to
// start a kernel from a cold cache. Kept apart from CudaBackend.cs because nothing in the engine itself needs them.
public sealed unsafe partial class CudaBackend
{
    /// <summary>CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE (cuda.h).</summary>
    private const int L2CacheSizeAttribute = 38;

    /// <summary>
    /// The device's L2 cache in bytes. A benchmark that writes more than this between two timed launches (a memset
    /// of a scratch buffer) times the kernel with its inputs in device memory, not in L2.
    /// </summary>
    public long L2CacheBytes => CudaDriver.DeviceAttribute(_ordinal, L2CacheSizeAttribute);

    /// <summary>Creates an event with timing enabled; <see cref="Record"/> places it in this backend's stream.</summary>
    public CudaEvent CreateEvent()
    {
        MakeCurrent();
        return new CudaEvent(this, CudaDriver.EventCreate());
    }

    /// <summary>
    /// Enqueues <paramref name="e"/> on this backend's stream (the one every kernel, copy and cuBLAS call of the backend
    /// goes to): it completes, and takes its timestamp on the device, once all work queued before it has finished.
    /// </summary>
    public void Record(CudaEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e.Owner != this) throw new ArgumentException($"CudaBackend.Record: the event belongs to {e.Owner.Device}, not {Device}", nameof(e));
        MakeCurrent();
        CudaDriver.EventRecord(e.Handle, _stream);
    }
}

/// <summary>
/// A CUDA event of one <see cref="CudaBackend"/> (made by <see cref="CudaBackend.CreateEvent"/>). The time between two
/// recorded events is measured by the device itself, so it covers exactly the GPU work queued between them — unlike a
/// host clock, which also sees launch overhead and, without a synchronisation, none of the work.
/// </summary>
public sealed class CudaEvent : IDisposable
{
    private nint _handle;

    internal CudaEvent(CudaBackend owner, nint handle)
    {
        Owner = owner;
        _handle = handle;
    }

    internal CudaBackend Owner { get; }

    internal nint Handle => _handle != 0 ? _handle : throw new ObjectDisposedException(nameof(CudaEvent));

    /// <summary>Blocks the calling thread until the event's last recording has completed on the device.</summary>
    public void Synchronize()
    {
        Owner.MakeCurrent();
        CudaDriver.EventSynchronize(Handle);
    }

    /// <summary>
    /// Milliseconds between two completed events (resolution about 0.5 µs, as the driver documents). Both must have been
    /// recorded and completed (call <see cref="Synchronize"/> on the later one first).
    /// </summary>
    public static float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(end);
        start.Owner.MakeCurrent();
        return CudaDriver.EventElapsedMs(start.Handle, end.Handle);
    }

    /// <summary>Destroys the event (the driver releases it once any pending recording has completed).</summary>
    public void Dispose()
    {
        var h = Interlocked.Exchange(ref _handle, 0);
        if (h == 0) return;
        Owner.MakeCurrent();
        CudaDriver.EventDestroy(h);
    }
}
