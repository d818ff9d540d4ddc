// Weight-only INT8/INT4 de-quantisation (spec §10): W′[r, c] = q[r, c]·scale[r], scale stored as fp16 per
// output row, no zero point. INT4 packs two values per byte with the HIGH nibble holding the even (first)
// element; nibbles are sign-extended with arithmetic shifts. Output is fp32, fp16 or bf16 (dtype code), for
// the GEMM that follows.

#include "common.cuh"

extern "C" __global__ void dequant_int8(const i8* q, const u16* scale_f16, void* w, int out_dtype, i64 rows, i64 cols) {
    GRID_STRIDE(e, rows * cols) {
        i64 r = e / cols;
        // The product is formed in fp32; fp16 output rounds once (the reference multiplies fp16·fp16 → fp16,
        // which also rounds the exact product once).
        store_from_f32(w, e, out_dtype, (float)q[e] * f16_to_f32(scale_f16[r]));
    }
}

extern "C" __global__ void dequant_int4(const i8* packed, const u16* scale_f16, void* w, int out_dtype, i64 rows, i64 cols) {
    GRID_STRIDE(e, rows * cols) {
        i64 r = e / cols, c = e % cols;
        i8 byte = packed[r * (cols / 2) + c / 2];
        int v = (c & 1) == 0 ? ((int)byte >> 4) : ((int)(i8)(byte << 4) >> 4);
        store_from_f32(w, e, out_dtype, (float)v * f16_to_f32(scale_f16[r]));
    }
}

// Fused de-quantize-and-multiply for decoding: one warp per output feature o streams its row of q once (coalesced,
// 1 or ½ byte per weight) and keeps one partial sum per input row (rows ≤ QMV_MAX_ROWS, the decode batch); the
// per-row scale multiplies the reduced sum. y[r, o] = scale[o] · Σ_c x[r, c] · q[o, c].
#define QMV_MAX_ROWS 8

extern "C" __global__ void quant_matvec(const float* x, const i8* q, const u16* scale_f16, float* y,
                                        int bits, i64 rows, i64 cols, i64 out) {
    i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (warp >= out) return;
    i64 packed = bits == 4 ? cols / 2 : cols;
    const i8* qr = q + warp * packed;
    float acc[QMV_MAX_ROWS];
    for (int r = 0; r < QMV_MAX_ROWS; r++) acc[r] = 0.0f;
    for (i64 c = lane; c < cols; c += 32) {
        int v;
        if (bits == 8) v = qr[c];
        else {
            i8 b = qr[c >> 1];
            v = (c & 1) == 0 ? ((int)b >> 4) : ((int)(i8)(b << 4) >> 4);
        }
        float wv = (float)v;
        for (int r = 0; r < QMV_MAX_ROWS; r++)
            if (r < rows) acc[r] += x[r * cols + c] * wv;
    }
    float s = f16_to_f32(scale_f16[warp]);
    for (int r = 0; r < QMV_MAX_ROWS; r++) {
        if (r >= rows) break;
        float v = acc[r];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) y[r * out + warp] = s * v;
    }
}
