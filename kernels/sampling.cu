// The device half of one generation step's score pipeline (spec §7; CpuBackend.Sampling.cs is the reference).
// Without it every step copies B × 130,528 logits to the host (16.7 MB at B = 32) and the host runs the pipeline
// over all of them; with it, each row is reduced where it lies to the few candidates top-k keeps (about k, in id
// order), and only those cross the bus. The host then runs top-p, the softmax and the draw on them; because the
// scores it gets are the very floats its own pipeline would have computed, the pick is the same token.
#include "common.cuh"

#define SELECT_THREADS 512

// The float's bits mapped so that unsigned order is numeric order; −0 is first made +0, so the two zeros are one
// key (as they are one value to a comparison). LogitsProcessing.OrderedBits is the host twin.
__device__ __forceinline__ u32 ordered_key(float x) {
    if (x == 0.0f) x = 0.0f;
    u32 b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The k-th largest of the keys key(i), i in [0, n), counting only keys ≥ floor (the caller guarantees that at least
// k keys are ≥ floor, so the answer is the same as without the floor). An MSB-first radix select over four 8-bit
// digits: each pass histograms the keys that agree with the digits chosen so far, then walks the histogram from
// the top to the bucket holding the k-th. Every thread of the block must call it; every thread gets the result.
// The floor is what keeps it fast: logits share their sign and exponent bits, so without it every key lands in the
// same few buckets and the shared-memory atomics serialise.
template <typename KeyAt>
__device__ u32 block_kth_largest(KeyAt key_at, i64 n, int k, u32 floor, u32* hist, u32* chosen) {
    u32 prefix = 0, mask = 0;
    u32 remaining = (u32)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
            u32 key = key_at(i);
            if (key >= floor && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 rem = remaining;
            int d = 255;
            for (; d > 0 && hist[d] < rem; d--) rem -= hist[d];
            chosen[0] = prefix | ((u32)d << shift);
            chosen[1] = rem;
        }
        __syncthreads();
        prefix = chosen[0];
        remaining = chosen[1];
        mask |= 255u << shift;
        // Not needed by any access (the race check passes without it): the next pass rewrites hist and chosen
        // only after barriers of its own. It closes the pass, so the loop stays correct if a pass changes.
        __syncthreads();
    }
    return prefix;
}

// One block of SELECT_THREADS per row r of scores [rows, v] (F32, overwritten with the penalised scores):
//  1. repetition penalty at penalty_ids[r, 0..penalty_len) (distinct ids; −1 pads): s ← s < 0 ? s·θ : s/θ;
//  2. a row holding a non-finite penalised score gets counts[r] = −1 and nothing else (the host's guard handles it);
//  3. the k-th largest t_k of s/T (k = top_k[r], ≤ 0 or > v meaning v);
//  4. every j with s_j/T ≥ t_k, in ascending j: the first `capacity` go to cand_ids[r, ·] and cand_scores[r, ·]
//     (as s_j/T), and counts[r] = how many there are (more than capacity when ties overflow it).
// settings[r] = (θ, T). Division is IEEE (no fast math), as the host's.
// __launch_bounds__: with 512 threads a thread may use at most 128 registers; the bound makes the compiler plan for it.
extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
select_candidates(float* scores, const int* penalty_ids, int penalty_len, const float* settings, const int* top_k, int* cand_ids,
                  float* cand_scores, int* counts, i64 v, int capacity) {
    __shared__ u32 hist[256];
    __shared__ u32 chosen[2];
    __shared__ u32 thread_max[SELECT_THREADS];
    __shared__ int warp_total[SELECT_THREADS / 32];
    i64 r = blockIdx.x;
    float* row = scores + r * v;
    float theta = settings[2 * r], temperature = settings[2 * r + 1];
    if (theta != 1.0f)
        for (int i = threadIdx.x; i < penalty_len; i += blockDim.x) {
            int id = penalty_ids[r * penalty_len + i];
            if (id < 0) continue;
            float s = row[id];
            row[id] = s < 0.0f ? s * theta : s / theta;
        }
    __syncthreads(); // the penalised scores are global writes: visible to the block after the barrier

    // One pass: the non-finite check, and each thread's largest key (for the floor below).
    int bad = 0;
    u32 best = 0;
    for (i64 j = threadIdx.x; j < v; j += blockDim.x) {
        float s = row[j];
        if ((__float_as_uint(s) & 0x7f800000u) == 0x7f800000u) bad = 1;
        else best = max(best, ordered_key(s / temperature));
    }
    if (__syncthreads_or(bad)) {
        if (threadIdx.x == 0) counts[r] = -1;
        return;
    }
    int k = top_k[r];
    if (k <= 0 || (i64)k > v) k = (int)v;

    // The floor: the k-th largest of the threads' maxima. Those are k distinct elements, so at least k keys are
    // ≥ it, and it is ≤ the row's k-th largest. Typically only a few times k keys clear it.
    u32 floor = 0;
    if (k <= (int)blockDim.x && (i64)blockDim.x <= v) {
        thread_max[threadIdx.x] = best;
        __syncthreads();
        floor = block_kth_largest([&](i64 i) { return thread_max[i]; }, (i64)blockDim.x, k, 0u, hist, chosen);
    }
    u32 kth = block_kth_largest([&](i64 j) { return ordered_key(row[j] / temperature); }, v, k, floor, hist, chosen);

    // Ordered compaction, a tile of blockDim ids at a time: a block-wide exclusive scan of the "kept" flags gives
    // each kept id its slot, so the candidates come out in ascending id whatever the thread schedule.
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    int base = 0;
    for (i64 start = 0; start < v; start += blockDim.x) {
        i64 j = start + threadIdx.x;
        float s = 0.0f;
        int keep = 0;
        if (j < v) {
            s = row[j] / temperature;
            keep = ordered_key(s) >= kth;
        }
        int inclusive = keep;
        for (int d = 1; d < 32; d <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, inclusive, d);
            if (lane >= d) inclusive += y;
        }
        if (lane == 31) warp_total[warp] = inclusive;
        __syncthreads();
        int before = base, total = 0;
        for (int w = 0; w < warps; w++) {
            if (w < warp) before += warp_total[w];
            total += warp_total[w];
        }
        int slot = before + inclusive - keep;
        if (keep && slot < capacity) {
            cand_ids[r * capacity + slot] = (int)j;
            cand_scores[r * capacity + slot] = s;
        }
        base += total;
        __syncthreads(); // warp_total is rewritten by the next tile
    }
    if (threadIdx.x == 0) counts[r] = base;
}
