// ChatGLM's 2D rotary embedding (CpuBackend.Rotary.cs): dims [0, d/2) rotate with the position, [d/2, d) with
// the block position; inside a half of size r the pair (j, j + r/2) turns by p·θ_j. θ_j (fp16-rounded, as the
// reference builds it) comes from the host as doubles so both backends use identical frequencies, and the angle,
// cos and sin are evaluated in double then rounded to fp32 exactly as the CPU does.
#include "common.cuh"

// One pair's rotation, shared by both kernels below (the kernels are compiled with --fmad=false: each product and
// sum rounds on its own, as in the CPU's RotateHead), so the split a cached step fuses gives rotary2d's values.
__device__ __forceinline__ void rotate_pair(float a, float bb, float c, float sn, float* y0, float* y1) {
    *y0 = a * c - bb * sn;
    *y1 = bb * c + a * sn;
}

// A KV-cached step's QKV split (IBackend.SplitQkvRotary): one thread per (b, s, head, pair e < d/2) rotates pair e
// of q and of k and copies v's elements e and e + d/2, the bias (null: none) added first — the same fp32 operations
// as add_row_vector (alpha 1: v·1 + y is v + y) then rotary2d and a copy, so the same values. q, k and v share a
// dtype (o_dt); k and v share strides (the two slots of a KV cache), q has its own.
extern "C" __global__ void split_qkv_rotary(const void* x, int x_dt, i64 xb, i64 xs, i64 xh, const float* bias, const int* pos,
                                            void* q, i64 qb, i64 qs, i64 qh, void* k, void* v, i64 kb, i64 ks, i64 kh, int o_dt,
                                            const double* inv_freq, int batch, int seq, int heads, int d) {
    int r = d / 2, h = r / 2;
    i64 pairs = (i64)batch * seq * heads * r;
    GRID_STRIDE(t, pairs) {
        int e = (int)(t % r);
        i64 rest = t / r;
        int head = (int)(rest % heads); rest /= heads;
        int s = (int)(rest % seq);
        int b = (int)(rest / seq);
        int half = e / h, j = e % h;
        double p = (double)pos[((i64)b * 2 + half) * seq + s];
        double angle = p * inv_freq[j];
        float c = (float)cos(angle);
        float sn = 1.0f * (float)sin(angle);
        i64 xo = (i64)b * xb + (i64)s * xs + (i64)head * xh;
        const float* bh = bias ? bias + (i64)head * 3 * d : nullptr;
        int i0 = half * r + j, i1 = i0 + h;
        i64 qo = (i64)b * qb + (i64)s * qs + (i64)head * qh;
        i64 ko = (i64)b * kb + (i64)s * ks + (i64)head * kh;
        for (int part = 0; part < 2; part++) { // q, then k
            int off = part * d;
            float a = load_as_f32(x, xo + off + i0, x_dt), bb = load_as_f32(x, xo + off + i1, x_dt);
            if (bh) { a = bh[off + i0] * 1.0f + a; bb = bh[off + i1] * 1.0f + bb; }
            void* y = part == 0 ? q : k;
            i64 yo = part == 0 ? qo : ko;
            float y0, y1;
            rotate_pair(a, bb, c, sn, &y0, &y1);
            store_from_f32(y, yo + i0, o_dt, y0);
            store_from_f32(y, yo + i1, o_dt, y1);
        }
        for (int u = 0; u < 2; u++) { // v's elements e and e + d/2
            int i = e + u * r;
            float a = load_as_f32(x, xo + 2 * d + i, x_dt);
            if (bh) a = bh[2 * d + i] * 1.0f + a;
            store_from_f32(v, ko + i, o_dt, a);
        }
    }
}

// One thread per (b, s, head, half, j) pair; x and y may alias (each thread reads its pair before writing it).
// x and y have their own strides over (b, s, head) and unit stride along d: one of them may be a slice of the
// fused [B, S, nh, 3d] QKV tensor, so splitting q/k out of it and rotating them is one pass (and so is the
// backward's inverse rotation back into the QKV gradient).
// x and y may be 16-bit activations (x_dt, y_dt: DTypeCode): widened exactly, y rounded once.
extern "C" __global__ void rotary2d(const void* x, int x_dt, i64 xb, i64 xs, i64 xh, const int* pos, void* y, int y_dt, i64 yb, i64 ys, i64 yh,
                                    const double* inv_freq, int batch, int seq, int heads, int d, int inverse) {
    int r = d / 2, h = r / 2;
    i64 pairs = (i64)batch * seq * heads * 2 * h;
    GRID_STRIDE(t, pairs) {
        int j = (int)(t % h);
        i64 rest = t / h;
        int half = (int)(rest % 2); rest /= 2;
        int head = (int)(rest % heads); rest /= heads;
        int s = (int)(rest % seq);
        int b = (int)(rest / seq);
        double p = (double)pos[((i64)b * 2 + half) * seq + s];
        double angle = p * inv_freq[j];
        float c = (float)cos(angle);
        float sn = (inverse ? -1.0f : 1.0f) * (float)sin(angle);
        i64 xo = (i64)b * xb + (i64)s * xs + (i64)head * xh + (i64)half * r;
        i64 yo = (i64)b * yb + (i64)s * ys + (i64)head * yh + (i64)half * r;
        float a = load_as_f32(x, xo + j, x_dt), bb = load_as_f32(x, xo + j + h, x_dt);
        float y0, y1;
        rotate_pair(a, bb, c, sn, &y0, &y1);
        store_from_f32(y, yo + j, y_dt, y0);
        store_from_f32(y, yo + j + h, y_dt, y1);
    }
}
