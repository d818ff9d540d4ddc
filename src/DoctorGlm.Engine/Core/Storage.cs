namespace DoctorGlm.Engine;

/// <summary>
/// A block of device memory shared by a tensor and its views. Reference-counted: the memory goes back to the
/// backend's pool when the last tensor using it is disposed (or its <see cref="TensorScope"/> ends).
/// </summary>
public abstract class Storage
{
    private int _refs = 1;

    /// <summary>Creates storage of <paramref name="byteLength"/> bytes on <paramref name="device"/>.</summary>
    protected Storage(Device device, long byteLength) { Device = device; ByteLength = byteLength; }

    /// <summary>Where the memory lives.</summary>
    public Device Device { get; }

    /// <summary>Size in bytes.</summary>
    public long ByteLength { get; }

    /// <summary>True once the memory has been returned.</summary>
    public bool IsReleased => Volatile.Read(ref _refs) <= 0;

    internal void AddRef()
    {
        if (Interlocked.Increment(ref _refs) <= 1)
            throw new ObjectDisposedException(nameof(Storage), "storage was already released");
    }

    internal void Release()
    {
        int r = Interlocked.Decrement(ref _refs);
        if (r == 0) { Free(); GC.SuppressFinalize(this); }
    }

    /// <summary>Returns the memory to its allocator.</summary>
    protected abstract void Free();
}
