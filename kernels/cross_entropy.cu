// Softmax cross-entropy per row (CpuBackend.CrossEntropy.cs). A vocabulary row is 130k logits, so one block
// streams it once with an online log-sum-exp (running max and rescaled sum per thread, merged across the
// block) instead of a max pass followed by a sum pass. Label checks and the non-finite report happen on the
// host, around these kernels.
#include "common.cuh"

// Merges (m2, s2) into (m, s): both are "Σ exp(x − m)" sums under their own running maximum.
__device__ __forceinline__ void lse_merge(float& m, double& s, float m2, double s2) {
    if (m2 == -DGLM_INF) return;
    if (m == -DGLM_INF) { m = m2; s = s2; return; }
    if (m2 > m) { s = s * (double)expf(m - m2) + s2; m = m2; }
    else s = s + s2 * (double)expf(m2 - m);
}

// One block per row; rows whose label is the ignore index get 0 loss and 0 lse.
extern "C" __global__ void cross_entropy_forward(const float* logits, const int* labels, int ignore_index,
                                                 float* row_loss, float* lse, i64 v) {
    __shared__ float sm[32];
    __shared__ double ss[32];
    __shared__ int nan_seen;
    i64 r = blockIdx.x;
    int t = labels[r];
    if (t == ignore_index) {
        if (threadIdx.x == 0) { row_loss[r] = 0.0f; lse[r] = 0.0f; }
        return;
    }
    if (threadIdx.x == 0) nan_seen = 0;
    __syncthreads();
    const float* row = logits + r * v;
    float m = -DGLM_INF;
    double s = 0.0;
    bool pos_inf = false;
    for (i64 j = threadIdx.x; j < v; j += blockDim.x) {
        float x = row[j];
        if (x != x) { nan_seen = 1; continue; }
        if (x == DGLM_INF) { pos_inf = true; continue; }
        lse_merge(m, s, x, 1.0);
    }
    if (pos_inf) atomicCAS(&nan_seen, 0, 2); // +∞ logit: the CPU's max is +∞ and the loss is not finite
    // Merge the per-thread (max, sum) pairs: warp shuffles, then one value per warp through shared memory.
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        double s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float mm = -DGLM_INF;
        double sum = 0.0;
        for (int w = 0; w < warps; w++) lse_merge(mm, sum, sm[w], ss[w]);
        double l;
        if (nan_seen == 1) l = (double)__int_as_float(0x7fc00000);
        else if (nan_seen == 2) l = (double)DGLM_INF;
        else if (mm == -DGLM_INF) l = -(double)DGLM_INF;
        else l = (double)mm + log(sum);
        lse[r] = (float)l;
        row_loss[r] = (float)(l - (double)row[t]);
    }
}

// dlogits[r, j] = (exp(logits[r, j] − lse[r]) − [j = label])·dloss·invCount; ignored rows are zero.
extern "C" __global__ void cross_entropy_backward(const float* logits, const int* labels, const float* lse, int ignore_index,
                                                  const float* dloss, float inv_count, float* dlogits, i64 n, i64 v) {
    float scale = dloss[0] * inv_count;
    GRID_STRIDE(e, n * v) {
        i64 r = e / v, j = e % v;
        int t = labels[r];
        if (t == ignore_index) { dlogits[e] = 0.0f; continue; }
        float d = expf(logits[e] - lse[r]) * scale;
        if (j == t) d -= scale;
        dlogits[e] = d;
    }
}
