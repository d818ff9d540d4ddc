// GLM attention on tensor cores: the same contract as attention.cu (CpuBackend.Attention.cs is the reference), with
// the products Q·Kᵀ, P·V, dO·Vᵀ, dS·K, Pᵀ·dO and dSᵀ·Q done by mma.sync in bf16 with fp32 accumulation
// (FlashAttention-2's schedule). q, k, v and the output are activations of one dtype `act` (F32, BF16 or F16); dO is
// fp32; the forward's prefix keys/values are F32, BF16 or F16 (`pdt`) with batch stride `pstride` elements (a view of a
// KV cache buffer), the backward's are contiguous fp32. Tiles are rounded to bf16 when staged in shared memory (a bf16 activation is
// copied as it is); softmax statistics, lse and every gradient are fp32, the output is rounded once to `act`.
// Head sizes 64 and 128.
//
// Layout (as attention.cu): q, k, v, out [B, S, nh, d]; prefix keys/values [B, N, nh, d] come first in the
// combined key index kk ∈ [0, N + S); mask U8 [B, S, S] over the sequence's own keys (1 = blocked → the score is
// the constant `masked`, as masked_fill does). The forward also takes pmask, U8 [B, N] over the prefix keys
// (1 = blocked for every query; null = none: a batched KV cache's left pads); the backward has none.
//
// Blocks have 4 warps. Forward and dQ: a block owns 64 query rows (16 per warp) and streams 64-key tiles.
// dK/dV: a block owns 64 keys (16 per warp) and streams 32-row query tiles. Each gradient element is written by
// exactly one block (no atomics: deterministic, like attention.cu).
//
// Skipping: a tile whose every entry is blocked (a causal mask's upper triangle) is skipped when it cannot change
// the result beyond fp32 rounding: in the forward once each row's running max is 40 above the masked score
// (exp(−40) ≈ 4e−18 of the row's mass), in dQ always (blocked entries have dS = 0), in dK/dV when every row's
// lse is 40 above it (their P would feed dV). Rows that see no key at all (no prefix, all blocked) are uniform,
// P = 1/S, exactly as attention.cu treats them.
#include "common.cuh"

#define ATT_BQ 64          // query rows per forward / dQ block
#define ATT_BK 64          // keys per tile (per dK/dV block)
#define ATT_BQ_DKV 32      // query rows per dK/dV iteration
#define ATT_THREADS 128
#define ATT_SKIP_MARGIN 40.0f

// Element `off` of a buffer of dtype `dt` onwards: one row of a [*, nh, d] tensor; p = null for "no row" (zeros).
struct AttRow {
    const void* p;
    i64 off;
    int dt;
};

// Row `r` of a shared-memory tile (row stride LD) gets the bf16 values of elements 4·c4 .. 4·c4 + 3 of `row`:
// copied for a bf16 row (8 bytes, aligned: rows start at multiples of d ≥ 64 elements), else rounded from fp32
// (an fp16 row is widened first); zeros without a row. Work is spread as rows × d/4 quads over the block's threads.
template <int D, int LD>
__device__ __forceinline__ void stage_bf16(u16* dst, int r, AttRow row, int c4) {
    u32* o = (u32*)(dst + r * LD + c4 * 4);
    if (!row.p) { o[0] = 0u; o[1] = 0u; return; }
    if (row.dt == DT_BF16) {
        const u32* s = (const u32*)((const u16*)row.p + row.off + c4 * 4);
        o[0] = s[0];
        o[1] = s[1];
        return;
    }
    if (row.dt == DT_F16) {
        const u16* s = (const u16*)row.p + row.off + c4 * 4;
        o[0] = pack_bf16x2(f16_to_f32(s[0]), f16_to_f32(s[1]));
        o[1] = pack_bf16x2(f16_to_f32(s[2]), f16_to_f32(s[3]));
        return;
    }
    struct alignas(16) F4 { float x, y, z, w; };
    F4 v = ((const F4*)((const float*)row.p + row.off))[c4];
    o[0] = pack_bf16x2(v.x, v.y);
    o[1] = pack_bf16x2(v.z, v.w);
}

