// GLM attention (CpuBackend.Attention.cs), a straightforward tiled flash-attention: correctness first.
// Layout: q, k, v, out are [B, S, nh, d]; prefix keys/values [B, N, nh, d] come before the sequence's own keys
// (combined key index kk ∈ [0, N + S), prefix first); mask is U8 [B, S, S] over the sequence keys (1 = blocked →
// the score becomes the constant masked_value, as masked_fill does). The forward also takes pmask, U8 [B, N] over
// the prefix keys (1 = blocked for every query; null = none): a batched KV cache's left-pad positions. The backward
// has no pmask (it serves training, where the prefix is a P-Tuning prefix and always visible).
// Forward: one block per (query tile, head, batch); key tiles stream through shared memory with an online
// softmax, so the S×(N+S) matrix never exists; only the row log-sum-exp is saved. Backward recomputes P from
// the saved lse in two kernels, one owning query rows (dQ) and one owning key rows (dK, dV), so every gradient
// element is written by exactly one block: no atomics, deterministic results.
// Tiles are T×T with T chosen by the host so the shared memory fits in 48 KiB (T = 16 for d ≤ 64, 8 for d = 128).
// q, k, v and out are activations of one dtype `act` (F32, BF16 or F16: widened exactly into the fp32 tiles, the
// output rounded once); dO, lse and every gradient are fp32. The forward's prefix keys/values are F32, BF16 or F16
// (`pdt`: a KV cache kept in 16 bits) with batch stride `pstride` elements (a view of a cache buffer that has room for
// more positions; its rows are contiguous); the backward's prefix (a P-Tuning prefix in training) is contiguous fp32.
#include "common.cuh"

__device__ __forceinline__ i64 seq_off(int b, int i, int S, int H, int h, int D) {
    return (((i64)b * S + i) * H + h) * D;
}

// Element c of combined key row kk (prefix first: dtype pdt, batch stride pstride; the sequence's own keys of dtype dt).
__device__ __forceinline__ float key_val(const void* k, int dt, const void* pk, int pdt, i64 pstride, int b, int kk, int S, int N, int H, int h, int D,
                                         int c) {
    return kk < N ? load_as_f32(pk, (i64)b * pstride + ((i64)kk * H + h) * D + c, pdt) : load_as_f32(k, seq_off(b, kk - N, S, H, h, D) + c, dt);
}

// Tile rows r0 .. r0 + T − 1 of one head, zeros past the end: query rows of x (dtype x_dt) and of y (fp32: dO)
// when given, or combined keys of K and V (prefix first). Block-strided over T·D elements.
__device__ __forceinline__ void load_query_tile(float* xs, const void* x, int x_dt, float* ys, const float* y, int b, int q0, int S, int H, int h, int D, int T) {
    for (int e = threadIdx.x; e < T * D; e += blockDim.x) {
        int i = e / D, c = e % D, qi = q0 + i;
        xs[e] = qi < S ? load_as_f32(x, seq_off(b, qi, S, H, h, D) + c, x_dt) : 0.0f;
        if (ys) ys[e] = qi < S ? y[seq_off(b, qi, S, H, h, D) + c] : 0.0f;
    }
}

__device__ __forceinline__ void load_key_tile(float* ks, float* vs, const void* k, const void* v, int dt, const void* pk, const void* pv,
                                              int pdt, i64 pstride, int b, int k0, int S, int N, int H, int h, int D, int T) {
    for (int e = threadIdx.x; e < T * D; e += blockDim.x) {
        int j = e / D, c = e % D, kk = k0 + j;
        ks[e] = kk < N + S ? key_val(k, dt, pk, pdt, pstride, b, kk, S, N, H, h, D, c) : 0.0f;
        vs[e] = kk < N + S ? key_val(v, dt, pv, pdt, pstride, b, kk, S, N, H, h, D, c) : 0.0f;
    }
}

