// Fused optimizer steps (CpuBackend.Optim.cs). The fp32 factors are derived on the host from the double
// hyper-parameters exactly as the CPU does, and the update repeats the CPU's scalar operations in order; with
// --fmad=false and IEEE sqrt/division (no fast math) every element matches the CPU bit for bit.
#include "common.cuh"

extern "C" __global__ void adamw_step(float* p, const float* g, float* m, float* v, i64 n,
                                      float decay, float beta1, float omb1, float beta2, float omb2,
                                      float step_size, float bc2_sqrt, float eps) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = m[i] * beta1 + omb1 * gi;
        float vi = v[i] * beta2 + omb2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

// Lion: sign(0) = 0 and NaN propagates, as torch.sign.
extern "C" __global__ void lion_step(float* p, const float* g, float* m, i64 n,
                                     float decay, float lr, float beta1, float omb1, float beta2, float omb2) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float c = m[i] * beta1 + omb1 * gi;
        float sign = c > 0.0f ? 1.0f : c < 0.0f ? -1.0f : c == 0.0f ? 0.0f : __int_as_float(0x7fc00000);
        p[i] = p[i] * decay - lr * sign;
        m[i] = m[i] * beta2 + omb2 * gi;
    }
}