__device__ __forceinline__ i64 att_seq_off(int b, int i, int S, int H, int h, int D) {
    return (((i64)b * S + i) * H + h) * D;
}

// Row kk of the combined keys (prefix first: dtype pdt, batch stride pstride), none past the end.
__device__ __forceinline__ AttRow att_key_row(const void* x, int dt, const void* px, int pdt, i64 pstride, int b, int kk, int S, int N, int H, int h,
                                              int D) {
    if (kk >= N + S) return AttRow{nullptr, 0, DT_F32};
    if (kk < N) return AttRow{px, (i64)b * pstride + ((i64)kk * H + h) * D, pdt};
    return AttRow{x, att_seq_off(b, kk - N, S, H, h, D), dt};
}

// Rows q0 .. q0 + ROWS − 1 of one head of [B, S, nh, d] tensors x (dtype x_dt) and, when given, y (fp32: dO)
// staged as bf16; rows past S are zeros.
template <int D, int LD, int ROWS>
__device__ __forceinline__ void stage_queries(u16* xs, const void* x, int x_dt, u16* ys, const float* y, int b, int q0, int S, int H, int h) {
    for (int e = threadIdx.x; e < ROWS * D / 4; e += ATT_THREADS) {
        int r = e / (D / 4), qi = q0 + r, c4 = e % (D / 4);
        i64 off = att_seq_off(b, qi, S, H, h, D);
        stage_bf16<D, LD>(xs, r, AttRow{qi < S ? x : nullptr, off, x_dt}, c4);
        if (ys) stage_bf16<D, LD>(ys, r, AttRow{qi < S ? y : nullptr, off, DT_F32}, c4);
    }
}

// Combined keys k0 .. k0 + ATT_BK − 1 (prefix first) of K and V (dtype dt) staged as bf16; keys past the end are zeros.
template <int D, int LD>
__device__ __forceinline__ void stage_keys(u16* Ks, u16* Vs, const void* k, const void* v, int dt, const void* pk, const void* pv,
                                           int pdt, i64 pstride, int b, int k0, int S, int N, int H, int h) {
    for (int e = threadIdx.x; e < ATT_BK * D / 4; e += ATT_THREADS) {
        int r = e / (D / 4), c4 = e % (D / 4);
        stage_bf16<D, LD>(Ks, r, att_key_row(k, dt, pk, pdt, pstride, b, k0 + r, S, N, H, h, D), c4);
        stage_bf16<D, LD>(Vs, r, att_key_row(v, dt, pv, pdt, pstride, b, k0 + r, S, N, H, h, D), c4);
    }
}

// The ROWS × ATT_BK mask tile at (q0, k0) into Ms (1 = blocked: from mask for sequence keys, from pmask for prefix
// keys; entries outside the matrix are 0). Returns whether this thread saw an entry that must be computed: an open
// one, or a blocked one for which `blocked_counts(qi)` says its probability still matters.
template <int ROWS, typename F>
__device__ __forceinline__ int load_mask_tile(u8* Ms, const u8* mask, const u8* pmask, int b, int q0, int k0, int S, int N, F blocked_counts) {
    int keep = 0;
    for (int e = threadIdx.x; e < ROWS * ATT_BK; e += ATT_THREADS) {
        int i = e / ATT_BK, j = e % ATT_BK, qi = q0 + i, kk = k0 + j;
        u8 blk = 0;
        if (qi < S && kk < N + S) {
            if (kk >= N) { if (mask) blk = mask[((i64)b * S + qi) * S + (kk - N)]; }
            else if (pmask) blk = pmask[(i64)b * N + kk];
            if (!blk || blocked_counts(qi)) keep = 1;
        }
        Ms[e] = blk;
    }
    return keep;
}

template <int NT>
__device__ __forceinline__ void zero_tiles(float (&acc)[NT][4]) {
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
}