// The backward's per-row statistics of query rows q0 .. q0 + T − 1: lse, delta and the fully-blocked flag.
__device__ __forceinline__ void load_row_stats(float* rl, float* rd, int* rb, const float* lse, const float* delta, const int* fully_blocked,
                                               int b, int q0, int S, int H, int h, int T) {
    for (int i = threadIdx.x; i < T; i += blockDim.x) {
        i64 row = ((i64)b * H + h) * S + q0 + i;
        bool in = q0 + i < S;
        rl[i] = in ? lse[row] : 0.0f;
        rd[i] = in ? delta[row] : 0.0f;
        rb[i] = in ? fully_blocked[row] : 0;
    }
}

// Score of query row qi and combined key kk from the shared tiles; -inf outside the matrix. `blocked` reports a
// masked entry (whose gradient must be zero).
__device__ __forceinline__ float tile_score(const float* qs, const float* ks, int D, float scale, int qi, int kk,
                                            int S, int N, const u8* mask, const u8* pmask, int b, float masked, bool& blocked) {
    blocked = false;
    if (qi >= S || kk >= N + S) return -DGLM_INF;
    if (kk >= N ? mask && mask[((i64)b * S + qi) * S + (kk - N)] : pmask && pmask[(i64)b * N + kk]) { blocked = true; return masked; }
    float acc = 0.0f;
    for (int c = 0; c < D; c++) acc += qs[c] * ks[c];
    return scale * acc;
}

extern "C" __global__ void attention_forward(const void* q, const void* k, const void* v, int act, const void* pk, const void* pv,
                                             int pdt, i64 pstride, const u8* mask, const u8* pmask, int S, int N, int H, int D, float scale, float masked, int T,
                                             void* out, float* lse) {
    DGLM_DYNAMIC_SHARED(float, smem);
    float* Qs = smem;
    float* Ks = Qs + T * D;
    float* Vs = Ks + T * D;
    float* Os = Vs + T * D;
    float* Ps = Os + T * D;
    float* rm = Ps + T * T;   // running max per row
    float* rl = rm + T;       // running Σ exp(s − max)
    float* ra = rl + T;       // this tile's rescale factor
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * T, total = N + S;
    int tid = threadIdx.x, nt = blockDim.x;
    load_query_tile(Qs, q, act, nullptr, nullptr, b, q0, S, H, h, D, T);
    for (int e = tid; e < T * D; e += nt) Os[e] = 0.0f;
    for (int i = tid; i < T; i += nt) { rm[i] = -DGLM_INF; rl[i] = 0.0f; }
    for (int k0 = 0; k0 < total; k0 += T) {
        __syncthreads(); // the previous tile's readers are done with Ks/Vs/Ps
        load_key_tile(Ks, Vs, k, v, act, pk, pv, pdt, pstride, b, k0, S, N, H, h, D, T);
        __syncthreads();
        for (int e = tid; e < T * T; e += nt) {
            int i = e / T, j = e % T;
            bool blocked;
            Ps[e] = tile_score(Qs + i * D, Ks + j * D, D, scale, q0 + i, k0 + j, S, N, mask, pmask, b, masked, blocked);
        }
        __syncthreads();
        for (int i = tid; i < T; i += nt) {
            float mt = -DGLM_INF;
            for (int j = 0; j < T; j++) mt = fmaxf(mt, Ps[i * T + j]);
            float mo = rm[i], mn = fmaxf(mo, mt);
            // mn = −inf only for padding rows past S: keep them at zero without forming −inf − (−inf).
            float alpha = mn == -DGLM_INF ? 1.0f : expf(mo - mn);
            float sum = 0.0f;
            for (int j = 0; j < T; j++) {
                float s = Ps[i * T + j];
                float p = s == -DGLM_INF ? 0.0f : expf(s - mn);
                Ps[i * T + j] = p;
                sum += p;
            }
            rl[i] = rl[i] * alpha + sum;
            rm[i] = mn;
            ra[i] = alpha;
        }
        __syncthreads();
        for (int e = tid; e < T * D; e += nt) {
            int i = e / D, c = e % D;
            float acc = Os[e] * ra[i];
            for (int j = 0; j < T; j++) acc += Ps[i * T + j] * Vs[j * D + c];
            Os[e] = acc;
        }
    }
    __syncthreads();
    for (int e = tid; e < T * D; e += nt) {
        int i = e / D, c = e % D, qi = q0 + i;
        if (qi < S) store_from_f32(out, seq_off(b, qi, S, H, h, D) + c, act, Os[e] / rl[i]);
    }
    for (int i = tid; i < T; i += nt)
        if (q0 + i < S) lse[((i64)b * H + h) * S + q0 + i] = rm[i] + logf(rl[i]);
}

