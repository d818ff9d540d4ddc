using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Backends.Cuda.Native;

/// <summary>
/// The CUDA driver API calls we use (libcuda), nothing more. Raw entry points return the CUresult; the wrappers
/// without the <c>Raw</c> suffix check it and throw <see cref="CudaException"/> naming the call.
/// </summary>
internal static unsafe partial class CudaDriver
{
    private const string Lib = "cuda";

    static CudaDriver() => NativeLibraries.EnsureResolver();

    public const int CUDA_SUCCESS = 0;
    public const int CUDA_ERROR_OUT_OF_MEMORY = 2;
    public const int CUDA_ERROR_NO_DEVICE = 100;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    public const int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    public const int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    [LibraryImport(Lib)] private static partial int cuInit(uint flags);
    [LibraryImport(Lib)] private static partial int cuDriverGetVersion(int* version);
    [LibraryImport(Lib)] private static partial int cuDeviceGetCount(int* count);
    [LibraryImport(Lib)] private static partial int cuDeviceGet(int* device, int ordinal);
    [LibraryImport(Lib)] private static partial int cuDeviceGetName(byte* name, int len, int device);
    [LibraryImport(Lib)] private static partial int cuDeviceGetAttribute(int* value, int attribute, int device);
    [LibraryImport(Lib)] private static partial int cuDevicePrimaryCtxRetain(nint* ctx, int device);
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] private static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Lib)] private static partial int cuCtxSetCurrent(nint ctx);
    [LibraryImport(Lib)] private static partial int cuCtxSynchronize();
    [LibraryImport(Lib)] private static partial int cuMemAlloc_v2(ulong* dptr, nuint bytes);
    [LibraryImport(Lib)] private static partial int cuMemFree_v2(ulong dptr);
    [LibraryImport(Lib)] private static partial int cuMemGetInfo_v2(nuint* free, nuint* total);
    [LibraryImport(Lib)] private static partial int cuMemcpyHtoD_v2(ulong dst, void* src, nuint bytes);
    [LibraryImport(Lib)] private static partial int cuMemcpyDtoH_v2(void* dst, ulong src, nuint bytes);
    [LibraryImport(Lib)] private static partial int cuMemcpyDtoD_v2(ulong dst, ulong src, nuint bytes);
    [LibraryImport(Lib)] private static partial int cuMemcpyHtoDAsync_v2(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(Lib)] private static partial int cuMemcpyDtoHAsync_v2(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Lib)] private static partial int cuMemcpyDtoDAsync_v2(ulong dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Lib)] private static partial int cuMemsetD8Async(ulong dst, byte value, nuint count, nint stream);
    [LibraryImport(Lib)] private static partial int cuMemsetD32Async(ulong dst, uint value, nuint count, nint stream);
    [LibraryImport(Lib)] private static partial int cuModuleLoadData(nint* module, void* image);
    [LibraryImport(Lib)] private static partial int cuModuleGetFunction(nint* function, nint module, byte* name);
    [LibraryImport(Lib)] private static partial int cuModuleUnload(nint module);
    [LibraryImport(Lib)] private static partial int cuFuncSetAttribute(nint function, int attribute, int value);
    [LibraryImport(Lib)] private static partial int cuLaunchKernel(nint f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz,
        uint sharedBytes, nint stream, void** args, void** extra);
    [LibraryImport(Lib)] private static partial int cuStreamCreate(nint* stream, uint flags);
    [LibraryImport(Lib, EntryPoint = "cuStreamDestroy_v2")] private static partial int cuStreamDestroy(nint stream);
    [LibraryImport(Lib)] private static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Lib)] private static partial int cuEventCreate(nint* ev, uint flags);
    [LibraryImport(Lib)] private static partial int cuEventRecord(nint ev, nint stream);
    [LibraryImport(Lib)] private static partial int cuEventSynchronize(nint ev);
    [LibraryImport(Lib)] private static partial int cuEventElapsedTime(float* ms, nint start, nint end);
    [LibraryImport(Lib, EntryPoint = "cuEventDestroy_v2")] private static partial int cuEventDestroy(nint ev);
    [LibraryImport(Lib)] private static partial int cuGetErrorName(int error, byte** name);
    [LibraryImport(Lib)] private static partial int cuGetErrorString(int error, byte** text);

    /// <summary>Throws <see cref="CudaException"/> for a non-success status.</summary>
    public static void Check(int status, string call)
    {
        if (status != CUDA_SUCCESS) throw Error(status, call);
    }

    /// <summary>The exception for a failed call, with the driver's name and description of the status.</summary>
    public static CudaException Error(int status, string call)
    {
        byte* name = null, text = null;
        string n = cuGetErrorName(status, &name) == CUDA_SUCCESS && name != null ? Marshal.PtrToStringUTF8((nint)name)! : "CUDA_ERROR_UNKNOWN_STATUS";
        string t = cuGetErrorString(status, &text) == CUDA_SUCCESS && text != null ? Marshal.PtrToStringUTF8((nint)text)! : "";
        return new CudaException(call, status, n, t);
    }

    public static int InitRaw() => cuInit(0);
    public static int DriverVersion() { int v; Check(cuDriverGetVersion(&v), nameof(cuDriverGetVersion)); return v; }
    public static int DeviceCount() { int n; Check(cuDeviceGetCount(&n), nameof(cuDeviceGetCount)); return n; }
    public static int DeviceGet(int ordinal) { int d; Check(cuDeviceGet(&d, ordinal), nameof(cuDeviceGet)); return d; }

    public static string DeviceName(int device)
    {
        byte* buf = stackalloc byte[256];
        Check(cuDeviceGetName(buf, 256, device), nameof(cuDeviceGetName));
        return Marshal.PtrToStringUTF8((nint)buf)!;
    }

    public static int DeviceAttribute(int device, int attribute)
    {
        int v;
        Check(cuDeviceGetAttribute(&v, attribute, device), nameof(cuDeviceGetAttribute));
        return v;
    }

    public static nint PrimaryContextRetain(int device) { nint c; Check(cuDevicePrimaryCtxRetain(&c, device), nameof(cuDevicePrimaryCtxRetain)); return c; }
    public static void PrimaryContextRelease(int device) => Check(cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease_v2");
    public static void SetCurrent(nint ctx) => Check(cuCtxSetCurrent(ctx), nameof(cuCtxSetCurrent));
    public static void Synchronize() => Check(cuCtxSynchronize(), nameof(cuCtxSynchronize));

    /// <summary>Allocates; returns the CUresult instead of throwing so the allocator can react to out-of-memory.</summary>
    public static int MemAllocRaw(out ulong ptr, long bytes) { ulong p; int s = cuMemAlloc_v2(&p, (nuint)bytes); ptr = p; return s; }
    public static void MemFree(ulong ptr) => Check(cuMemFree_v2(ptr), nameof(cuMemFree_v2));
    public static (long Free, long Total) MemGetInfo() { nuint f, t; Check(cuMemGetInfo_v2(&f, &t), nameof(cuMemGetInfo_v2)); return ((long)f, (long)t); }

    public static void MemcpyHtoD(ulong dst, void* src, long bytes) => Check(cuMemcpyHtoD_v2(dst, src, (nuint)bytes), nameof(cuMemcpyHtoD_v2));
    public static void MemcpyDtoH(void* dst, ulong src, long bytes) => Check(cuMemcpyDtoH_v2(dst, src, (nuint)bytes), nameof(cuMemcpyDtoH_v2));
    public static void MemcpyDtoD(ulong dst, ulong src, long bytes) => Check(cuMemcpyDtoD_v2(dst, src, (nuint)bytes), nameof(cuMemcpyDtoD_v2));
    public static void MemcpyHtoDAsync(ulong dst, void* src, long bytes, nint stream) => Check(cuMemcpyHtoDAsync_v2(dst, src, (nuint)bytes, stream), nameof(cuMemcpyHtoDAsync_v2));
    public static void MemcpyDtoHAsync(void* dst, ulong src, long bytes, nint stream) => Check(cuMemcpyDtoHAsync_v2(dst, src, (nuint)bytes, stream), nameof(cuMemcpyDtoHAsync_v2));
    public static void MemcpyDtoDAsync(ulong dst, ulong src, long bytes, nint stream) => Check(cuMemcpyDtoDAsync_v2(dst, src, (nuint)bytes, stream), nameof(cuMemcpyDtoDAsync_v2));
    public static void MemsetD8Async(ulong dst, byte value, long count, nint stream) => Check(cuMemsetD8Async(dst, value, (nuint)count, stream), nameof(cuMemsetD8Async));
    public static void MemsetD32Async(ulong dst, uint value, long count, nint stream) => Check(cuMemsetD32Async(dst, value, (nuint)count, stream), nameof(cuMemsetD32Async));

    public static nint ModuleLoadData(ReadOnlySpan<byte> image)
    {
        nint m;
        fixed (byte* p = image) Check(cuModuleLoadData(&m, p), nameof(cuModuleLoadData));
        return m;
    }

    public static nint ModuleGetFunction(nint module, string name)
    {
        nint f;
        var bytes = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = bytes)
        {
            int s = cuModuleGetFunction(&f, module, p);
            if (s != CUDA_SUCCESS) throw new CudaException($"cuModuleGetFunction({name})", s, Error(s, "").StatusName);
        }
        return f;
    }

    public static void ModuleUnload(nint module) => Check(cuModuleUnload(module), nameof(cuModuleUnload));

    /// <summary>Sets a kernel attribute (e.g. the dynamic shared memory a launch may ask for beyond the default 48 KiB).</summary>
    public static void FuncSetAttribute(nint function, int attribute, int value) =>
        Check(cuFuncSetAttribute(function, attribute, value), nameof(cuFuncSetAttribute));

    public static void LaunchKernel(nint f, string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, nint stream, void** args)
    {
        int s = cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, stream, args, null);
        if (s != CUDA_SUCCESS)
        {
            var e = Error(s, "");
            throw new CudaException($"cuLaunchKernel({name}, grid {grid}, block {block}, shared {sharedBytes} B)", s, e.StatusName);
        }
    }

    public static nint StreamCreate() { nint s; Check(cuStreamCreate(&s, 0), nameof(cuStreamCreate)); return s; }
    public static void StreamDestroy(nint s) => Check(cuStreamDestroy(s), "cuStreamDestroy_v2");
    public static void StreamSynchronize(nint s) => Check(cuStreamSynchronize(s), nameof(cuStreamSynchronize));
    public static nint EventCreate() { nint e; Check(cuEventCreate(&e, 0), nameof(cuEventCreate)); return e; }
    public static void EventRecord(nint e, nint stream) => Check(cuEventRecord(e, stream), nameof(cuEventRecord));
    public static void EventSynchronize(nint e) => Check(cuEventSynchronize(e), nameof(cuEventSynchronize));
    public static float EventElapsedMs(nint start, nint end) { float ms; Check(cuEventElapsedTime(&ms, start, end), nameof(cuEventElapsedTime)); return ms; }
    public static void EventDestroy(nint e) => Check(cuEventDestroy(e), "cuEventDestroy_v2");
}