// Loads an A fragment (16 rows × 16 columns at (r0, c0)) of a row-major bf16 tile with row stride LD.
template <int LD>
__device__ __forceinline__ void load_a(u32 (&a)[4], const u16* tile, int r0, int c0, int g, int t) {
    a[0] = *(const u32*)(tile + (r0 + g) * LD + c0 + 2 * t);
    a[1] = *(const u32*)(tile + (r0 + g + 8) * LD + c0 + 2 * t);
    a[2] = *(const u32*)(tile + (r0 + g) * LD + c0 + 8 + 2 * t);
    a[3] = *(const u32*)(tile + (r0 + g + 8) * LD + c0 + 8 + 2 * t);
}

// acc[n] (n = 0..NT−1) += A-rows × Bᵀ where B's rows are n-tile rows of `tile` (row-major [n][k], k over 0..D):
// the product X·Yᵀ with both operands stored row-major, as Q·Kᵀ needs.
template <int D, int LD, int NT>
__device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const u16* a_tile, int a_r0, const u16* b_tile, int g, int t) {
#pragma unroll
    for (int c0 = 0; c0 < D; c0 += 16) {
        u32 a[4];
        load_a<LD>(a, a_tile, a_r0, c0, g, t);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const u16* br = b_tile + (n * 8 + g) * LD + c0 + 2 * t;
            mma_bf16_16816(acc[n], a, *(const u32*)br, *(const u32*)(br + 8));
        }
    }
}

// acc[dn] (dn = 0..D/8−1) += P·Y for P held as KT·2 accumulator tiles (16 rows × 16·KT columns) and Y a row-major
// [KT·16][D] bf16 tile: the P·V, dS·K, Pᵀ·dO and dSᵀ·Q products, with P rounded to bf16 in registers.
template <int D, int LD, int KT>
__device__ __forceinline__ void mma_py(float (&acc)[D / 8][4], const float (&p)[2 * KT][4], const u16* y, int lane) {
#pragma unroll
    for (int kt = 0; kt < KT; kt++) {
        u32 a[4] = {pack_bf16x2(p[2 * kt][0], p[2 * kt][1]), pack_bf16x2(p[2 * kt][2], p[2 * kt][3]),
                    pack_bf16x2(p[2 * kt + 1][0], p[2 * kt + 1][1]), pack_bf16x2(p[2 * kt + 1][2], p[2 * kt + 1][3])};
        const u16* rows = y + (kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;
#pragma unroll
        for (int d2 = 0; d2 < D / 16; d2++) {
            u32 bb[4];
            ldsm_x4_trans(bb, rows + d2 * 16);
            mma_bf16_16816(acc[2 * d2], a, bb[0], bb[1]);
            mma_bf16_16816(acc[2 * d2 + 1], a, bb[2], bb[3]);
        }
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ------------------------------------------------------------------------------------------------ forward

template <int D>
__device__ void attention_mma_forward(const void* q, const void* k, const void* v, int act, const void* pk, const void* pv,
                                      int pdt, i64 pstride, const u8* mask, const u8* pmask, int S, int N, int H, float scale, float masked, void* out, float* lse) {
    constexpr int LD = D + 8; // +16 bytes per row: the eight rows an ldmatrix / fragment load touches hit distinct banks
    DGLM_DYNAMIC_SHARED(u16, smem);
    u16* Qs = smem;
    u16* Ks = Qs + ATT_BQ * LD;
    u16* Vs = Ks + ATT_BK * LD;
    u8* Ms = (u8*)(Vs + ATT_BK * LD);
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BQ, total = N + S;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3, wr = warp * 16;

    stage_queries<D, LD, ATT_BQ>(Qs, q, act, nullptr, nullptr, b, q0, S, H, h);
    __syncthreads();
    u32 qf[D / 16][4];
#pragma unroll
    for (int c = 0; c < D / 16; c++) load_a<LD>(qf[c], Qs, wr, c * 16, g, t);

    int rowq[2] = {q0 + wr + g, q0 + wr + g + 8};
    float m[2] = {-DGLM_INF, -DGLM_INF}, l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
    zero_tiles(o);

    for (int k0 = 0; k0 < total; k0 += ATT_BK) {
        __syncthreads(); // every warp is done with the previous tile
        int keep = load_mask_tile<ATT_BQ>(Ms, mask, pmask, b, q0, k0, S, N, [](int) { return false; });
        for (int rr = 0; rr < 2; rr++)
            if (rowq[rr] < S && !(m[rr] >= masked + ATT_SKIP_MARGIN)) keep = 1;
        if (!__syncthreads_or(keep)) continue;
        stage_keys<D, LD>(Ks, Vs, k, v, act, pk, pv, pdt, pstride, b, k0, S, N, H, h);
        __syncthreads();

        float s[ATT_BK / 8][4];
        zero_tiles(s);
#pragma unroll
        for (int c = 0; c < D / 16; c++)
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; n++) {
                const u16* br = Ks + (n * 8 + g) * LD + c * 16 + 2 * t;
                mma_bf16_16816(s[n], qf[c], *(const u32*)br, *(const u32*)(br + 8));
            }

        float mt[2] = {-DGLM_INF, -DGLM_INF};
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                int i = wr + g + 8 * (r >> 1), j = n * 8 + 2 * t + (r & 1);
                float x;
                if (q0 + i >= S || k0 + j >= total) x = -DGLM_INF;
                else if (Ms[i * ATT_BK + j]) x = masked;
                else x = s[n][r] * scale;
                s[n][r] = x;
                mt[r >> 1] = fmaxf(mt[r >> 1], x);
            }
        float alpha[2];
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float mn = fmaxf(m[rr], quad_max(mt[rr]));
            // mn = −inf only for rows past S (every score −inf): keep them at zero without forming −inf − (−inf).
            alpha[rr] = mn == -DGLM_INF ? 1.0f : expf(m[rr] - mn);
            m[rr] = mn;
            l[rr] *= alpha[rr];
        }
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                float p = s[n][r] == -DGLM_INF ? 0.0f : expf(s[n][r] - m[r >> 1]);
                s[n][r] = p;
                l[r >> 1] += p; // this lane's share of the row sum; the quad adds its four shares at the end
            }
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) o[n][r] *= alpha[r >> 1];
        mma_py<D, LD, ATT_BK / 16>(o, s, Vs, lane);
    }