// One decoding step: a single query (S = 1) per (batch, head) over its past (the prefix: a KV cache) and its own key.
// attention_forward would stream the past through T×T tiles built for T queries, T keys per barrier-separated
// round (T = 8 for d = 128), so a long past costs hundreds of rounds per layer with 1/T of each tile useful. Here a
// block of DECODE_WARPS warps owns one (batch, head, key split); each warp takes DECODE_KEYS keys at a time (every
// load of a round issued before the first is used: the loop is latency-bound otherwise), each lane holding D/32 of
// q's and the output's dims (D ≤ 32·DECODE_DIMS, lane-major so a warp's loads are coalesced); a score is one warp
// sum, and each warp keeps its own online softmax, merged through shared memory at the end. No barrier in the key
// loop. With one split the block writes the output and lse; with several (few rows and heads: the past is cut into
// `splits` ranges so that enough blocks stream it) each writes its (max, sum, unnormalised output) and
// attention_decode_combine merges them. Scores, masking (pmask over the past, mask [B, 1, 1] over the own key) and
// lse follow attention_forward; sums are fp32 in another order.
#define DECODE_WARPS 16
#define DECODE_DIMS 4 // head sizes up to 128 (GLM's); larger ones take attention_forward
#define DECODE_KEYS 4

__device__ __forceinline__ float decode_key(const void* k, int act, const void* pk, int pdt, i64 pstride, int b, int kk, int N, int H, int h, int D,
                                            int c) {
    return kk < N ? load_as_f32(pk, (i64)b * pstride + ((i64)kk * H + h) * D + c, pdt) : load_as_f32(k, ((i64)b * H + h) * D + c, act);
}

