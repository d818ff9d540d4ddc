// Fused optimizer steps (CpuBackend.Optim.cs). The fp32 factors are derived on the host from the double
// hyper-parameters exactly as the CPU does, and the update repeats the CPU's scalar operations in order; with
// --fmad=false and IEEE sqrt/division (no fast math) every element matches the CPU bit for bit.
#include "common.cuh"

// One element of AdamW, shared by the single- and multi-tensor kernels.
__device__ __forceinline__ void adamw_element(float* p, const float* g, float* m, float* v, i64 i,
                                              float decay, float beta1, float omb1, float beta2, float omb2,
                                              float step_size, float bc2_sqrt, float eps) {
    float gi = g[i];
    float mi = m[i] * beta1 + omb1 * gi;
    float vi = v[i] * beta2 + omb2 * gi * gi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
}

// One element of Lion: sign(0) = 0 and NaN propagates, as torch.sign.
__device__ __forceinline__ void lion_element(float* p, const float* g, float* m, i64 i,
                                             float decay, float lr, float beta1, float omb1, float beta2, float omb2) {
    float gi = g[i];
    float c = m[i] * beta1 + omb1 * gi;
    float sign = c > 0.0f ? 1.0f : c < 0.0f ? -1.0f : c == 0.0f ? 0.0f : __int_as_float(0x7fc00000);
    p[i] = p[i] * decay - lr * sign;
    m[i] = m[i] * beta2 + omb2 * gi;
}

extern "C" __global__ void adamw_step(float* p, const float* g, float* m, float* v, i64 n,
                                      float decay, float beta1, float omb1, float beta2, float omb2,
                                      float step_size, float bc2_sqrt, float eps) {
    GRID_STRIDE(i, n) adamw_element(p, g, m, v, i, decay, beta1, omb1, beta2, omb2, step_size, bc2_sqrt, eps);
}

extern "C" __global__ void lion_step(float* p, const float* g, float* m, i64 n,
                                     float decay, float lr, float beta1, float omb1, float beta2, float omb2) {
    GRID_STRIDE(i, n) lion_element(p, g, m, i, decay, lr, beta1, omb1, beta2, omb2);
}

// ---- Multi-tensor forms: one launch over every parameter of a step -----------------------------------------
// The host cuts each tensor into chunks of `chunk` elements and lists (tensor, start) per chunk; block b takes
// chunks b, b + gridDim.x, ... Per-tensor pointers, lengths and step-dependent scalars are arrays in device memory.
// Each element gets exactly the arithmetic of the single-tensor kernels above, so results match them (and the
// CPU) bit for bit.

// step_size / bc2_sqrt: per-tensor arrays when the parameters are at different steps, else null and the scalars
// step_size_all / bc2_sqrt_all apply to all (the usual case: the table then stays the same from step to step).
extern "C" __global__ void adamw_multi(float* const* p, const float* const* g, float* const* m, float* const* v,
                                       const i64* n, const float* step_size, const float* bc2_sqrt, float step_size_all,
                                       float bc2_sqrt_all, const int* chunk_tensor, const i64* chunk_start, int chunks, i64 chunk,
                                       float decay, float beta1, float omb1, float beta2, float omb2, float eps) {
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        int t = chunk_tensor[c];
        i64 start = chunk_start[c], end = min(start + chunk, n[t]);
        float ss = step_size ? step_size[t] : step_size_all, bc2 = bc2_sqrt ? bc2_sqrt[t] : bc2_sqrt_all;
        for (i64 i = start + threadIdx.x; i < end; i += blockDim.x)
            adamw_element(p[t], g[t], m[t], v[t], i, decay, beta1, omb1, beta2, omb2, ss, bc2, eps);
    }
}

extern "C" __global__ void lion_multi(float* const* p, const float* const* g, float* const* m, const i64* n,
                                      const int* chunk_tensor, const i64* chunk_start, int chunks, i64 chunk,
                                      float decay, float lr, float beta1, float omb1, float beta2, float omb2) {
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        int t = chunk_tensor[c];
        i64 start = chunk_start[c], end = min(start + chunk, n[t]);
        for (i64 i = start + threadIdx.x; i < end; i += blockDim.x)
            lion_element(p[t], g[t], m[t], i, decay, lr, beta1, omb1, beta2, omb2);
    }
}

// Σ x² over many tensors (gradient clipping's global norm): one double partial per block, over its chunks in a
// fixed order, summed by the host in block order, so the result does not depend on scheduling.
extern "C" __global__ void sumsq_multi(const float* const* x, const i64* n, const int* chunk_tensor, const i64* chunk_start,
                                       int chunks, i64 chunk, double* partials) {
    double acc = 0.0;
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        int t = chunk_tensor[c];
        i64 start = chunk_start[c], end = min(start + chunk, n[t]);
        const float* xt = x[t];
        for (i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
            double v = (double)xt[i];
            acc += v * v;
        }
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
