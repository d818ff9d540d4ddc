using System.Runtime.InteropServices;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine;

/// <summary>
/// An n-dimensional array on a device, with an optional place in the autograd graph.
/// </summary>
/// <remarks>
/// <para>A tensor is a view (shape, strides, offset) over reference-counted <see cref="Storage"/>; views made by
/// <see cref="Reshape"/>, <see cref="Narrow"/>, <see cref="Permute"/> share it. Kernels take contiguous tensors;
/// ops call <see cref="Contiguous"/> where they must.</para>
/// <para>Lifetime: a tensor created inside a <see cref="TensorScope"/> is disposed when the scope ends unless
/// <see cref="Keep"/> moves it out. Outside a scope the caller owns it (disposal is still deterministic with
/// <see cref="Dispose"/>; a finalizer on the storage is only a safety net).</para>
/// </remarks>
public sealed unsafe class Tensor : IDisposable
{
    private readonly long[] _strides;
    private bool _disposed;

    internal Tensor(Storage storage, Shape shape, long[] strides, long offset, DType dtype)
    {
        Storage = storage;
        Shape = shape;
        _strides = strides;
        Offset = offset;
        DType = dtype;
        TensorScope.Register(this);
    }

    /// <summary>Dimension sizes.</summary>
    public Shape Shape { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Strides in elements, one per dimension.</summary>
    public ReadOnlySpan<long> Strides => _strides;

    /// <summary>Offset of the first element in the storage, in elements.</summary>
    public long Offset { get; }

    /// <summary>The memory this tensor views.</summary>
    public Storage Storage { get; }

    /// <summary>Where the data lives.</summary>
    public Device Device => Storage.Device;

    /// <summary>The backend that runs kernels on this tensor's device.</summary>
    public IBackend Backend => BackendRegistry.For(Storage.Device);

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Rank;

    /// <summary>Total number of elements.</summary>
    public long NumElements => Shape.NumElements;

    /// <summary>A name used in error messages and checkpoints (optional).</summary>
    public string? Name { get; set; }

    /// <summary>Whether gradients flow to this tensor. Set it on leaves (parameters); ops set it on their outputs.</summary>
    public bool RequiresGrad { get; set; }

    /// <summary>Accumulated gradient of a leaf after <see cref="Backward"/>; owned by this tensor, not by a scope.</summary>
    public Tensor? Grad { get; set; }

    /// <summary>The node that produced this tensor, or null for a leaf.</summary>
    internal GradNode? GradFn { get; set; }

    /// <summary>True for tensors not produced by a recorded op (parameters, inputs).</summary>
    public bool IsLeaf => GradFn is null;

    internal TensorScope? OwnerScope { get; set; }

    /// <summary>True once disposed; using it again throws.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>True when elements are laid out row-major without gaps.</summary>
    public bool IsContiguous
    {
        get
        {
            long expect = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (Shape[i] != 1 && _strides[i] != expect) return false;
                expect *= Shape[i];
            }
            return true;
        }
    }

    /// <summary>How this tensor is called in error messages.</summary>
    public string Describe(string fallback) => Name is null ? $"{fallback} {Shape} {DType}" : $"{fallback} '{Name}' {Shape} {DType}";

    // ---------------------------------------------------------------- creation

    /// <summary>Uninitialised tensor (contents are whatever the pool had: never read before writing).</summary>
    public static Tensor Empty(Shape shape, DType dtype = DType.F32, Device? device = null)
    {
        var dev = device ?? Device.Cpu;
        var storage = BackendRegistry.For(dev).Allocate(Math.Max(1, shape.NumElements) * dtype.SizeOf());
        return new Tensor(storage, shape, shape.ContiguousStrides(), 0, dtype);
    }

    /// <summary>Tensor filled with <paramref name="value"/>.</summary>
    public static Tensor Full(Shape shape, float value, DType dtype = DType.F32, Device? device = null)
    {
        var t = Empty(shape, dtype, device);
        t.Backend.Fill(t, value);
        return t;
    }