// Grid (H, B, splits); split z covers keys [z·chunk, min(N + 1, (z + 1)·chunk)). part_* are null with one split.
// __launch_bounds__: 512 threads leave 128 registers a thread, and without the bound the compiler may plan for more
// (the launch would then fail on the device, not at compile time).
extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32)
attention_decode(const void* q, const void* k, const void* v, int act, const void* pk, const void* pv, int pdt, i64 pstride, const u8* mask,
                 const u8* pmask, int N, int H, int D, float scale, float masked, int chunk, void* out, float* lse, float* part_m, float* part_l,
                 float* part_o) {
    __shared__ float wm[DECODE_WARPS], wl[DECODE_WARPS];
    __shared__ float wo[DECODE_WARPS * 32 * DECODE_DIMS];
    int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int begin = split * chunk, end = min(N + 1, begin + chunk);
    float qv[DECODE_DIMS], o[DECODE_DIMS];
#pragma unroll
    for (int e = 0; e < DECODE_DIMS; e++) {
        int c = lane + 32 * e;
        qv[e] = c < D ? load_as_f32(q, ((i64)b * H + h) * D + c, act) : 0.0f;
        o[e] = 0.0f;
    }
    float m = -DGLM_INF, l = 0.0f;
    for (int k0 = begin + warp * DECODE_KEYS; k0 < end; k0 += DECODE_WARPS * DECODE_KEYS) {
        float kr[DECODE_KEYS][DECODE_DIMS], vr[DECODE_KEYS][DECODE_DIMS];
#pragma unroll
        for (int j = 0; j < DECODE_KEYS; j++)
#pragma unroll
            for (int e = 0; e < DECODE_DIMS; e++) {
                int c = lane + 32 * e, kk = k0 + j;
                bool in = c < D && kk < end;
                kr[j][e] = in ? decode_key(k, act, pk, pdt, pstride, b, kk, N, H, h, D, c) : 0.0f;
                vr[j][e] = in ? decode_key(v, act, pv, pdt, pstride, b, kk, N, H, h, D, c) : 0.0f;
            }
        float sc[DECODE_KEYS];
        float mn = m;
#pragma unroll
        for (int j = 0; j < DECODE_KEYS; j++) {
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < DECODE_DIMS; e++) dot += qv[e] * kr[j][e];
            dot = warp_sum(dot);
            int kk = k0 + j;
            bool blocked = kk < N ? pmask && pmask[(i64)b * N + kk] : mask && mask[b];
            sc[j] = kk >= end ? -DGLM_INF : blocked ? masked : dot * scale;
            mn = fmaxf(mn, sc[j]);
        }
        // The round's first key is always in range, so mn is finite; alpha is 0 on the warp's first round (m = −inf).
        float alpha = expf(m - mn);
        l *= alpha;
#pragma unroll
        for (int e = 0; e < DECODE_DIMS; e++) o[e] *= alpha;
#pragma unroll
        for (int j = 0; j < DECODE_KEYS; j++) {
            float p = sc[j] == -DGLM_INF ? 0.0f : expf(sc[j] - mn);
            l += p;
#pragma unroll
            for (int e = 0; e < DECODE_DIMS; e++) o[e] += p * vr[j][e];
        }
        m = mn;
    }
    if (lane == 0) { wm[warp] = m; wl[warp] = l; }
#pragma unroll
    for (int e = 0; e < DECODE_DIMS; e++) wo[(warp * DECODE_DIMS + e) * 32 + lane] = o[e];
    __syncthreads();
    float mm = -DGLM_INF;
    for (int w = 0; w < DECODE_WARPS; w++) mm = fmaxf(mm, wm[w]);
    float sum = 0.0f;
    for (int w = 0; w < DECODE_WARPS; w++) if (wm[w] != -DGLM_INF) sum += wl[w] * expf(wm[w] - mm); // a warp with no key adds nothing
    i64 row = (i64)b * H + h, slot = row * gridDim.z + split;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        int e = c / 32, ln = c % 32;
        float acc = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++) if (wm[w] != -DGLM_INF) acc += wo[(w * DECODE_DIMS + e) * 32 + ln] * expf(wm[w] - mm);
        if (part_o) part_o[slot * D + c] = acc;
        else store_from_f32(out, row * D + c, act, acc / sum);
    }
    if (threadIdx.x == 0) {
        if (part_o) { part_m[slot] = mm; part_l[slot] = sum; }
        else lse[row] = mm + logf(sum);
    }
}

// Merges attention_decode's per-split (max, sum, unnormalised output) of each (batch, head): grid (H, B).
extern "C" __global__ void attention_decode_combine(const float* part_m, const float* part_l, const float* part_o, int splits, int H, int D,
                                                    int act, void* out, float* lse) {
    i64 row = (i64)blockIdx.y * H + blockIdx.x;
    const float* pm = part_m + row * splits;
    const float* pl = part_l + row * splits;
    float mm = -DGLM_INF;
    for (int z = 0; z < splits; z++) mm = fmaxf(mm, pm[z]);
    float sum = 0.0f;
    for (int z = 0; z < splits; z++) sum += pl[z] * expf(pm[z] - mm); // every split holds at least one key: pm finite
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.0f;
        for (int z = 0; z < splits; z++) acc += part_o[(row * splits + z) * D + c] * expf(pm[z] - mm);
        store_from_f32(out, row * D + c, act, acc / sum);
    }
    if (threadIdx.x == 0) lse[row] = mm + logf(sum);
}

