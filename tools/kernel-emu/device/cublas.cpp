// The emulated device's cuBLAS: the entry points Backends/Cuda/Native/Cublas.cs binds, with cuBLAS's argument
// checks (leading dimensions, types) and a plain column-major strided-batched GEMM summed in double. Built with
// ../cuda_host.h like the kernels, so fp16/bf16 elements convert through kernels/common.cuh.
#include "../../../kernels/common.cuh"
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <cstdio>
#include <cstdlib>

namespace {

enum { SUCCESS = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16F = 2, R_16BF = 14 };
constexpr int COMPUTE_32F = 68;

// cuBLAS type codes → the kernels' dtype codes, so the element conversions are common.cuh's (the GPU's own).
int dtype(int cudaType) { return cudaType == R_16BF ? DT_BF16 : cudaType == R_16F ? DT_F16 : DT_F32; }
float load(const void* p, long long i, int type) { return load_as_f32(p, i, dtype(type)); }
void store(void* p, long long i, int type, float v) { store_from_f32(p, i, dtype(type), v); }

bool known(int t) { return t == R_32F || t == R_16F || t == R_16BF; }

struct Handle {
    void* stream = nullptr;
    int mathMode = 0;
    void* workspace = nullptr;
    size_t workspaceBytes = 0;
};

} // namespace

extern "C" {

int cublasCreate_v2(void** handle) { *handle = new Handle(); return SUCCESS; }
int cublasDestroy_v2(void* handle) { if (!handle) return NOT_INITIALIZED; delete (Handle*)handle; return SUCCESS; }
int cublasSetStream_v2(void* handle, void* stream) { if (!handle) return NOT_INITIALIZED; ((Handle*)handle)->stream = stream; return SUCCESS; }
int cublasSetWorkspace_v2(void* handle, void* workspace, size_t bytes) {
    if (!handle) return NOT_INITIALIZED;
    if (bytes > 0 && !workspace) return INVALID_VALUE;
    if (((uintptr_t)workspace & 255) != 0) return INVALID_VALUE; // cuBLAS requires 256-byte alignment
    ((Handle*)handle)->workspace = workspace;
    ((Handle*)handle)->workspaceBytes = bytes;
    return SUCCESS;
}
int cublasSetMathMode(void* handle, int mode) { if (!handle) return NOT_INITIALIZED; ((Handle*)handle)->mathMode = mode; return SUCCESS; }

int cublasGemmStridedBatchedEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha,
                               const void* a, int aType, int lda, long long strideA, const void* b, int bType, int ldb, long long strideB,
                               const void* beta, void* c, int cType, int ldc, long long strideC, int batch, int computeType, int algo) {
    (void)algo;
    if (!handle) return NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || (transa != 0 && transa != 1) || (transb != 0 && transb != 1)) return INVALID_VALUE;
    // cuBLAS's rule: the leading dimension covers the stored rows of each column-major operand.
    if (lda < (transa ? (k > 1 ? k : 1) : (m > 1 ? m : 1))) return INVALID_VALUE;
    if (ldb < (transb ? (n > 1 ? n : 1) : (k > 1 ? k : 1))) return INVALID_VALUE;
    if (ldc < (m > 1 ? m : 1)) return INVALID_VALUE;
    if (!known(aType) || !known(bType) || !known(cType) || computeType != COMPUTE_32F) return NOT_SUPPORTED;
    // The type combinations cuBLAS's GemmEx takes with CUBLAS_COMPUTE_32F: A and B of one type; C fp32, or for
    // 16-bit A/B also that same 16-bit type (an fp32 product into a 16-bit C, or bf16 × fp16, is refused).
    if (aType != bType || (cType != R_32F && cType != aType)) return NOT_SUPPORTED;
    float al = *(const float*)alpha, be = *(const float*)beta;
    if (const char* path = std::getenv("DGLM_EMU_TRACE"); path && *path) // see driver.cpp
        if (std::FILE* t = std::fopen(path, "a")) {
            std::fprintf(t, "gemm %d %d %d %d %d %d %d %d %d\n", m, n, k, batch, transa, transb, aType, bType, cType);
            std::fclose(t);
        }
    for (int p = 0; p < batch; p++) {
        long long oa = p * strideA, ob = p * strideB, oc = p * strideC;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0;
                for (int q = 0; q < k; q++) {
                    float x = load(a, oa + (transa ? q + (long long)i * lda : i + (long long)q * lda), aType);
                    float y = load(b, ob + (transb ? j + (long long)q * ldb : q + (long long)j * ldb), bType);
                    acc += (double)x * y;
                }
                long long ci = oc + i + (long long)j * ldc;
                // beta = 0: C is not read (it may hold anything, NaN included), as cuBLAS documents.
                float v = (float)(al * acc) + (be == 0.0f ? 0.0f : be * load(c, ci, cType));
                store(c, ci, cType, v);
            }
    }
    return SUCCESS;
}

const char* cublasGetStatusName(int status) {
    switch (status) {
        case SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char* cublasGetStatusString(int status) {
    switch (status) {
        case SUCCESS: return "success";
        case NOT_INITIALIZED: return "the library was not initialized";
        case INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case NOT_SUPPORTED: return "the functionality requested is not supported";
        default: return "unknown error";
    }
}

} // extern "C"
