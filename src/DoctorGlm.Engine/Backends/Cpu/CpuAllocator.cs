using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// Pooled, 64-byte aligned native memory for CPU tensors. Blocks are rounded up to a size class and kept on a
/// free list when released, so a training loop that allocates the same shapes every step stops calling the OS
/// after its first step. Native memory (not managed arrays) keeps the GC out of multi-gigabyte weights and lets
/// freeing be deterministic.
/// </summary>
internal static unsafe class CpuAllocator
{
    private const int Alignment = 64;
    private static readonly Dictionary<long, Stack<nint>> s_free = new();
    private static readonly object s_lock = new();
    private static long s_inUse, s_peak, s_pooled;

    /// <summary>Pool at most this many idle bytes; beyond it released blocks go back to the OS.</summary>
    public static long MaxPooledBytes { get; set; } = 4L << 30;

    /// <summary>Size classes: powers of two up to 1 MiB, then multiples of 1/8 of the power of two (≤12.5% waste).</summary>
    internal static long SizeClass(long bytes)
    {
        if (bytes <= Alignment) return Alignment;
        long p = 1L << (64 - (int)long.LeadingZeroCount(bytes - 1)); // next power of two ≥ bytes
        if (p <= 1 << 20) return p;
        long step = p / 16;
        return (bytes + step - 1) / step * step;
    }

    public static nint Rent(long bytes, out long capacity)
    {
        capacity = SizeClass(bytes);
        lock (s_lock)
        {
            s_inUse += capacity;
            if (s_inUse > s_peak) s_peak = s_inUse;
            if (s_free.TryGetValue(capacity, out var stack) && stack.Count > 0)
            {
                s_pooled -= capacity;
                return stack.Pop();
            }
        }
        void* p;
        try { p = NativeMemory.AlignedAlloc((nuint)capacity, Alignment); }
        catch (OutOfMemoryException)
        {
            Trim();
            try { p = NativeMemory.AlignedAlloc((nuint)capacity, Alignment); }
            catch (OutOfMemoryException)
            {
                lock (s_lock) s_inUse -= capacity;
                throw new OutOfMemoryException($"CPU allocation of {bytes:N0} bytes failed ({Stats})");
            }
        }
        return (nint)p;
    }

    public static void Return(nint ptr, long capacity)
    {
        lock (s_lock)
        {
            s_inUse -= capacity;
            if (s_pooled + capacity <= MaxPooledBytes)
            {
                if (!s_free.TryGetValue(capacity, out var stack)) s_free[capacity] = stack = new Stack<nint>();
                stack.Push(ptr);
                s_pooled += capacity;
                return;
            }
        }
        NativeMemory.AlignedFree((void*)ptr);
    }

    /// <summary>Called by a finalizer: give the block straight back to the OS.</summary>
    public static void FreeFromFinalizer(nint ptr, long capacity)
    {
        lock (s_lock) s_inUse -= capacity;
        NativeMemory.AlignedFree((void*)ptr);
    }

    /// <summary>Frees every pooled block.</summary>
    public static void Trim()
    {
        lock (s_lock)
        {
            foreach (var stack in s_free.Values)
                while (stack.Count > 0) NativeMemory.AlignedFree((void*)stack.Pop());
            s_free.Clear();
            s_pooled = 0;
        }
    }

    public static MemoryStats Stats { get { lock (s_lock) return new MemoryStats(s_inUse, s_peak, s_pooled); } }

    public static void ResetPeak() { lock (s_lock) s_peak = s_inUse; }
}

/// <summary>Host memory from <see cref="CpuAllocator"/>.</summary>
internal sealed unsafe class CpuStorage : Storage
{
    private readonly long _capacity;
    private nint _ptr;

    public CpuStorage(long bytes) : base(Device.Cpu, bytes) => _ptr = CpuAllocator.Rent(bytes, out _capacity);

    public byte* Pointer => (byte*)_ptr;

    protected override void Free()
    {
        var p = Interlocked.Exchange(ref _ptr, 0);
        if (p != 0) CpuAllocator.Return(p, _capacity);
    }

    ~CpuStorage()
    {
        var p = Interlocked.Exchange(ref _ptr, 0);
        if (p != 0) CpuAllocator.FreeFromFinalizer(p, _capacity);
    }
}
