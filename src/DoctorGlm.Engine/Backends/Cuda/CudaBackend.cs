using System.Runtime.InteropServices;
using DoctorGlm.Engine.Backends.Cuda.Native;

namespace DoctorGlm.Engine.Backends.Cuda;

/// <summary>
/// The GPU backend: NVRTC-compiled kernels (<c>kernels/*.cu</c>) and cuBLAS GEMMs on one stream of one device,
/// with pooled device memory. Semantics equal <see cref="Cpu.CpuBackend"/>'s, against which it is tested.
/// </summary>
/// <remarks>
/// Create it with <see cref="TryInitialize(int, out string?)"/>, which registers it in <see cref="BackendRegistry"/>.
/// Every call may come from any thread: the primary context is made current on the calling thread, and all work
/// goes to the backend's stream, so it executes in submission order. Calls that return host values
/// (<see cref="Sum"/>, <see cref="CrossEntropyForward"/>, copies to the host) synchronise.
/// </remarks>
public sealed unsafe partial class CudaBackend : IBackend, IDisposable
{
    private static readonly Dictionary<int, CudaBackend> s_instances = new();
    private static readonly object s_initLock = new();

    [ThreadStatic] private static nint t_currentContext;

    private readonly nint _context;
    private readonly nint _stream;
    private readonly nint _cublas;
    private readonly object _cublasLock = new();
    private int _cublasMathMode;
    private readonly CudaAllocator _allocator;
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<string, nint> _modules = new();
    private readonly Dictionary<string, nint> _functions = new();
    private readonly object _moduleLock = new();
    private readonly int _multiprocessors;
    private bool _disposed;

    private CudaBackend(int ordinal, KernelCompiler compiler)
    {
        NativeLibraries.DriverVersion ??= CudaDriver.DriverVersion(); // before NVRTC is first loaded: see LibrarySearch.Load
        int dev = CudaDriver.DeviceGet(ordinal);
        Device = Device.Cuda(ordinal);
        DeviceName = CudaDriver.DeviceName(dev);
        ComputeCapability = CudaDriver.DeviceAttribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10
                          + CudaDriver.DeviceAttribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        _multiprocessors = CudaDriver.DeviceAttribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        _ordinal = dev;
        _context = CudaDriver.PrimaryContextRetain(dev);
        MakeCurrent();
        _stream = CudaDriver.StreamCreate();
        _cublas = Cublas.Create();
        Cublas.SetStream(_cublas, _stream);
        // Pedantic math: fp32 GEMMs must not silently drop to TF32, or they would stop matching the CPU reference.
        Cublas.SetMathMode(_cublas, Cublas.CUBLAS_PEDANTIC_MATH);
        _cublasMathMode = Cublas.CUBLAS_PEDANTIC_MATH;
        _allocator = new CudaAllocator(this);
        _compiler = compiler;
        // cuBLAS's workspace from our pool, so the allocator's statistics cover it and cuBLAS allocates nothing at the
        // first GEMM (NVIDIA's recommended sizes: 32 MiB on Hopper, 4 MiB before).
        CublasWorkspaceBytes = ComputeCapability >= 90 ? 32L << 20 : 4L << 20;
        _cublasWorkspace = Temp(CublasWorkspaceBytes);
        if (!Cublas.TrySetWorkspace(_cublas, _cublasWorkspace.Pointer, CublasWorkspaceBytes))
        {
            _cublasWorkspace.Dispose();
            _cublasWorkspace = null;
            CublasWorkspaceBytes = 0;
        }
    }

    private Scratch? _cublasWorkspace;

    /// <summary>Bytes of the pooled workspace given to cuBLAS (0 where cuBLAS manages its own).</summary>
    public long CublasWorkspaceBytes { get; }

    private readonly int _ordinal;

    /// <summary>
    /// Initialises CUDA device <paramref name="ordinal"/> (once per process) and registers its backend. Returns null
    /// with <paramref name="reason"/> saying why when there is no driver, no NVRTC/cuBLAS, or no such GPU.
    /// </summary>
    public static CudaBackend? TryInitialize(int ordinal, out string? reason)
    {
        lock (s_initLock)
        {
            if (s_instances.TryGetValue(ordinal, out var existing)) { reason = null; return existing; }
            try
            {
                int status = CudaDriver.InitRaw();
                if (status != CudaDriver.CUDA_SUCCESS) throw CudaDriver.Error(status, "cuInit");
                int count = CudaDriver.DeviceCount();
                if (ordinal >= count) { reason = $"CUDA device {ordinal} requested but the driver reports {count} device(s)"; return null; }
                var backend = new CudaBackend(ordinal, new KernelCompiler());
                _ = backend._compiler.NvrtcVersion; // fail here, with the reason, rather than at the first kernel
                s_instances[ordinal] = backend;
                BackendRegistry.Register(backend);
                reason = null;
                return backend;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or CudaException)
            {
                reason = e.Message;
                return null;
            }
        }
    }

