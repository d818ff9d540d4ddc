// Elementwise kernels, reductions and conversions behind IBackend's core members (CpuBackend.cs). Each does the
// same fp32 operations in the same order as the CPU reference (compiled with --fmad=false, so a·b + c is never
// contracted into an FMA unless written as fmaf), and reductions accumulate in double as the CPU does.
#include "common.cuh"

// Fill for 2-byte dtypes (4- and 1-byte fills use cuMemsetD32/D8): bits already converted on the host.
extern "C" __global__ void fill_u16(u16* dst, u16 bits, i64 n) {
    GRID_STRIDE(i, n) dst[i] = bits;
}

// y = α·a + β·b. When a and b are the same buffer the host calls with `same` set, matching the CPU's a·(α + β).
extern "C" __global__ void add_scaled(const float* a, float alpha, const float* b, float beta, float* y, int same, i64 n) {
    if (same) {
        float s = alpha + beta;
        GRID_STRIDE(i, n) y[i] = a[i] * s;
    } else if (alpha == 1.0f && beta == 1.0f) {
        GRID_STRIDE(i, n) y[i] = a[i] + b[i];
    } else {
        GRID_STRIDE(i, n) y[i] = a[i] * alpha + b[i] * beta;
    }
}

// add_scaled over 16-bit activations (any mix of F32/BF16/F16 operands): each operand widened exactly, the same fp32
// operations as add_scaled, y rounded once.
extern "C" __global__ void add_scaled_mixed(const void* a, int a_dt, float alpha, const void* b, int b_dt, float beta,
                                            void* y, int y_dt, int same, i64 n) {
    if (same) {
        float s = alpha + beta;
        GRID_STRIDE(i, n) store_from_f32(y, i, y_dt, load_as_f32(a, i, a_dt) * s);
    } else if (alpha == 1.0f && beta == 1.0f) {
        GRID_STRIDE(i, n) store_from_f32(y, i, y_dt, load_as_f32(a, i, a_dt) + load_as_f32(b, i, b_dt));
    } else {
        GRID_STRIDE(i, n) store_from_f32(y, i, y_dt, load_as_f32(a, i, a_dt) * alpha + load_as_f32(b, i, b_dt) * beta);
    }
}

extern "C" __global__ void mul(const float* a, const float* b, float* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

// y[r, j] += α·v[j] over rows of length `cols`.
extern "C" __global__ void add_row_vector(float* y, const float* v, float alpha, i64 cols, i64 n) {
    GRID_STRIDE(i, n) y[i] = v[i % cols] * alpha + y[i];
}

// The value of f once stored as dtype dt and read back (f itself for F32).
__device__ __forceinline__ float round_to(int dt, float f) {
    return dt == DT_BF16 ? bf16_to_f32(f32_to_bf16(f)) : dt == DT_F16 ? f16_to_f32(f32_to_f16(f)) : f;
}

// y = a·alpha + ρ(b + bias[i % cols]), ρ rounding to y's dtype: a biased linear's fp32 output b joined to the scaled
// residual a in one pass (a decoding step's two residual adds per layer; a block's two under 16-bit activations).
// The same operations as add_row_vector (alpha 1), the linear's rounding of its output to the activation dtype, and
// add_scaled / add_scaled_mixed (beta 1), so the same values, two passes fewer.
extern "C" __global__ void add_scaled_row_bias(const void* a, int a_dt, float alpha, const float* b, const float* bias, void* y, int y_dt,
                                               i64 cols, i64 n) {
    GRID_STRIDE(i, n) {
        float t = round_to(y_dt, bias[i % cols] * 1.0f + b[i]);
        store_from_f32(y, i, y_dt, load_as_f32(a, i, a_dt) * alpha + t * 1.0f);
    }
}

// out[r, j] = ρ(y[r, j] + α·v[j]) into a separate output of any float dtype (y unchanged): a biased linear's fp32
// product rounded to a 16-bit activation in the pass that adds the bias.
extern "C" __global__ void add_row_vector_to(const float* y, const float* v, float alpha, void* out, int out_dt, i64 cols, i64 n) {
    GRID_STRIDE(i, n) store_from_f32(out, i, out_dt, v[i % cols] * alpha + y[i]);
}

// y[j] (+)= Σ_r x[r, j]: one thread per column, rows summed in order in double (deterministic, and the same
// order as the CPU's loop, so bias gradients agree to the last bit of the double sum).
extern "C" __global__ void sum_rows(const float* x, float* y, i64 rows, i64 cols, int accumulate) {
    GRID_STRIDE(j, cols) {
        double acc = 0.0;
        for (i64 r = 0; r < rows; r++) acc += (double)x[r * cols + j];
        y[j] = (float)((accumulate ? (double)y[j] : 0.0) + acc);
    }
}

// Per-block partial reductions in double: mode 0 = Σx, 1 = Σx², 2 = count of non-finite values. The host adds the
// block partials in block order, so the result does not depend on scheduling.
extern "C" __global__ void reduce_partials(const float* x, double* partials, i64 n, int mode) {
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        float v = x[i];
        if (mode == 0) acc += (double)v;
        else if (mode == 1) acc += (double)v * (double)v;
        else acc += isfinite(v) ? 0.0 : 1.0;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Strided copy with float-format conversion. Up to 8 dimensions, described by value (kernel parameter space).
struct StridedLayout {
    i64 rank;
    i64 shape[8];
    i64 src_stride[8];
    i64 dst_stride[8];
};

extern "C" __global__ void strided_copy(const void* src, int src_dtype, void* dst, int dst_dtype, StridedLayout layout, i64 n) {
    GRID_STRIDE(i, n) {
        // Decompose the row-major flat index into coordinates, innermost dimension first.
        i64 rest = i, so = 0, dof = 0;
        for (int d = (int)layout.rank - 1; d >= 0; d--) {
            i64 c = rest % layout.shape[d];
            rest /= layout.shape[d];
            so += c * layout.src_stride[d];
            dof += c * layout.dst_stride[d];
        }
        if (src_dtype == dst_dtype) {
            switch (src_dtype) {
                case DT_F32: case DT_I32: ((u32*)dst)[dof] = ((const u32*)src)[so]; break;
                case DT_F16: case DT_BF16: ((u16*)dst)[dof] = ((const u16*)src)[so]; break;
                default: ((u8*)dst)[dof] = ((const u8*)src)[so]; break;
            }
        } else {
            store_from_f32(dst, dof, dst_dtype, load_as_f32(src, so, src_dtype));
        }
    }
}

// Contiguous float-format casts (the common case of Copy between dtypes), without the index arithmetic.
extern "C" __global__ void cast_contiguous(const void* src, int src_dtype, void* dst, int dst_dtype, i64 n) {
    GRID_STRIDE(i, n) store_from_f32(dst, i, dst_dtype, load_as_f32(src, i, src_dtype));
}