#pragma unroll
    for (int rr = 0; rr < 2; rr++) l[rr] = quad_sum(l[rr]);
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int qi = rowq[r >> 1];
            if (qi < S) store_from_f32(out, att_seq_off(b, qi, S, H, h, D) + n * 8 + 2 * t + (r & 1), act, o[n][r] / l[r >> 1]);
        }
    if (t == 0)
        for (int rr = 0; rr < 2; rr++)
            if (rowq[rr] < S) lse[((i64)b * H + h) * S + rowq[rr]] = m[rr] + logf(l[rr]);
}

// ------------------------------------------------------------------------------------------------ backward: dQ
// dQ_i = Σ_j dS_ij·K_j, dS_ij = P_ij·(dP_ij − delta_i)·scale (0 where blocked), dP = dO·Vᵀ; P recomputed from lse.
// delta and the fully-blocked flags come from attention.cu's attention_backward_prep.

template <int D>
__device__ void attention_mma_backward_dq(const void* q, const void* k, const void* v, int act, const float* pk, const float* pv,
                                          const u8* mask, const float* lse, const float* delta, const float* dout,
                                          int S, int N, int H, float scale, float* dq) {
    constexpr int LD = D + 8;
    DGLM_DYNAMIC_SHARED(u16, smem);
    u16* Qs = smem;
    u16* dOs = Qs + ATT_BQ * LD;
    u16* Ks = dOs + ATT_BQ * LD;
    u16* Vs = Ks + ATT_BK * LD;
    u8* Ms = (u8*)(Vs + ATT_BK * LD);
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BQ, total = N + S;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3, wr = warp * 16;

    stage_queries<D, LD, ATT_BQ>(Qs, q, act, dOs, dout, b, q0, S, H, h);
    int rowq[2] = {q0 + wr + g, q0 + wr + g + 8};
    float rl[2], rd[2];
    for (int rr = 0; rr < 2; rr++) {
        bool in = rowq[rr] < S;
        rl[rr] = in ? lse[((i64)b * H + h) * S + rowq[rr]] : 0.0f;
        rd[rr] = in ? delta[((i64)b * H + h) * S + rowq[rr]] : 0.0f;
    }
    float acc[D / 8][4];
    zero_tiles(acc);

    for (int k0 = 0; k0 < total; k0 += ATT_BK) {
        __syncthreads();
        // All blocked: dS = 0 everywhere, nothing reaches dQ.
        int keep = load_mask_tile<ATT_BQ>(Ms, mask, nullptr, b, q0, k0, S, N, [](int) { return false; });
        if (!__syncthreads_or(keep)) continue;
        stage_keys<D, LD>(Ks, Vs, k, v, act, pk, pv, DT_F32, (i64)N * H * D, b, k0, S, N, H, h);
        __syncthreads();

        float s[ATT_BK / 8][4], dp[ATT_BK / 8][4];
        zero_tiles(s);
        zero_tiles(dp);
        mma_abt<D, LD, ATT_BK / 8>(s, Qs, wr, Ks, g, t);
        mma_abt<D, LD, ATT_BK / 8>(dp, dOs, wr, Vs, g, t);
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                int i = wr + g + 8 * (r >> 1), j = n * 8 + 2 * t + (r & 1);
                float ds = 0.0f;
                if (q0 + i < S && k0 + j < total && !Ms[i * ATT_BK + j]) {
                    float p = expf(s[n][r] * scale - rl[r >> 1]);
                    ds = p * (dp[n][r] - rd[r >> 1]) * scale;
                }
                s[n][r] = ds;
            }
        mma_py<D, LD, ATT_BK / 16>(acc, s, Ks, lane);
    }
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int qi = rowq[r >> 1];
            if (qi < S) dq[(((i64)b * S + qi) * H + h) * D + n * 8 + 2 * t + (r & 1)] = acc[n][r];
        }
}