    /// <summary><see cref="TryInitialize(int, out string?)"/> for device 0.</summary>
    public static CudaBackend? TryInitialize() => TryInitialize(0, out _);

    /// <inheritdoc />
    public Device Device { get; }

    /// <summary>The GPU's name as the driver reports it.</summary>
    public string DeviceName { get; }

    /// <summary>Compute capability as major·10 + minor (80 for A100, 90 for H100).</summary>
    public int ComputeCapability { get; }

    /// <summary>
    /// What a log of a GPU run should start with: the device, its compute capability, multiprocessors, memory and L2,
    /// the driver's CUDA version, NVRTC's version, and the file each CUDA library was loaded from.
    /// </summary>
    public string Describe()
    {
        MakeCurrent();
        var (free, total) = CudaDriver.MemGetInfo();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        int driver = NativeLibraries.DriverVersion ?? CudaDriver.DriverVersion();
        var (nvMajor, nvMinor) = _compiler.NvrtcVersion;
        var sb = new System.Text.StringBuilder();
        sb.AppendLine(inv, $"{Device}: {DeviceName}, sm_{ComputeCapability}, {_multiprocessors} multiprocessors, {total / 1073741824.0:F1} GiB ({free / 1073741824.0:F1} free), L2 {L2CacheBytes / 1048576.0:F0} MiB");
        sb.AppendLine(inv, $"driver CUDA {driver / 1000}.{driver % 1000 / 10}, NVRTC {nvMajor}.{nvMinor}, cuBLAS workspace {CublasWorkspaceBytes >> 20} MiB, attention kernels {AttentionKernel}");
        foreach (var (logical, file) in NativeLibraries.LoadedFiles.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            sb.AppendLine(inv, $"  {logical}: {file}");
        return sb.ToString().TrimEnd();
    }

    /// <inheritdoc />
    public Storage Allocate(long bytes) => new CudaStorage(_allocator, Device, bytes);

    /// <inheritdoc />
    public MemoryStats Memory => _allocator.Stats;

    /// <summary>Returns every pooled (idle) block to the driver.</summary>
    public void TrimPool() => _allocator.Trim();

    /// <summary>Starts peak tracking afresh from the bytes in use now.</summary>
    public void ResetPeak() => _allocator.ResetPeak();

    /// <summary>Blocks until all queued work on this backend's stream has finished.</summary>
    public void Synchronize() { MakeCurrent(); CudaDriver.StreamSynchronize(_stream); }

    /// <summary>Makes this device's primary context current on the calling thread (a no-op when it already is).</summary>
    internal void MakeCurrent()
    {
        if (t_currentContext == _context) return;
        CudaDriver.SetCurrent(_context);
        t_currentContext = _context;
    }

    /// <summary>Releases the stream, cuBLAS handle, modules and pooled memory; the backend is unusable afterwards.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MakeCurrent();
        CudaDriver.StreamSynchronize(_stream);
        ReleaseTables();
        _cublasWorkspace?.Dispose(); // nothing is in flight after the synchronisation; the handle is destroyed below
        _allocator.Trim();
        lock (_moduleLock) foreach (var m in _modules.Values) CudaDriver.ModuleUnload(m);
        Cublas.Destroy(_cublas);
        CudaDriver.StreamDestroy(_stream);
        CudaDriver.PrimaryContextRelease(_ordinal);
        lock (s_initLock) s_instances.Remove(Device.Index);
    }

    // ---------------------------------------------------------------- kernels and launches

    /// <summary>The function <paramref name="kernel"/> of kernel file <paramref name="file"/>, compiling and loading the file on first use.</summary>
    private nint Function(string file, string kernel)
    {
        string key = file + "/" + kernel;
        lock (_moduleLock)
        {
            if (_functions.TryGetValue(key, out var f)) return f;
            if (!_modules.TryGetValue(file, out var module))
            {
                var compiled = _compiler.CompileEmbedded(file, ComputeCapability);
                MakeCurrent();
                _modules[file] = module = CudaDriver.ModuleLoadData(compiled.Image);
            }
            return _functions[key] = CudaDriver.ModuleGetFunction(module, kernel);
        }
    }

