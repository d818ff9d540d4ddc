// Inverted dropout with the counter-based mask of RandomGenerator.Uniform: element i is kept iff
// Uniform(stream, i) ≥ p. The hash is bit-identical to the C# one, so CPU and GPU draw the same mask, and the
// backward pass is this same kernel applied to the output gradient (no mask tensor is stored).
#include "common.cuh"

// scale = 1/(1 − p) is computed on the host in fp32 exactly as the CPU kernel does, then passed in.
// x and y may be 16-bit activations (x_dt, y_dt: DTypeCode): x widened exactly, y rounded once.
extern "C" __global__ void dropout_forward(const void* x, int x_dt, void* y, int y_dt, float p, float scale, u64 stream, i64 n) {
    GRID_STRIDE(i, n) {
        store_from_f32(y, i, y_dt, counter_uniform(stream, (u64)i) >= p ? load_as_f32(x, i, x_dt) * scale : 0.0f);
    }
}
