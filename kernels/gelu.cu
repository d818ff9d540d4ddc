// GELU, tanh form, computed through the equivalent sigmoid form like the CPU kernel (CpuBackend.Gelu.cs):
// 0.5·(1 + tanh(z)) = σ(2z), which avoids 1 + tanh(z) ≈ 0 losing every digit for very negative x.
#include "common.cuh"

#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

// s = σ(2k(x + c·x³)), written in the CPU's operation order.
__device__ __forceinline__ float gelu_sigmoid(float x) {
    float z = ((x * x) * (2.0f * GELU_K * GELU_C) + 2.0f * GELU_K) * x;
    return 1.0f / (1.0f + expf(-z));
}

// y = gelu(u), u = x + bias[column] when bias is given (the MLP's bias fused: the fp32 sum AddRowVector forms,
// never stored; f = row length), else u = x. x and the output may be 16-bit activations (x_dt, out_dt: DTypeCode;
// x widened exactly, the output rounded once); bias and dy are fp32.
__device__ __forceinline__ float gelu_input(const void* x, int x_dt, const float* bias, i64 i, i64 f) {
    float v = load_as_f32(x, i, x_dt);
    return bias ? v + bias[i % f] : v;
}

extern "C" __global__ void gelu_forward(const void* x, int x_dt, const float* bias, void* y, int out_dt, i64 n, i64 f) {
    GRID_STRIDE(i, n) {
        float u = gelu_input(x, x_dt, bias, i, f);
        store_from_f32(y, i, out_dt, u * gelu_sigmoid(u));
    }
}

// gelu′ = s + u·2s(1 − s)·k(1 + 3c·u²); dx may alias dy (each element reads dy before writing dx).
extern "C" __global__ void gelu_backward(const void* x, int x_dt, const float* bias, const float* dy, void* dx, int out_dt, i64 n, i64 f) {
    GRID_STRIDE(i, n) {
        float u = gelu_input(x, x_dt, bias, i, f);
        float s = gelu_sigmoid(u);
        float t = (u * u) * (3.0f * GELU_C * GELU_K) + GELU_K;
        t = (t * u) * (2.0f * s * (1.0f - s)) + s;
        store_from_f32(dx, i, out_dt, dy[i] * t);
    }
}