// ------------------------------------------------------------------------------------------------ backward: dK, dV
// dV_j = Σ_i P_ij·dO_i, dK_j = Σ_i dS_ij·Q_i for the block's 64 combined keys, computed transposed (the warp's 16
// keys are the rows of Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ) so that Pᵀ and dSᵀ are A fragments already.

template <int D>
__device__ void attention_mma_backward_dkv(const void* q, const void* k, const void* v, int act, const float* pk, const float* pv,
                                           const u8* mask, const float* lse, const float* delta, const int* fully_blocked,
                                           const float* dout, int S, int N, int H, float scale, float masked,
                                           float* dk, float* dv, float* dpk, float* dpv) {
    constexpr int LD = D + 8;
    DGLM_DYNAMIC_SHARED(u16, smem);
    u16* Ks = smem;
    u16* Vs = Ks + ATT_BK * LD;
    u16* Qs = Vs + ATT_BK * LD;
    u16* dOs = Qs + ATT_BQ_DKV * LD;
    float* rowL = (float*)(dOs + ATT_BQ_DKV * LD);
    float* rowD = rowL + ATT_BQ_DKV;
    int* rowB = (int*)(rowD + ATT_BQ_DKV);
    u8* Ms = (u8*)(rowB + ATT_BQ_DKV);
    int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * ATT_BK, total = N + S;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3, wk = warp * 16;
    float invS = 1.0f / (float)S;

    stage_keys<D, LD>(Ks, Vs, k, v, act, pk, pv, DT_F32, (i64)N * H * D, b, k0, S, N, H, h);
    float gk[D / 8][4], gv[D / 8][4];
    zero_tiles(gk);
    zero_tiles(gv);

    for (int q0 = 0; q0 < S; q0 += ATT_BQ_DKV) {
        __syncthreads();
        // A blocked entry still carries P = exp(masked − lse) (or 1/S in a fully blocked row) into dV.
        int keep = load_mask_tile<ATT_BQ_DKV>(Ms, mask, nullptr, b, q0, k0, S, N, [&](int qi) {
            i64 row = ((i64)b * H + h) * S + qi;
            return fully_blocked[row] || !(lse[row] >= masked + ATT_SKIP_MARGIN);
        });
        if (!__syncthreads_or(keep)) continue;
        stage_queries<D, LD, ATT_BQ_DKV>(Qs, q, act, dOs, dout, b, q0, S, H, h);
        for (int i = tid; i < ATT_BQ_DKV; i += ATT_THREADS) {
            i64 row = ((i64)b * H + h) * S + q0 + i;
            bool in = q0 + i < S;
            rowL[i] = in ? lse[row] : 0.0f;
            rowD[i] = in ? delta[row] : 0.0f;
            rowB[i] = in ? fully_blocked[row] : 0;
        }
        __syncthreads();

        float st[ATT_BQ_DKV / 8][4], dpt[ATT_BQ_DKV / 8][4];
        zero_tiles(st);
        zero_tiles(dpt);
        mma_abt<D, LD, ATT_BQ_DKV / 8>(st, Ks, wk, Qs, g, t);
        mma_abt<D, LD, ATT_BQ_DKV / 8>(dpt, Vs, wk, dOs, g, t);
#pragma unroll
        for (int n = 0; n < ATT_BQ_DKV / 8; n++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                int j = wk + g + 8 * (r >> 1), i = n * 8 + 2 * t + (r & 1);
                float p = 0.0f, ds = 0.0f;
                if (q0 + i < S && k0 + j < total) {
                    if (Ms[i * ATT_BK + j]) p = rowB[i] ? invS : expf(masked - rowL[i]);
                    else {
                        p = expf(st[n][r] * scale - rowL[i]);
                        ds = p * (dpt[n][r] - rowD[i]) * scale;
                    }
                }
                st[n][r] = p;
                dpt[n][r] = ds;
            }
        mma_py<D, LD, ATT_BQ_DKV / 16>(gv, st, dOs, lane);
        mma_py<D, LD, ATT_BQ_DKV / 16>(gk, dpt, Qs, lane);
    }

#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int kk = k0 + wk + g + 8 * (r >> 1), c = n * 8 + 2 * t + (r & 1);
            if (kk >= total) continue;
            if (kk < N) {
                i64 o = (((i64)b * N + kk) * H + h) * D + c;
                if (dpk) dpk[o] = gk[n][r];
                if (dpv) dpv[o] = gv[n][r];
            } else {
                i64 o = (((i64)b * S + (kk - N)) * H + h) * D + c;
                if (dk) dk[o] = gk[n][r];
                if (dv) dv[o] = gv[n][r];
            }
        }
}

