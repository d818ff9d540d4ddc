// Inverted dropout with the counter-based mask of RandomGenerator.Uniform: element i is kept iff
// Uniform(stream, i) ≥ p. The hash is bit-identical to the C# one, so CPU and GPU draw the same mask, and the
// backward pass is this same kernel applied to the output gradient (no mask tensor is stored).
#include "common.cuh"

// scale = 1/(1 − p) is computed on the host in fp32 exactly as the CPU kernel does, then passed in.
extern "C" __global__ void dropout_forward(const float* x, float* y, float p, float scale, u64 stream, i64 n) {
    GRID_STRIDE(i, n) {
        y[i] = counter_uniform(stream, (u64)i) >= p ? x[i] * scale : 0.0f;
    }
}