    /// <summary>Tensor of zeros.</summary>
    public static Tensor Zeros(Shape shape, DType dtype = DType.F32, Device? device = null) => Full(shape, 0f, dtype, device);

    /// <summary>Zeros with the shape, dtype and device of <paramref name="like"/>.</summary>
    public static Tensor ZerosLike(Tensor like) => Zeros(like.Shape, like.DType, like.Device);

    /// <summary>Uninitialised tensor with the shape, dtype and device of <paramref name="like"/>.</summary>
    public static Tensor EmptyLike(Tensor like) => Empty(like.Shape, like.DType, like.Device);

    /// <summary>Copies host floats into a new tensor (converted to <paramref name="dtype"/> with round-to-nearest-even).</summary>
    public static Tensor FromArray(ReadOnlySpan<float> data, Shape shape, DType dtype = DType.F32, Device? device = null)
    {
        CheckCount(data.Length, shape);
        if (dtype == DType.F32) return FromBytes(MemoryMarshal.AsBytes(data), shape, DType.F32, device);
        if (dtype is DType.F16 or DType.BF16)
        {
            var bits = new ushort[data.Length];
            for (int i = 0; i < data.Length; i++)
                bits[i] = dtype == DType.F16 ? HalfConvert.FloatToF16(data[i]) : HalfConvert.FloatToBf16(data[i]);
            return FromBytes(MemoryMarshal.AsBytes(bits.AsSpan()), shape, dtype, device);
        }
        throw new ArgumentException($"FromArray(float) cannot make a {dtype} tensor; use the int or byte overload");
    }

    /// <summary>Copies host ints into a new <see cref="DType.I32"/> tensor.</summary>
    public static Tensor FromArray(ReadOnlySpan<int> data, Shape shape, Device? device = null)
    {
        CheckCount(data.Length, shape);
        return FromBytes(MemoryMarshal.AsBytes(data), shape, DType.I32, device);
    }

    /// <summary>Copies host bytes into a new <see cref="DType.U8"/> tensor (masks: 1 = true).</summary>
    public static Tensor FromArray(ReadOnlySpan<byte> data, Shape shape, Device? device = null)
    {
        CheckCount(data.Length, shape);
        return FromBytes(data, shape, DType.U8, device);
    }

    /// <summary>A new tensor from raw little-endian element bytes.</summary>
    public static Tensor FromBytes(ReadOnlySpan<byte> bytes, Shape shape, DType dtype, Device? device = null)
    {
        if (bytes.Length != shape.NumElements * dtype.SizeOf())
            throw new ArgumentException($"{bytes.Length} bytes do not hold a {dtype} tensor of shape {shape} ({shape.NumElements * dtype.SizeOf()} bytes)");
        var t = Empty(shape, dtype, device);
        t.Backend.CopyFromHost(bytes, t);
        return t;
    }

    /// <summary>A one-element fp32 tensor.</summary>
    public static Tensor Scalar(float value, Device? device = null) => FromArray([value], new Shape(1), DType.F32, device);

    private static void CheckCount(int count, Shape shape)
    {
        if (count != shape.NumElements)
            throw new ArgumentException($"{count} values do not fill shape {shape} ({shape.NumElements} elements)");
    }

    // ---------------------------------------------------------------- host access

    /// <summary>Pointer to the first element; CPU tensors only.</summary>
    internal T* Ptr<T>() where T : unmanaged
    {
        ThrowIfDisposed();
        if (Storage is not CpuStorage cs) throw new InvalidOperationException($"{Describe("tensor")} is on {Device}, not the CPU");
        return (T*)(cs.Pointer + Offset * DType.SizeOf());
    }

