// tanh and its backward from the saved output (the P-Tuning v2 prefix encoder's projection: Linear → tanh → Linear).
#include "common.cuh"

extern "C" __global__ void tanh_forward(const float* x, float* y, i64 n) {
    GRID_STRIDE(i, n) { y[i] = tanhf(x[i]); }
}

// dx = dy·(1 − y²); dx may alias dy (each element reads dy before writing dx).
extern "C" __global__ void tanh_backward(const float* y, const float* dy, float* dx, i64 n) {
    GRID_STRIDE(i, n) {
        float t = y[i];
        dx[i] = dy[i] * ((1.0f - t) * (1.0f + t));
    }
}
