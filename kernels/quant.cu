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

// Fused de-quantize-and-multiply for decoding: one warp per output feature o streams its row of q once and keeps
// one partial sum per input row (rows ≤ QMV_MAX_ROWS, the decode batch); the per-row scale multiplies the reduced
// sum. y[r, o] = scale[o] · Σ_c x[r, c] · q[o, c].
//
// Why 16-byte chunks: a decoding step is bound by reading q, and a GPU only reaches its bandwidth with enough bytes
// in flight (bandwidth × latency: megabytes on an H100). A lane loading one byte per step keeps 32 bytes a warp in
// flight; here each lane loads two 16-byte chunks (16 INT8 or 32 INT4 weights each) before using either, 1 KiB a
// warp. Shapes whose rows of q or x are not 16-byte aligned (odd column counts) take the lane-per-column loop.
#define QMV_MAX_ROWS 16

struct alignas(16) QmvBytes { int w[4]; };
struct alignas(16) QmvFloats { float v[4]; };

// x[off .. off + 3] as fp32: one 16-byte load of an fp32 row, else four widened 16-bit elements.
__device__ __forceinline__ QmvFloats qmv_x4(const void* x, int x_dt, i64 off) {
    if (x_dt == DT_F32) return *(const QmvFloats*)((const float*)x + off);
    QmvFloats f;
    for (int u = 0; u < 4; u++) f.v[u] = load_as_f32(x, off + u, x_dt);
    return f;
}

// acc[r] += Σ over one 16-byte chunk holding the weights of columns c0 .. c0 + (16 or 32) − 1.
__device__ __forceinline__ void qmv_chunk(QmvBytes raw, int bits, const void* x, int x_dt, i64 cols, i64 c0, i64 rows, float* acc) {
    const i8* b = (const i8*)raw.w;
    if (bits == 8) {
        for (int i = 0; i < 16; i += 4) {
            float w0 = (float)b[i], w1 = (float)b[i + 1], w2 = (float)b[i + 2], w3 = (float)b[i + 3];
            for (int r = 0; r < QMV_MAX_ROWS; r++) {
                if (r >= rows) break;
                QmvFloats xv = qmv_x4(x, x_dt, r * cols + c0 + i);
                acc[r] += xv.v[0] * w0;
                acc[r] += xv.v[1] * w1;
                acc[r] += xv.v[2] * w2;
                acc[r] += xv.v[3] * w3;
            }
        }
    } else {
        for (int i = 0; i < 16; i += 2) { // two bytes: columns c0 + 2i .. c0 + 2i + 3 (high nibble = even column)
            float w0 = (float)((int)b[i] >> 4), w1 = (float)((int)(i8)(b[i] << 4) >> 4);
            float w2 = (float)((int)b[i + 1] >> 4), w3 = (float)((int)(i8)(b[i + 1] << 4) >> 4);
            for (int r = 0; r < QMV_MAX_ROWS; r++) {
                if (r >= rows) break;
                QmvFloats xv = qmv_x4(x, x_dt, r * cols + c0 + 2 * i);
                acc[r] += xv.v[0] * w0;
                acc[r] += xv.v[1] * w1;
                acc[r] += xv.v[2] * w2;
                acc[r] += xv.v[3] * w3;
            }
        }
    }
}

// x may be F32 or a 16-bit activation (x_dt; widened exactly): a cached step's attention output comes in its cache's dtype.
extern "C" __global__ void quant_matvec(const void* x, int x_dt, const i8* q, const u16* scale_f16, float* y,
                                        int bits, i64 rows, i64 cols, i64 out) {
    i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (warp >= out) return;
    i64 packed = bits == 4 ? cols / 2 : cols;
    const i8* qr = q + warp * packed;
    float acc[QMV_MAX_ROWS];
    for (int r = 0; r < QMV_MAX_ROWS; r++) acc[r] = 0.0f;
    int per = bits == 4 ? 32 : 16; // weights per 16-byte chunk
    bool aligned = ((unsigned long long)q & 15) == 0 && (packed & 15) == 0
                   && (x_dt != DT_F32 || (((unsigned long long)x & 15) == 0 && (cols & 3) == 0));
    i64 chunks = aligned ? packed / 16 : 0;
    const QmvBytes* qc = (const QmvBytes*)qr;
    i64 ch = lane;
    for (; ch + 32 < chunks; ch += 64) { // two chunks a lane: both loads issued before either is used
        QmvBytes a = qc[ch], b = qc[ch + 32];
        qmv_chunk(a, bits, x, x_dt, cols, ch * per, rows, acc);
        qmv_chunk(b, bits, x, x_dt, cols, (ch + 32) * per, rows, acc);
    }
    if (ch < chunks) qmv_chunk(qc[ch], bits, x, x_dt, cols, ch * per, rows, acc);
    for (i64 c = chunks * per + lane; c < cols; c += 32) {
        int v;
        if (bits == 8) v = qr[c];
        else {
            i8 b = qr[c >> 1];
            v = (c & 1) == 0 ? ((int)b >> 4) : ((int)(i8)(b << 4) >> 4);
        }
        float wv = (float)v;
        for (int r = 0; r < QMV_MAX_ROWS; r++)
            if (r < rows) acc[r] += load_as_f32(x, r * cols + c, x_dt) * wv;
    }
    float s = f16_to_f32(scale_f16[warp]);
    for (int r = 0; r < QMV_MAX_ROWS; r++) {
        if (r >= rows) break;
        float v = acc[r];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) y[r * out + warp] = s * v;
    }
}
