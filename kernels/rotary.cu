// ChatGLM's 2D rotary embedding (CpuBackend.Rotary.cs): dims [0, d/2) rotate with the position, [d/2, d) with
// the block position; inside a half of size r the pair (j, j + r/2) turns by p·θ_j. θ_j (fp16-rounded, as the
// reference builds it) comes from the host as doubles so both backends use identical frequencies, and the angle,
// cos and sin are evaluated in double then rounded to fp32 exactly as the CPU does.
#include "common.cuh"

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
        store_from_f32(y, yo + j, y_dt, a * c - bb * sn);
        store_from_f32(y, yo + j + h, y_dt, bb * c + a * sn);
    }
}