    /// <summary>The elements of a contiguous CPU tensor, without copying.</summary>
    public Span<T> AsSpan<T>() where T : unmanaged
    {
        if (!IsContiguous) throw new InvalidOperationException($"{Describe("tensor")} is not contiguous; call Contiguous() first");
        if (sizeof(T) != DType.SizeOf()) throw new InvalidOperationException($"{Describe("tensor")} cannot be viewed as {typeof(T).Name}");
        long n = NumElements;
        if (n > int.MaxValue) throw new InvalidOperationException($"{Describe("tensor")} has more than 2^31 elements; use a narrower view");
        return new Span<T>(Ptr<T>(), (int)n);
    }

    /// <summary>Copies the elements to a new host array as floats (f16/bf16 converted exactly, ints cast).</summary>
    public float[] ToFloatArray()
    {
        using var host = HostContiguous();
        var result = new float[NumElements];
        switch (DType)
        {
            case DType.F32: host.AsSpan<float>().CopyTo(result); break;
            case DType.F16: { var s = host.AsSpan<ushort>(); for (int i = 0; i < s.Length; i++) result[i] = HalfConvert.F16ToFloat(s[i]); break; }
            case DType.BF16: { var s = host.AsSpan<ushort>(); for (int i = 0; i < s.Length; i++) result[i] = HalfConvert.Bf16ToFloat(s[i]); break; }
            case DType.I32: { var s = host.AsSpan<int>(); for (int i = 0; i < s.Length; i++) result[i] = s[i]; break; }
            case DType.U8: { var s = host.AsSpan<byte>(); for (int i = 0; i < s.Length; i++) result[i] = s[i]; break; }
            case DType.I8: { var s = host.AsSpan<sbyte>(); for (int i = 0; i < s.Length; i++) result[i] = s[i]; break; }
        }
        return result;
    }

    /// <summary>Copies an <see cref="DType.I32"/> tensor to a host array.</summary>
    public int[] ToIntArray()
    {
        if (DType != DType.I32) throw new InvalidOperationException($"{Describe("tensor")} is not I32");
        using var host = HostContiguous();
        return host.AsSpan<int>().ToArray();
    }

    /// <summary>The raw element bytes, row-major (copied).</summary>
    public byte[] ToBytes()
    {
        using var host = HostContiguous();
        return new ReadOnlySpan<byte>(host.Ptr<byte>(), checked((int)(NumElements * DType.SizeOf()))).ToArray();
    }

    /// <summary>The single value of a one-element tensor.</summary>
    public float Item()
    {
        if (NumElements != 1) throw new InvalidOperationException($"Item() needs one element; {Describe("tensor")} has {NumElements}");
        return ToFloatArray()[0];
    }

    /// <summary>A new contiguous CPU tensor holding a copy of this one's elements in the same dtype.</summary>
    internal Tensor HostContiguous()
    {
        ThrowIfDisposed();
        using var _ = TensorScope.Unscoped();
        var dst = Empty(Shape, DType, Device.Cpu);
        if (Device.Kind == DeviceKind.Cpu) dst.Backend.Copy(this, dst);
        else
        {
            using var c = IsContiguous ? null : Empty(Shape, DType, Device);
            var src = this;
            if (c is not null) { Backend.Copy(this, c); src = c; }
            Backend.CopyToHost(src, new Span<byte>(dst.Ptr<byte>(), checked((int)(NumElements * DType.SizeOf()))));
        }
        return dst;
    }

    // ---------------------------------------------------------------- views (autograd-aware: see Ops)

    /// <summary>Same data with a new shape (a view when contiguous). One dimension may be -1.</summary>
    public Tensor Reshape(params int[] shape) => Ops.Reshape(this, shape);

    /// <summary>A view of <paramref name="length"/> entries of dimension <paramref name="dim"/> from <paramref name="start"/>.</summary>
    public Tensor Narrow(int dim, int start, int length) => Ops.Narrow(this, dim, start, length);

    /// <summary>A view with dimensions reordered.</summary>
    public Tensor Permute(params int[] dims) => Ops.Permute(this, dims);

    /// <summary>A view with two dimensions swapped.</summary>
    public Tensor Transpose(int dim0, int dim1) => Ops.Transpose(this, dim0, dim1);

