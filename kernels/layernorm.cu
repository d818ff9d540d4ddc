// LayerNorm over the last dimension (CpuBackend.LayerNorm.cs). Row statistics are two-pass (mean, then
// Σ(x − mean)²) accumulated in double like the CPU, so rows with a large mean and small spread keep their
// variance; the normalisation itself is fp32 in the CPU's order, with the final ·w + b fused (the CPU uses
// FusedMultiplyAdd there). x and y may be 16-bit activations (x_dt, y_dt: DTypeCode): x is widened exactly as it
// is read and y rounded once as it is written, the fp32 arithmetic in between unchanged; dy and dx are fp32.
#include "common.cuh"

// One block per row.
// copy (null: none) gets the same values as y in its own dtype: a decoding step's fp32 y feeds the residual, its
// 16-bit copy the next GEMM, with no rounding pass between.
extern "C" __global__ void layernorm_forward(const void* x, int x_dt, const float* w, const float* bias, float eps,
                                             void* y, int y_dt, void* copy, int copy_dt, float* mean, float* rstd, i64 h) {
    i64 r = blockIdx.x;
    i64 base = r * h;
    double s = 0.0;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) s += (double)load_as_f32(x, base + j, x_dt);
    double mu = block_sum(s) / (double)h;
    double q = 0.0;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) { double dv = (double)load_as_f32(x, base + j, x_dt) - mu; q += dv * dv; }
    double var = block_sum(q) / (double)h;
    float m = (float)mu;
    float sd = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0) { mean[r] = m; rstd[r] = sd; }
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float v = fmaf((load_as_f32(x, base + j, x_dt) - m) * sd, w[j], bias[j]);
        store_from_f32(y, base + j, y_dt, v);
        if (copy) store_from_f32(copy, base + j, copy_dt, v);
    }
}

// dx for one row per block: dx = s·dy·w − a − x̂·b with a = s·Σg/h, b = s·Σg·x̂/h (sums in double).
extern "C" __global__ void layernorm_backward_dx(const float* dy, const void* x, int x_dt, const float* w, const float* mean,
                                                 const float* rstd, float* dx, i64 h) {
    i64 r = blockIdx.x;
    const float* dyr = dy + r * h;
    i64 base = r * h;
    float m = mean[r], s = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float g = dyr[j] * w[j];
        sg += (double)g;
        sgx += (double)(g * ((load_as_f32(x, base + j, x_dt) - m) * s));
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    float a = (float)((double)s * sg / (double)h);
    float b = (float)((double)s * sgx / (double)h);
    float* dxr = dx + r * h;
    for (i64 j = threadIdx.x; j < h; j += blockDim.x) {
        float xh = (load_as_f32(x, base + j, x_dt) - m) * s;
        dxr[j] = s * dyr[j] * w[j] - a - xh * b;
    }
}

// dweight/dbias stage 1: chunk c of `rows_per_chunk` rows sums each column in double into partial[c, j], the
// CPU's fixed chunking, so the summation order does not depend on the launch. Grid: (column blocks, chunks).
extern "C" __global__ void layernorm_backward_partials(const float* dy, const void* x, int x_dt, const float* mean, const float* rstd,
                                                       double* part_w, double* part_b, i64 rows, i64 h, int rows_per_chunk) {
    i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    i64 c = blockIdx.y;
    if (j >= h) return;
    i64 r0 = c * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
    double aw = 0.0, ab = 0.0;
    for (i64 r = r0; r < r1; r++) {
        float d = dy[r * h + j];
        ab += (double)d;
        if (part_w) aw += (double)d * (double)((load_as_f32(x, r * h + j, x_dt) - mean[r]) * rstd[r]);
    }
    if (part_w) part_w[c * h + j] = aw;
    if (part_b) part_b[c * h + j] = ab;
}

// Stage 2: add the chunk partials in chunk order.
extern "C" __global__ void layernorm_backward_reduce(const double* part, float* dst, i64 chunks, i64 h) {
    GRID_STRIDE(j, h) {
        double s = 0.0;
        for (i64 c = 0; c < chunks; c++) s += part[c * h + j];
        dst[j] = (float)s;
    }
}
