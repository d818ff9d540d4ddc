using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Backends.Cuda.Native;

/// <summary>cuBLAS (v2 API): a handle, its stream and math mode, and the one GEMM entry point we use.</summary>
internal static unsafe partial class Cublas
{
    private const string Lib = "cublas";

    static Cublas() => NativeLibraries.EnsureResolver();

    public const int CUBLAS_STATUS_SUCCESS = 0;
    public const int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
    /// <summary>CUBLAS_PEDANTIC_MATH: no TF32 or other reduced-precision shortcuts, so fp32 GEMMs match the CPU reference.</summary>
    public const int CUBLAS_PEDANTIC_MATH = 2;
    /// <summary>CUBLAS_DEFAULT_MATH: tensor cores allowed for 16-bit inputs; fp32 inputs still without TF32.</summary>
    public const int CUBLAS_DEFAULT_MATH = 0;
    /// <summary>CUBLAS_STATUS_ALLOC_FAILED: cuBLAS could not allocate its workspace.</summary>
    public const int CUBLAS_STATUS_ALLOC_FAILED = 3;
    public const int CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14;
    public const int CUBLAS_COMPUTE_32F = 68;
    public const int CUBLAS_GEMM_DEFAULT = -1;

    [LibraryImport(Lib)] private static partial int cublasCreate_v2(nint* handle);
    [LibraryImport(Lib)] private static partial int cublasDestroy_v2(nint handle);
    [LibraryImport(Lib)] private static partial int cublasSetStream_v2(nint handle, nint stream);
    [LibraryImport(Lib)] private static partial int cublasSetMathMode(nint handle, int mode);
    [LibraryImport(Lib)] private static partial int cublasGemmStridedBatchedEx(nint handle, int transa, int transb, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB,
        void* beta, ulong c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);
    [LibraryImport(Lib)] private static partial int cublasSetWorkspace_v2(nint handle, ulong workspace, nuint bytes);
    [LibraryImport(Lib)] private static partial byte* cublasGetStatusString(int status);
    [LibraryImport(Lib)] private static partial byte* cublasGetStatusName(int status);

    public static void Check(int status, string call)
    {
        if (status == CUBLAS_STATUS_SUCCESS) return;
        var n = cublasGetStatusName(status);
        var s = cublasGetStatusString(status);
        throw new CudaException(call, status, n == null ? "CUBLAS_STATUS_UNKNOWN" : Marshal.PtrToStringUTF8((nint)n)!,
            s == null ? null : Marshal.PtrToStringUTF8((nint)s));
    }

    public static nint Create() { nint h; Check(cublasCreate_v2(&h), nameof(cublasCreate_v2)); return h; }
    public static void Destroy(nint h) => Check(cublasDestroy_v2(h), nameof(cublasDestroy_v2));
    public static void SetStream(nint h, nint stream) => Check(cublasSetStream_v2(h, stream), nameof(cublasSetStream_v2));
    public static void SetMathMode(nint h, int mode) => Check(cublasSetMathMode(h, mode), nameof(cublasSetMathMode));

    /// <summary>
    /// Gives the handle a workspace of ours (cuBLAS then allocates none itself); false where this cuBLAS has no
    /// cublasSetWorkspace (older than 11.x's), which keeps its own.
    /// </summary>
    public static bool TrySetWorkspace(nint h, ulong workspace, long bytes)
    {
        try { Check(cublasSetWorkspace_v2(h, workspace, (nuint)bytes), nameof(cublasSetWorkspace_v2)); return true; }
        catch (EntryPointNotFoundException) { return false; }
    }

    /// <summary>Column-major strided batched GEMM with fp32 scalars and fp32 accumulation.</summary>
    public static void GemmStridedBatched(nint h, bool transA, bool transB, int m, int n, int k, float alpha,
        ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB,
        float beta, ulong c, int cType, int ldc, long strideC, int batch)
    {
        Check(cublasGemmStridedBatchedEx(h, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
            &alpha, a, aType, lda, strideA, b, bType, ldb, strideB, &beta, c, cType, ldc, strideC, batch,
            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), nameof(cublasGemmStridedBatchedEx));
    }
}