// Per query row: delta = dO·O (= Σ_j P_ij·dP_ij) and whether the row sees no key at all (no prefix, every mask
// entry set). Such a row is exactly uniform, but its lse ≈ masked_value + log S is too large for fp32 to give P
// to full precision, so the backward kernels use 1/S there instead of exp(s − lse).
extern "C" __global__ void attention_backward_prep(const void* out, int act, const float* dout, const u8* mask, int B, int S, int N,
                                                   int H, int D, float* delta, int* fully_blocked) {
    GRID_STRIDE(t, (i64)B * H * S) {
        int i = (int)(t % S), h = (int)((t / S) % H), b = (int)(t / ((i64)S * H));
        i64 o = seq_off(b, i, S, H, h, D);
        const float* g = dout + o;
        float acc = 0.0f;
        for (int c = 0; c < D; c++) acc += g[c] * load_as_f32(out, o + c, act);
        delta[t] = acc;
        int blk = 0;
        if (N == 0 && mask) {
            blk = 1;
            const u8* mr = mask + ((i64)b * S + i) * S;
            for (int j = 0; j < S && blk; j++) blk = mr[j] != 0;
        }
        fully_blocked[t] = blk;
    }
}

__device__ __forceinline__ float recomputed_p(float s, float row_lse, int row_blocked, int S) {
    if (s == -DGLM_INF) return 0.0f;
    return row_blocked ? 1.0f / (float)S : expf(s - row_lse);
}

// dQ_i = Σ_j dS_ij·K_j with dS_ij = ((dP_ij − delta_i)·P_ij)·scale (0 where blocked), dP_ij = dO_i·V_j.
// One block per (query tile, head, batch).
extern "C" __global__ void attention_backward_dq(const void* q, const void* k, const void* v, int act, const float* pk, const float* pv,
                                                 const u8* mask, const float* lse, const float* delta, const int* fully_blocked,
                                                 const float* dout, int S, int N, int H, int D, float scale, float masked, int T,
                                                 float* dq) {
    DGLM_DYNAMIC_SHARED(float, smem);
    float* Qs = smem;
    float* dOs = Qs + T * D;
    float* dQs = dOs + T * D;
    float* Ks = dQs + T * D;
    float* Vs = Ks + T * D;
    float* dSs = Vs + T * D;
    float* rl = dSs + T * T;
    float* rd = rl + T;
    int* rb = (int*)(rd + T);
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * T, total = N + S;
    int tid = threadIdx.x, nt = blockDim.x;
    load_query_tile(Qs, q, act, dOs, dout, b, q0, S, H, h, D, T);
    for (int e = tid; e < T * D; e += nt) dQs[e] = 0.0f;
    load_row_stats(rl, rd, rb, lse, delta, fully_blocked, b, q0, S, H, h, T);
    for (int k0 = 0; k0 < total; k0 += T) {
        __syncthreads();
        load_key_tile(Ks, Vs, k, v, act, pk, pv, DT_F32, (i64)N * H * D, b, k0, S, N, H, h, D, T);
        __syncthreads();
        for (int e = tid; e < T * T; e += nt) {
            int i = e / T, j = e % T;
            bool blocked;
            float s = tile_score(Qs + i * D, Ks + j * D, D, scale, q0 + i, k0 + j, S, N, mask, nullptr, b, masked, blocked);
            float ds = 0.0f;
            if (s != -DGLM_INF && !blocked) {
                float p = recomputed_p(s, rl[i], rb[i], S);
                float dp = 0.0f;
                for (int c = 0; c < D; c++) dp += dOs[i * D + c] * Vs[j * D + c];
                ds = ((dp - rd[i]) * p) * scale;
            }
            dSs[e] = ds;
        }
        __syncthreads();
        for (int e = tid; e < T * D; e += nt) {
            int i = e / D, c = e % D;
            float acc = dQs[e];
            for (int j = 0; j < T; j++) acc += dSs[i * T + j] * Ks[j * D + c];
            dQs[e] = acc;
        }
    }
    __syncthreads();
    for (int e = tid; e < T * D; e += nt) {
        int i = e / D, c = e % D, qi = q0 + i;
        if (qi < S) dq[(((i64)b * S + qi) * H + h) * D + c] = dQs[e];
    }
}

