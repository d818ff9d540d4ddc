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