    /// <summary>This tensor if contiguous, otherwise a contiguous copy.</summary>
    public Tensor Contiguous() => Ops.Contiguous(this);

    /// <summary>Converts to another floating dtype (a copy; gradients flow back in fp32 terms).</summary>
    public Tensor To(DType dtype) => Ops.Cast(this, dtype);

    /// <summary>Copies to another device (no autograd).</summary>
    public Tensor To(Device device)
    {
        if (device == Device) return this;
        var src = Contiguous();
        var dst = Empty(Shape, DType, device);
        if (Device.Kind == DeviceKind.Cpu)
            dst.Backend.CopyFromHost(new ReadOnlySpan<byte>(src.Ptr<byte>(), checked((int)(NumElements * DType.SizeOf()))), dst);
        else if (device.Kind == DeviceKind.Cpu)
            src.Backend.CopyToHost(src, new Span<byte>(dst.Ptr<byte>(), checked((int)(NumElements * DType.SizeOf()))));
        else
            throw new NotSupportedException($"copy from {Device} to {device}: go through the CPU");
        if (!ReferenceEquals(src, this)) src.Dispose();
        return dst;
    }

    /// <summary>A tensor sharing this one's data but cut from the graph (no gradient flows through it).</summary>
    public Tensor Detach()
    {
        ThrowIfDisposed();
        Storage.AddRef();
        return new Tensor(Storage, Shape, _strides.ToArray(), Offset, DType) { Name = Name };
    }

    /// <summary>Runs backpropagation from this tensor (a one-element loss unless <paramref name="gradient"/> is given).</summary>
    public void Backward(Tensor? gradient = null) => AutogradEngine.Backward(this, gradient);

    /// <summary>A view on the same storage with another shape/strides (no autograd; used by view ops).</summary>
    internal Tensor ViewAs(Shape shape, long[] strides, long offset)
    {
        ThrowIfDisposed();
        Storage.AddRef();
        return new Tensor(Storage, shape, strides, offset, DType);
    }

    /// <summary>
    /// A contiguous view of <paramref name="shape"/> read as <paramref name="dtype"/>, at element
    /// <paramref name="offset"/> of this tensor's storage counted in <paramref name="dtype"/>'s elements (so always
    /// aligned to its size): several small arrays of mixed types (I32, F32, U8) packed into one buffer cross the bus
    /// in one copy.
    /// </summary>
    internal Tensor Reinterpret(DType dtype, Shape shape, long offset)
    {
        ThrowIfDisposed();
        if (offset < 0 || (offset + shape.NumElements) * dtype.SizeOf() > Storage.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(offset), $"Tensor.Reinterpret: {shape} at element {offset} runs past the {Storage.ByteLength}-byte storage");
        Storage.AddRef();
        return new Tensor(Storage, shape, shape.ContiguousStrides(), offset, dtype);
    }

    /// <summary>
    /// Moves this tensor out of the current <see cref="TensorScope"/> into its parent (or to no scope), so it
    /// survives the scope's end. Returns this tensor.
    /// </summary>
    public Tensor Keep()
    {
        OwnerScope?.HandToParent(this);
        return this;
    }

    /// <summary>Releases this view's hold on the storage (the memory is freed when no view is left).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        OwnerScope?.Forget(this);
        OwnerScope = null;
        Storage.Release();
    }

    internal void ThrowIfDisposed()
    {
        if (_disposed || Storage.IsReleased)
            throw new ObjectDisposedException(Describe("tensor"), "the tensor was disposed (its TensorScope ended?); call Keep() to make it outlive the scope");
    }

    /// <summary>Shape, dtype, device and a few values.</summary>
    public override string ToString()
    {
        if (_disposed) return $"Tensor{Shape} {DType} (disposed)";
        var v = ToFloatArray();
        string vals = string.Join(", ", v.Take(6).Select(x => x.ToString("G5")));
        return $"Tensor{Shape} {DType} {Device}{(Name is null ? "" : " '" + Name + "'")} [{vals}{(v.Length > 6 ? ", …" : "")}]";
    }
}