// dV_j = Σ_i P_ij·dO_i and dK_j = Σ_i dS_ij·Q_i for a tile of combined keys (prefix keys write dpk/dpv, the
// sequence's own keys dk/dv; any of them may be null). One block per (key tile, head, batch).
extern "C" __global__ void attention_backward_dkv(const void* q, const void* k, const void* v, int act, const float* pk, const float* pv,
                                                  const u8* mask, const float* lse, const float* delta, const int* fully_blocked,
                                                  const float* dout, int S, int N, int H, int D, float scale, float masked, int T,
                                                  float* dk, float* dv, float* dpk, float* dpv) {
    DGLM_DYNAMIC_SHARED(float, smem);
    float* Ks = smem;
    float* Vs = Ks + T * D;
    float* dKs = Vs + T * D;
    float* dVs = dKs + T * D;
    float* Qs = dVs + T * D;
    float* dOs = Qs + T * D;
    float* Ps = dOs + T * D;
    float* dSs = Ps + T * T;
    float* rl = dSs + T * T;
    float* rd = rl + T;
    int* rb = (int*)(rd + T);
    int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * T, total = N + S;
    int tid = threadIdx.x, nt = blockDim.x;
    load_key_tile(Ks, Vs, k, v, act, pk, pv, DT_F32, (i64)N * H * D, b, k0, S, N, H, h, D, T);
    for (int e = tid; e < T * D; e += nt) dKs[e] = dVs[e] = 0.0f;
    for (int q0 = 0; q0 < S; q0 += T) {
        __syncthreads();
        load_query_tile(Qs, q, act, dOs, dout, b, q0, S, H, h, D, T);
        load_row_stats(rl, rd, rb, lse, delta, fully_blocked, b, q0, S, H, h, T);
        __syncthreads();
        for (int e = tid; e < T * T; e += nt) {
            int i = e / T, j = e % T;
            bool blocked;
            float s = tile_score(Qs + i * D, Ks + j * D, D, scale, q0 + i, k0 + j, S, N, mask, nullptr, b, masked, blocked);
            float p = recomputed_p(s, rl[i], rb[i], S);
            float ds = 0.0f;
            if (s != -DGLM_INF && !blocked) {
                float dp = 0.0f;
                for (int c = 0; c < D; c++) dp += dOs[i * D + c] * Vs[j * D + c];
                ds = ((dp - rd[i]) * p) * scale;
            }
            Ps[e] = p;
            dSs[e] = ds;
        }
        __syncthreads();
        for (int e = tid; e < T * D; e += nt) {
            int j = e / D, c = e % D;
            float av = dVs[e], ak = dKs[e];
            for (int i = 0; i < T; i++) {
                av += Ps[i * T + j] * dOs[i * D + c];
                ak += dSs[i * T + j] * Qs[i * D + c];
            }
            dVs[e] = av;
            dKs[e] = ak;
        }
    }
    __syncthreads();
    for (int e = tid; e < T * D; e += nt) {
        int j = e / D, c = e % D, kk = k0 + j;
        if (kk >= total) continue;
        if (kk < N) {
            i64 o = (((i64)b * N + kk) * H + h) * D + c;
            if (dpk) dpk[o] = dKs[e];
            if (dpv) dpv[o] = dVs[e];
        } else {
            i64 o = (((i64)b * S + (kk - N)) * H + h) * D + c;
            if (dk) dk[o] = dKs[e];
            if (dv) dv[o] = dVs[e];
        }
    }
}
