using DoctorGlm.Engine.Backends.Cpu;
using DoctorGlm.Engine.Backends.Cuda.Native;

namespace DoctorGlm.Engine.Backends.Cuda;

/// <summary>
/// Pooled device memory for one GPU. cuMemAlloc/cuMemFree synchronise the device and cost tens of microseconds,
/// so blocks are rounded to the CPU allocator's size classes and kept on free lists: a training step that
/// allocates the same shapes every step stops calling the driver after the first one. All kernels of a backend
/// run on one stream, so a block released by one op and handed to the next is only touched after the earlier
/// kernels that used it (stream order) — no synchronisation is needed on reuse.
/// </summary>
internal sealed class CudaAllocator(CudaBackend owner)
{
    private readonly Dictionary<long, Stack<ulong>> _free = new();
    private readonly object _lock = new();
    private long _inUse, _peak, _pooled;

    public ulong Rent(long bytes, out long capacity)
    {
        capacity = CpuAllocator.SizeClass(bytes);
        lock (_lock)
        {
            if (_free.TryGetValue(capacity, out var stack) && stack.Count > 0)
            {
                _pooled -= capacity;
                Account(capacity);
                return stack.Pop();
            }
        }
        owner.MakeCurrent();
        int status = CudaDriver.MemAllocRaw(out ulong ptr, capacity);
        if (status == CudaDriver.CUDA_ERROR_OUT_OF_MEMORY)
        {
            // Idle blocks of other size classes may be what is missing: give them back and retry once.
            Trim();
            status = CudaDriver.MemAllocRaw(out ptr, capacity);
            if (status == CudaDriver.CUDA_ERROR_OUT_OF_MEMORY)
            {
                var (free, total) = CudaDriver.MemGetInfo();
                var s = Stats;
                throw new OutOfMemoryException($"{owner.Device}: cannot allocate {bytes:N0} bytes (size class {capacity:N0}): " +
                    $"{free:N0} of {total:N0} bytes free on the device; this process holds {s.InUseBytes:N0} in tensors and {s.PooledBytes:N0} pooled (peak {s.PeakBytes:N0})");
            }
        }
        CudaDriver.Check(status, "cuMemAlloc_v2");
        lock (_lock) Account(capacity);
        return ptr;
    }

    private void Account(long capacity)
    {
        _inUse += capacity;
        if (_inUse > _peak) _peak = _inUse;
    }

    /// <summary>Back to the pool (no driver call, so it is safe from a finalizer thread).</summary>
    public void Return(ulong ptr, long capacity)
    {
        lock (_lock)
        {
            _inUse -= capacity;
            if (!_free.TryGetValue(capacity, out var stack)) _free[capacity] = stack = new Stack<ulong>();
            stack.Push(ptr);
            _pooled += capacity;
        }
    }

    /// <summary>Frees every pooled block (waits for the device first, since queued kernels may still use them).</summary>
    public void Trim()
    {
        List<ulong> blocks;
        lock (_lock)
        {
            blocks = _free.Values.SelectMany(s => s).ToList();
            _free.Clear();
            _pooled = 0;
        }
        if (blocks.Count == 0) return;
        owner.MakeCurrent();
        CudaDriver.Synchronize();
        foreach (var b in blocks) CudaDriver.MemFree(b);
    }

    public MemoryStats Stats { get { lock (_lock) return new MemoryStats(_inUse, _peak, _pooled); } }

    public void ResetPeak() { lock (_lock) _peak = _inUse; }
}

/// <summary>Device memory from a <see cref="CudaAllocator"/>.</summary>
internal sealed class CudaStorage : Storage
{
    private readonly CudaAllocator _allocator;
    private readonly long _capacity;
    private ulong _ptr;

    public CudaStorage(CudaAllocator allocator, Device device, long bytes) : base(device, bytes)
    {
        _allocator = allocator;
        _ptr = allocator.Rent(bytes, out _capacity);
    }

    /// <summary>The device address of the first byte.</summary>
    public ulong Pointer => _ptr != 0 ? _ptr : throw new ObjectDisposedException(nameof(CudaStorage), "device memory was already released");

    protected override void Free()
    {
        var p = Interlocked.Exchange(ref _ptr, 0);
        if (p != 0) _allocator.Return(p, _capacity);
    }

    ~CudaStorage()
    {
        var p = Interlocked.Exchange(ref _ptr, 0);
        if (p != 0) _allocator.Return(p, _capacity);
    }
}
