// Host emulation of the CUDA features our kernels use, so that a kernel file compiles with g++ and runs on a CPU:
//   g++ -std=c++20 -O1 -pthread -DDGLM_HOST_EMULATION -include tools/kernel-emu/cuda_host.h -x c++ kernels/X.cu ...
// Every CUDA thread of a block is an OS thread; blocks run one after another. __syncthreads is a block barrier;
// warp collectives (shuffles, mma.sync, ldmatrix) exchange through a per-warp buffer between two warp barriers and
// compute their results from the documented PTX fragment layouts. It checks a kernel's indexing, tiling, masking
// and synchronisation — everything but the hardware itself — on machines without a GPU. Slow by design (context
// switches at every collective); meant for small shapes.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __align__(n) alignas(n)

struct dglm_dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dglm_dim3 threadIdx, blockIdx;
inline dglm_dim3 blockDim, gridDim;

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }

inline unsigned short dglm_emu_f32_to_f16(float f) { _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u; }
inline float dglm_emu_f16_to_f32(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }

namespace dglm_emu {

struct alignas(16) Slot {
    unsigned char bytes[64];
};

struct BlockState {
    explicit BlockState(int threads, size_t shared)
        : all(threads), warps((threads + 31) / 32), shared(shared + 16, 0xff), exchange((threads + 31) / 32 * 32) {
        for (auto& w : warps) w = std::make_unique<std::barrier<>>(32);
        vote[0] = vote[1] = 0;
    }
    std::barrier<> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<unsigned char> shared;
    std::vector<Slot> exchange; // one slot per thread, grouped by warp
    std::atomic<int> vote[2];
};

inline thread_local BlockState* block = nullptr;
inline thread_local int lane = 0, warp = 0, votes = 0;

inline void warp_sync() { block->warps[warp]->arrive_and_wait(); }
inline Slot& slot(int l) { return block->exchange[warp * 32 + l]; }

// Runs `kernel` over the grid with `shared` bytes of dynamic shared memory per block, poisoned with 0xff bytes
// (a bf16 NaN, a float NaN) so that a read before the write shows up in the results.
inline void launch(dglm_dim3 grid, dglm_dim3 blk, size_t shared, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = blk;
    int threads = (int)(blk.x * blk.y * blk.z);
    if (threads % 32 != 0) throw "emulated blocks must be whole warps";
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                BlockState state(threads, shared);
                std::vector<std::thread> pool;
                for (int t = 0; t < threads; t++)
                    pool.emplace_back([&, t] {
                        block = &state;
                        blockIdx = {x, y, z};
                        threadIdx = {(unsigned)(t % blk.x), (unsigned)(t / blk.x % blk.y), (unsigned)(t / (blk.x * blk.y))};
                        lane = t % 32;
                        warp = t / 32;
                        votes = 0;
                        kernel();
                    });
                for (auto& th : pool) th.join();
            }
}

} // namespace dglm_emu

inline void* dglm_emu_dynamic_shared() {
    auto p = (uintptr_t)dglm_emu::block->shared.data();
    return (void*)((p + 15) & ~(uintptr_t)15);
}

inline void __syncthreads() { dglm_emu::block->all.arrive_and_wait(); }

// Two barriers per vote: writers and readers of one slot never overlap, and the other slot is cleared while
// nobody can touch it.
inline int __syncthreads_or(int predicate) {
    using namespace dglm_emu;
    int s = votes++ & 1;
    if (predicate) block->vote[s].fetch_or(1);
    block->all.arrive_and_wait();
    int r = block->vote[s].load();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) block->vote[s ^ 1].store(0);
    block->all.arrive_and_wait();
    return r;
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    using namespace dglm_emu;
    static_assert(sizeof(T) <= sizeof(Slot));
    std::memcpy(slot(lane).bytes, &v, sizeof(T));
    warp_sync();
    T r;
    std::memcpy(&r, slot(lane ^ mask).bytes, sizeof(T));
    warp_sync();
    return r;
}

inline float dglm_emu_bf16(unsigned short b) { return __uint_as_float((unsigned)b << 16); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, from the PTX ISA's fragment layouts (see common.cuh).
// Sums in double and rounds once: the hardware's own order and rounding are not modelled.
inline void dglm_emu_mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    using namespace dglm_emu;
    unsigned mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    std::memcpy(slot(lane).bytes, mine, sizeof mine);
    warp_sync();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        unsigned f[6];
        std::memcpy(f, slot(l).bytes, sizeof f);
        int g = l >> 2, t = l & 3;
        for (int r = 0; r < 4; r++) {
            int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            A[row][col] = dglm_emu_bf16((unsigned short)(f[r] & 0xffff));
            A[row][col + 1] = dglm_emu_bf16((unsigned short)(f[r] >> 16));
        }
        for (int r = 0; r < 2; r++) {
            int kk = 2 * t + 8 * r;
            B[kk][g] = dglm_emu_bf16((unsigned short)(f[4 + r] & 0xffff));
            B[kk + 1][g] = dglm_emu_bf16((unsigned short)(f[4 + r] >> 16));
        }
    }
    warp_sync();
    int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; r++) {
        int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
        double acc = d[r];
        for (int kk = 0; kk < 16; kk++) acc += (double)A[row][kk] * B[kk][col];
        d[r] = (float)acc;
    }
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lane 8m + r addresses row r of matrix m; lane 4i + j receives
// (row 2j, column i) and (row 2j + 1, column i) of matrix m, low half first.
inline void dglm_emu_ldsm_x4_trans(unsigned (&out)[4], const unsigned short* p) {
    using namespace dglm_emu;
    if (((uintptr_t)p & 15) != 0) throw "ldmatrix row address not 16-byte aligned";
    std::memcpy(slot(lane).bytes, &p, sizeof p);
    warp_sync();
    int i = lane >> 2, j = lane & 3;
    for (int m = 0; m < 4; m++) {
        const unsigned short *lo, *hi;
        std::memcpy(&lo, slot(8 * m + 2 * j).bytes, sizeof lo);
        std::memcpy(&hi, slot(8 * m + 2 * j + 1).bytes, sizeof hi);
        out[m] = (unsigned)lo[i] | ((unsigned)hi[i] << 16);
    }
    warp_sync();
}