// ------------------------------------------------------------------------------------------------ entry points

#define ATT_MMA_ENTRIES(D)                                                                                                     \
    extern "C" __global__ void attention_mma_forward_d##D(const void* q, const void* k, const void* v, int act,               \
                                                          const void* pk, const void* pv, int pdt, i64 pstride, const u8* mask, \
                                                          const u8* pmask, int S, int N, int H, float scale, float masked,      \
                                                          void* out, float* lse) {                                              \
        attention_mma_forward<D>(q, k, v, act, pk, pv, pdt, pstride, mask, pmask, S, N, H, scale, masked, out, lse);            \
    }                                                                                                                          \
    extern "C" __global__ void attention_mma_backward_dq_d##D(const void* q, const void* k, const void* v, int act,           \
                                                              const float* pk, const float* pv, const u8* mask,                 \
                                                              const float* lse, const float* delta, const float* dout, int S,   \
                                                              int N, int H, float scale, float* dq) {                           \
        attention_mma_backward_dq<D>(q, k, v, act, pk, pv, mask, lse, delta, dout, S, N, H, scale, dq);                         \
    }                                                                                                                          \
    extern "C" __global__ void attention_mma_backward_dkv_d##D(                                                                \
        const void* q, const void* k, const void* v, int act, const float* pk, const float* pv, const u8* mask,                 \
        const float* lse, const float* delta, const int* fully_blocked, const float* dout, int S, int N, int H, float scale,    \
        float masked, float* dk, float* dv, float* dpk, float* dpv) {                                                           \
        attention_mma_backward_dkv<D>(q, k, v, act, pk, pv, mask, lse, delta, fully_blocked, dout, S, N, H, scale, masked, dk,  \
                                      dv, dpk, dpv);                                                                            \
    }

ATT_MMA_ENTRIES(64)
ATT_MMA_ENTRIES(128)