    /// <summary>Threads per block for elementwise kernels.</summary>
    private const int Block = 256;

    /// <summary>Grid size for a grid-stride loop over <paramref name="n"/> elements: enough blocks to fill the GPU, no more.</summary>
    private uint GridFor(long n) => (uint)Math.Clamp((n + Block - 1) / Block, 1, (long)_multiprocessors * 32);

    /// <summary>Dynamic shared memory each function has been allowed beyond the default 48 KiB (set once, grown as asked).</summary>
    private readonly Dictionary<nint, uint> _sharedOptIn = new();

    private const uint DefaultSharedLimit = 48 * 1024;

    private long _launches, _gemms, _transfers;

    /// <summary><see cref="Gemm"/> calls so far (each one or a few cuBLAS calls, plus a rounding launch for mixed operand types).</summary>
    internal long GemmCalls => Interlocked.Read(ref _gemms);

    /// <summary>Kernel launches so far (tests pin how many a decoding step makes; cuBLAS calls are not counted).</summary>
    internal long Launches => Interlocked.Read(ref _launches);

    /// <summary>Copies between host and device so far, each a round trip the host waits for (tests pin a step's).</summary>
    internal long HostTransfers => Interlocked.Read(ref _transfers);

    private void Launch(string file, string kernel, (uint, uint, uint) grid, (uint, uint, uint) block, uint sharedBytes, KernelArgs args)
    {
        Interlocked.Increment(ref _launches);
        var f = Function(file, kernel);
        MakeCurrent();
        // Beyond 48 KiB of dynamic shared memory a function must opt in. (Strictly, static + dynamic must fit the
        // 48 KiB; the kernels that take dynamic shared memory — the attention kernels — declare no static shared
        // variables, so the dynamic size alone decides. A kernel with both would have to count its static bytes.)
        if (sharedBytes > DefaultSharedLimit)
            lock (_moduleLock)
                if (!_sharedOptIn.TryGetValue(f, out var allowed) || allowed < sharedBytes)
                {
                    CudaDriver.FuncSetAttribute(f, CudaDriver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)sharedBytes);
                    _sharedOptIn[f] = sharedBytes;
                }
        CudaDriver.LaunchKernel(f, kernel, grid, block, sharedBytes, _stream, args.Pointers);
    }

    /// <summary>Launches a grid-stride kernel over <paramref name="n"/> elements.</summary>
    private void LaunchElementwise(string file, string kernel, long n, KernelArgs args)
    {
        if (n <= 0) return;
        Launch(file, kernel, (GridFor(n), 1, 1), (Block, 1, 1), 0, args);
    }

    /// <summary>Device address of a tensor's first element (the tensor must live on this device).</summary>
    internal ulong Ptr(Tensor t)
    {
        t.ThrowIfDisposed();
        if (t.Storage is not CudaStorage cs || t.Device != Device)
            throw new InvalidOperationException($"{t.Describe("tensor")} is on {t.Device}, not {Device}");
        return cs.Pointer + (ulong)(t.Offset * t.DType.SizeOf());
    }

    private ulong PtrOrNull(Tensor? t) => t is null ? 0 : Ptr(t);

    private static void RequireContiguous(Tensor t, string what)
    {
        if (!t.IsContiguous) throw new InvalidOperationException($"{t.Describe(what)} must be contiguous");
    }

    /// <summary>Temporary device memory for one call (returned to the pool at the end of the call, stream-ordered).</summary>
    private sealed class Scratch : IDisposable
    {
        private readonly CudaAllocator _allocator;
        private readonly long _capacity;

        public Scratch(CudaAllocator allocator, long bytes)
        {
            _allocator = allocator;
            Pointer = allocator.Rent(bytes, out _capacity);
        }

        public ulong Pointer { get; }

        // Back to the pool right away: later users of the block are queued on the same stream, after our kernels.
        public void Dispose() => _allocator.Return(Pointer, _capacity);
    }

    private Scratch Temp(long bytes) => new(_allocator, Math.Max(bytes, 8));

    // ---------------------------------------------------------------- host transfers

    /// <inheritdoc />
    public void CopyFromHost(ReadOnlySpan<byte> src, Tensor dst)
    {
        RequireContiguous(dst, "destination");
        long bytes = dst.NumElements * dst.DType.SizeOf();
        if (bytes != src.Length) throw new ArgumentException($"CopyFromHost: {src.Length} bytes for {dst.Describe("tensor")} of {bytes} bytes");
        if (bytes == 0) return;
        MakeCurrent();
        // Pageable host memory: the async copy is staged by the driver; synchronising keeps the span's lifetime simple.
        Interlocked.Increment(ref _transfers);
        fixed (byte* p = src) CudaDriver.MemcpyHtoDAsync(Ptr(dst), p, bytes, _stream);
        CudaDriver.StreamSynchronize(_stream);
    }

    /// <inheritdoc />
    public void CopyToHost(Tensor src, Span<byte> dst)
    {
        RequireContiguous(src, "source");
        long bytes = src.NumElements * src.DType.SizeOf();
        if (bytes > dst.Length) throw new ArgumentException($"CopyToHost: {src.Describe("tensor")} has {bytes} bytes, the destination {dst.Length}");
        if (bytes == 0) return;
        MakeCurrent();
        Interlocked.Increment(ref _transfers);
        fixed (byte* p = dst) CudaDriver.MemcpyDtoHAsync(p, Ptr(src), bytes, _stream);
        CudaDriver.StreamSynchronize(_stream);
    }

    private T[] Download<T>(ulong ptr, long count) where T : unmanaged
    {
        var a = new T[count];
        if (count == 0) return a;
        MakeCurrent();
        Interlocked.Increment(ref _transfers);
        fixed (T* p = a) CudaDriver.MemcpyDtoHAsync(p, ptr, count * sizeof(T), _stream);
        CudaDriver.StreamSynchronize(_stream);
        return a;
    }

    private void Upload<T>(ReadOnlySpan<T> data, ulong ptr) where T : unmanaged
    {
        if (data.IsEmpty) return;
        MakeCurrent();
        Interlocked.Increment(ref _transfers);
        fixed (T* p = data) CudaDriver.MemcpyHtoDAsync(ptr, p, (long)data.Length * sizeof(T), _stream);
        CudaDriver.StreamSynchronize(_stream);
    }

    // ---------------------------------------------------------------- core members

    /// <inheritdoc />
    public void Fill(Tensor dst, float value)
    {
        RequireContiguous(dst, "destination");
        long n = dst.NumElements;
        if (n == 0) return;
        ulong p = Ptr(dst);
        MakeCurrent();
        switch (dst.DType)
        {
            case DType.F32: CudaDriver.MemsetD32Async(p, BitConverter.SingleToUInt32Bits(value), n, _stream); break;
            case DType.I32: CudaDriver.MemsetD32Async(p, unchecked((uint)checked((int)value)), n, _stream); break;
            case DType.U8: CudaDriver.MemsetD8Async(p, checked((byte)value), n, _stream); break;
            case DType.I8: CudaDriver.MemsetD8Async(p, unchecked((byte)checked((sbyte)value)), n, _stream); break;
            default:
            {
                ushort bits = dst.DType == DType.F16 ? HalfConvert.FloatToF16(value) : HalfConvert.FloatToBf16(value);
                using var a = new KernelArgs().Add(p).Add(bits).Add(n);
                LaunchElementwise("elementwise.cu", "fill_u16", n, a);
                break;
            }
        }
    }

    /// <summary>The kernels' strided layout (elementwise.cu's StridedLayout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct StridedLayout
    {
        public long Rank;
        public fixed long Shape[8];
        public fixed long SrcStride[8];
        public fixed long DstStride[8];
    }

    /// <inheritdoc />
    public void Copy(Tensor src, Tensor dst)
    {
        if (src.Shape != dst.Shape) throw new ArgumentException($"Copy: {src.Describe("source")} and {dst.Describe("destination")} differ in shape");
        bool floats = src.DType.IsFloat() && dst.DType.IsFloat();
        if (!floats && src.DType != dst.DType) throw new ArgumentException($"Copy: cannot convert {src.DType} to {dst.DType}");
        long n = src.NumElements;
        if (n == 0) return;
        ulong ps = Ptr(src), pd = Ptr(dst);
        if (src.IsContiguous && dst.IsContiguous)
        {
            if (src.DType == dst.DType)
            {
                MakeCurrent();
                CudaDriver.MemcpyDtoDAsync(pd, ps, n * src.DType.SizeOf(), _stream);
                return;
            }
            using var c = new KernelArgs().Add(ps).Add((int)src.DType).Add(pd).Add((int)dst.DType).Add(n);
            LaunchElementwise("elementwise.cu", "cast_contiguous", n, c);
            return;
        }
        if (src.Rank > 8) throw new NotSupportedException($"Copy: {src.Describe("source")} has more than 8 dimensions");
        var layout = new StridedLayout { Rank = src.Rank };
        for (int d = 0; d < src.Rank; d++)
        {
            layout.Shape[d] = src.Shape[d];
            layout.SrcStride[d] = src.Strides[d];
            layout.DstStride[d] = dst.Strides[d];
        }
        using var a = new KernelArgs().Add(ps).Add((int)src.DType).Add(pd).Add((int)dst.DType).Add(layout).Add(n);
        LaunchElementwise("elementwise.cu", "strided_copy", n, a);
    }

    /// <inheritdoc />
    public void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y)
    {
        ulong pa = Ptr(a), pb = Ptr(b);
        if (a.DType == DType.F32 && b.DType == DType.F32 && y.DType == DType.F32)
        {
            using var k = new KernelArgs().Add(pa).Add(alpha).Add(pb).Add(beta).Add(Ptr(y)).Add(pa == pb ? 1 : 0).Add(y.NumElements);
            LaunchElementwise("elementwise.cu", "add_scaled", y.NumElements, k);
            return;
        }
        using var m = new KernelArgs().Add(pa).Add((int)a.DType).Add(alpha).Add(pb).Add((int)b.DType).Add(beta).Add(Ptr(y)).Add((int)y.DType)
            .Add(pa == pb ? 1 : 0).Add(y.NumElements);
        LaunchElementwise("elementwise.cu", "add_scaled_mixed", y.NumElements, m);
    }

    /// <inheritdoc />
    public void AddScaledRowBias(Tensor a, float alpha, Tensor b, Tensor bias, Tensor y)
    {
        ElementwiseArguments.CheckAddScaledRowBias(a, b, bias, y);
        using var k = new KernelArgs().Add(Ptr(a)).Add((int)a.DType).Add(alpha).Add(Ptr(b)).Add(Ptr(bias)).Add(Ptr(y)).Add((int)y.DType)
            .Add(bias.NumElements).Add(y.NumElements);
        LaunchElementwise("elementwise.cu", "add_scaled_row_bias", y.NumElements, k);
    }

    /// <inheritdoc />
    public void Mul(Tensor a, Tensor b, Tensor y)
    {
        using var k = new KernelArgs().Add(Ptr(a)).Add(Ptr(b)).Add(Ptr(y)).Add(y.NumElements);
        LaunchElementwise("elementwise.cu", "mul", y.NumElements, k);
    }

    /// <inheritdoc />
    public void AddRowVector(Tensor y, Tensor v, float alpha, Tensor? output = null)
    {
        if (output is not null)
        {
            ElementwiseArguments.CheckRowVectorOutput(y, output);
            using var o = new KernelArgs().Add(Ptr(y)).Add(Ptr(v)).Add(alpha).Add(Ptr(output)).Add((int)output.DType).Add(v.NumElements).Add(y.NumElements);
            LaunchElementwise("elementwise.cu", "add_row_vector_to", y.NumElements, o);
            return;
        }
        using var k = new KernelArgs().Add(Ptr(y)).Add(Ptr(v)).Add(alpha).Add(v.NumElements).Add(y.NumElements);
        LaunchElementwise("elementwise.cu", "add_row_vector", y.NumElements, k);
    }

    /// <inheritdoc />
    public void SumRows(Tensor x, Tensor y, bool accumulate)
    {
        long cols = y.NumElements, rows = x.NumElements / cols;
        using var k = new KernelArgs().Add(Ptr(x)).Add(Ptr(y)).Add(rows).Add(cols).Add(accumulate ? 1 : 0);
        LaunchElementwise("elementwise.cu", "sum_rows", cols, k);
    }

    private double Reduce(Tensor x, int mode)
    {
        long n = x.NumElements;
        if (n == 0) return 0;
        // A fixed grid for a given n: the partials, and their in-order host sum, do not depend on timing.
        uint blocks = (uint)Math.Min((n + Block - 1) / Block, 1024);
        using var partials = Temp(blocks * sizeof(double));
        using var k = new KernelArgs().Add(Ptr(x)).Add(partials.Pointer).Add(n).Add(mode);
        Launch("elementwise.cu", "reduce_partials", (blocks, 1, 1), (Block, 1, 1), 0, k);
        double s = 0;
        foreach (var p in Download<double>(partials.Pointer, blocks)) s += p;
        return s;
    }

    /// <inheritdoc />
    public double Sum(Tensor x) => Reduce(x, 0);

    /// <inheritdoc />
    public double SumOfSquares(Tensor x) => Reduce(x, 1);

    /// <inheritdoc />
    public long CountNonFinite(Tensor x) => (long)Reduce(x, 2);

    /// <inheritdoc />
    /// <remarks>
    /// cuBLAS is column-major; a row-major matrix is the column-major transpose, so C = op(A)·op(B) row-major is
    /// computed as Cᵀ = op(B)ᵀ·op(A)ᵀ column-major: operands swapped, m and n swapped, transposes kept. Operands
    /// may be fp32, bf16 or fp16; accumulation is always fp32 without TF32. cuBLAS wants A and B of one type, so
    /// an fp32 operand paired with a 16-bit one (activations times frozen bf16 weights) is first rounded to that
    /// type in a pooled scratch buffer: the product then runs on tensor cores, which is the point of keeping the
    /// weights in 16 bits, and the rounding is the same one autocast applies to a GEMM's inputs.
    /// </remarks>
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, long aOffset, long lda, long strideA,
        Tensor b, long bOffset, long ldb, long strideB,
        float beta, Tensor c, long cOffset, long ldc, long strideC, int batch)
    {
        Interlocked.Increment(ref _gemms);
        if (m == 0 || n == 0 || batch == 0) return;
        GemmArguments.CheckOutput(c, beta);
        // An fp32 A beside a 16-bit B is rounded into scratch; when that copy would be large (the LM head's backward:
        // tokens × 130528 gradients of the logits, 2 GB in bf16 at 8192 tokens), the product runs in bands of A's
        // rows instead, each band rounded on its own — the same sums, bounded scratch.
        long rowBytes = (long)k * b.DType.SizeOf();
        if (a.DType == DType.F32 && b.DType != DType.F32 && !transA && batch == 1 && (long)m * rowBytes > RoundingScratchBytes)
        {
            int band = (int)Math.Clamp(RoundingScratchBytes / Math.Max(rowBytes, 1), 1, m);
            for (int r0 = 0; r0 < m; r0 += band)
            {
                int rows = Math.Min(band, m - r0);
                GemmCore(transA, transB, rows, n, k, alpha, a, aOffset + r0 * lda, lda, strideA, b, bOffset, ldb, strideB,
                    beta, c, cOffset + r0 * ldc, ldc, strideC, batch);
            }
            return;
        }
        GemmCore(transA, transB, m, n, k, alpha, a, aOffset, lda, strideA, b, bOffset, ldb, strideB, beta, c, cOffset, ldc, strideC, batch);
    }

    /// <summary>
    /// The most scratch a mixed-type <see cref="Gemm"/> rounds its fp32 A into at once (256 MiB; larger products run
    /// in bands of rows). Internal so that tests can make it small.
    /// </summary>
    internal long RoundingScratchBytes { get; set; } = 256L << 20;

    private void GemmCore(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, long aOffset, long lda, long strideA,
        Tensor b, long bOffset, long ldb, long strideB,
        float beta, Tensor c, long cOffset, long ldc, long strideC, int batch)
    {
        // cuBLAS checks ld ≥ rows of each column-major operand even where a single stored row makes it irrelevant.
        static int Ld(long ld, long storedRows, long storedCols) => checked((int)(storedRows == 1 ? Math.Max(Math.Max(ld, storedCols), 1) : ld));
        int la = transA ? Ld(lda, k, m) : Ld(lda, m, k);
        int lb = transB ? Ld(ldb, n, k) : Ld(ldb, k, n);
        int lc = Ld(ldc, m, n);
        ulong pa = Ptr(a) + (ulong)(aOffset * a.DType.SizeOf());
        ulong pb = Ptr(b) + (ulong)(bOffset * b.DType.SizeOf());
        ulong pc = Ptr(c) + (ulong)(cOffset * c.DType.SizeOf());
        DType ta = a.DType, tb = b.DType;
        CublasType(ta);
        CublasType(tb);
        CublasType(c.DType);
        // cuBLAS multiplies A and B of one type: a 16-bit C (beta = 0) takes its own type; otherwise the fp32 side
        // (or A, if both are 16-bit) is rounded to the other's type, over the span the GEMM reads.
        DType target = c.DType != DType.F32 ? c.DType : ta == DType.F32 || tb != DType.F32 ? tb : ta;
        Scratch? roundedA = null, roundedB = null;
        if (ta != target)
        {
            roundedA = RoundOperand(pa, ta, transA ? k : m, transA ? m : k, lda, strideA, batch, target);
            (pa, ta) = (roundedA.Pointer, target);
        }
        if (tb != target)
        {
            roundedB = RoundOperand(pb, tb, transB ? n : k, transB ? k : n, ldb, strideB, batch, target);
            (pb, tb) = (roundedB.Pointer, target);
        }
        using var scratchA = roundedA;
        using var scratchB = roundedB;
        MakeCurrent();
        lock (_cublasLock)
        {
            // fp32 stays pedantic (no TF32: it must match the CPU reference); 16-bit inputs take the default
            // math mode, in which cuBLAS may use tensor cores, still accumulating in fp32 (CUBLAS_COMPUTE_32F).
            int mode = ta == DType.F32 ? Cublas.CUBLAS_PEDANTIC_MATH : Cublas.CUBLAS_DEFAULT_MATH;
            if (mode != _cublasMathMode) { Cublas.SetMathMode(_cublas, mode); _cublasMathMode = mode; }
            void Run() => Cublas.GemmStridedBatched(_cublas, transB, transA, n, m, k, alpha,
                pb, CublasType(tb), lb, strideB, pa, CublasType(ta), la, strideA,
                beta, pc, CublasType(c.DType), lc, strideC, batch);
            try { Run(); }
            catch (CudaException e) when (e.Status == Cublas.CUBLAS_STATUS_ALLOC_FAILED)
            {
                // cuBLAS allocates its workspace itself, outside our pool; when the pool holds the memory, give the
                // pooled (unused) blocks back to the driver and try once more.
                _allocator.Trim();
                Run();
            }
        }
    }

    /// <summary>
    /// Converts the elements a strided-batched GEMM reads of one operand (from its first element to the last
    /// element of its last matrix, gaps included) into a scratch buffer of <paramref name="type"/>; the same
    /// strides then address it.
    /// </summary>
    private Scratch RoundOperand(ulong p, DType from, int storedRows, int storedCols, long ld, long stride, int batch, DType type)
    {
        long count = (batch - 1) * stride + (storedRows - 1) * ld + storedCols;
        var buffer = Temp(count * type.SizeOf());
        using var c = new KernelArgs().Add(p).Add((int)from).Add(buffer.Pointer).Add((int)type).Add(count);
        LaunchElementwise("elementwise.cu", "cast_contiguous", count, c);
        return buffer;
    }

    private static int CublasType(DType t) => t switch
    {
        DType.F32 => Cublas.CUDA_R_32F,
        DType.BF16 => Cublas.CUDA_R_16BF,
        DType.F16 => Cublas.CUDA_R_16F,
        _ => throw new NotSupportedException($"Gemm: {t} operands are not supported"),
    };
}

/// <summary>
/// Kernel arguments for cuLaunchKernel: each value is copied into native memory at its natural alignment and
/// the launch gets an array of pointers to them (what <c>void** kernelParams</c> means).
/// </summary>
internal sealed unsafe class KernelArgs : IDisposable
{
    private const int Capacity = 1024, MaxArgs = 32;
    private readonly byte* _data = (byte*)NativeMemory.AlignedAlloc(Capacity, 16);
    private readonly void** _ptrs = (void**)NativeMemory.Alloc(MaxArgs, (nuint)sizeof(void*));
    private int _used, _count;

    public KernelArgs Add<T>(T value) where T : unmanaged
    {
        int align = Math.Min(sizeof(T), 8);
        _used = (_used + align - 1) / align * align;
        if (_used + sizeof(T) > Capacity || _count == MaxArgs) throw new InvalidOperationException("too many kernel arguments");
        *(T*)(_data + _used) = value;
        _ptrs[_count++] = _data + _used;
        _used += sizeof(T);
        return this;
    }

    public void** Pointers => _ptrs;

    public void Dispose()
    {
        NativeMemory.AlignedFree(_data);
        NativeMemory.Free(_ptrs);
    }
}
