// Host emulation of the CUDA features our kernels use, so that a kernel file compiles with g++ and runs on a CPU:
//   g++ -std=c++20 -O2 -DDGLM_HOST_EMULATION -include tools/kernel-emu/cuda_host.h -x c++ kernels/X.cu ...
// Every CUDA thread of a block is a fiber (ucontext) on the calling OS thread; blocks run one after another, so a
// launch is deterministic. __syncthreads and the warp collectives (shuffles, mma.sync, ldmatrix) are barriers the
// scheduler enforces: a fiber that arrives waits until every live thread of its block (or warp) has arrived.
// Between barriers a thread runs alone (no interleaving), in thread order or, with DGLM_EMU_ORDER=reverse, the
// opposite one: a missing barrier between a shared write and another thread's read shows up in one of the two.
// Warp collectives exchange their operands through a per-warp buffer and compute their results from the PTX ISA's
// fragment layouts. Checked on the way: barriers nobody can complete (a deadlock on a GPU), warp collectives with
// exited lanes, misaligned ldmatrix rows; shared memory starts poisoned (0xff bytes: a float or bf16 NaN).
// What it cannot check is the hardware itself (timing, the real instruction encodings): that is the GPU tests' job.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <string>
#include <type_traits>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
// Static __shared__ variables are function-local statics. The device build (device/build.sh) moves every one of
// them into the section dglm_shared, which each block start refills with poison (as it does the dynamic shared
// memory): a read before the block's first write sees NaN, not the previous block's data.
#define __shared__ static
#define __align__(n) alignas(n)
#ifndef __launch_bounds__ // device/build.sh defines it while it lists the kernels, to read each one's bound
#define __launch_bounds__(...)
#endif

// CUDA's integer min/max overloads (device code calls them unqualified).
template <typename A, typename B> inline std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <typename A, typename B> inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }

using std::isfinite;
using std::isinf;
using std::isnan;

struct dglm_dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// The bounds of the static shared section, from the linker (weak: a library without any has neither).
extern "C" __attribute__((weak)) char __start_dglm_shared[];
extern "C" __attribute__((weak)) char __stop_dglm_shared[];

namespace dglm_emu {

struct alignas(16) Slot {
    unsigned char bytes[64];
};

struct Fiber {
    ucontext_t ctx;
    dglm_dim3 idx;
    int tid = 0, lane = 0, warp = 0, votes = 0;
    const char *stackLo = nullptr, *stackHi = nullptr; // thread-private: the race check ignores it
    enum State { Runnable, Waiting, Done } state = Runnable;
    int waitingOn = -1; // -1: the block barrier; w ≥ 0: warp w's barrier
};

struct Block {
    dglm_dim3 idx;
    std::vector<Fiber> fibers;
    int live = 0, arrived = 0;
    std::vector<int> warpLive, warpArrived;
    std::vector<unsigned char> shared;
    std::vector<Slot> exchange; // one slot per thread, grouped by warp
    int vote[2] = {0, 0};
    // For the race check (device/racecheck.cpp): the block's serial number (unique over every block of every
    // launch), and how many block barriers have completed: two accesses of one block are ordered when a barrier
    // completed between them.
    unsigned serial = 0, epoch = 0;
};

inline Block* block = nullptr;
inline Fiber* current = nullptr;
inline ucontext_t scheduler;
inline dglm_dim3 gridDim_, blockDim_;
inline const std::function<void()>* body = nullptr;
inline std::string error; // the first problem of the running launch
inline unsigned generation = 0; // counts launches and blocks: the serial numbers of both
inline unsigned launchSerial = 0; // the running launch's

inline void fail(const std::string& what) {
    if (error.empty()) error = what;
}

inline void release(int w) {
    if (w < 0) block->epoch++;
    for (auto& f : block->fibers)
        if (f.state == Fiber::Waiting && f.waitingOn == w) f.state = Fiber::Runnable;
}

// Arrive at the block barrier (w = −1) or warp w's barrier; returns once every live member has arrived.
inline void arrive(int w) {
    int& arrived = w < 0 ? block->arrived : block->warpArrived[w];
    int live = w < 0 ? block->live : block->warpLive[w];
    if (++arrived == live) {
        arrived = 0;
        release(w);
        return;
    }
    current->state = Fiber::Waiting;
    current->waitingOn = w;
    swapcontext(&current->ctx, &scheduler);
}

inline void warp_sync() {
    if (block->warpLive[current->warp] != 32) fail("a warp collective (shuffle, mma, ldmatrix) ran with exited lanes");
    arrive(current->warp);
}

inline Slot& slot(int l) { return block->exchange[current->warp * 32 + l]; }

inline void fiber_entry() {
    (*body)();
    Fiber* f = current;
    f->state = Fiber::Done;
    block->live--;
    block->warpLive[f->warp]--;
    // An exited thread no longer holds back the barriers its block or warp is waiting at.
    if (block->arrived > 0 && block->arrived == block->live) { block->arrived = 0; release(-1); }
    int& wa = block->warpArrived[f->warp];
    if (wa > 0 && wa == block->warpLive[f->warp]) { wa = 0; release(f->warp); }
}

// Runs `kernel` over the grid with `shared` bytes of dynamic shared memory per block. Returns false with
// `error` set when the launch went wrong (deadlock, a failed check inside a collective).
inline bool launch(dglm_dim3 grid, dglm_dim3 blk, size_t shared, const std::function<void()>& kernel) {
    constexpr size_t StackBytes = 128 * 1024;
    static std::vector<std::vector<char>> stacks;
    error.clear();
    int threads = (int)(blk.x * blk.y * blk.z);
    if (threads <= 0 || threads > 1024) { fail("block of " + std::to_string(threads) + " threads"); return false; }
    while ((int)stacks.size() < threads) stacks.emplace_back(StackBytes);
    gridDim_ = grid;
    blockDim_ = blk;
    body = &kernel;
    int warps = (threads + 31) / 32;
    launchSerial = ++generation;
    // Between two barriers each thread runs alone, in thread order; DGLM_EMU_ORDER=reverse runs them last to first,
    // so a read of shared data that lacks the barrier after its write sees the poison in one of the two orders.
    static const bool reverse = [] { const char* o = std::getenv("DGLM_EMU_ORDER"); return o && std::string(o) == "reverse"; }();
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                Block b;
                b.idx = {x, y, z};
                b.fibers.resize(threads);
                b.live = threads;
                b.warpLive.resize(warps);
                b.warpArrived.assign(warps, 0);
                for (int w = 0; w < warps; w++) b.warpLive[w] = std::min(32, threads - 32 * w);
                b.serial = ++generation;
                b.shared.assign(shared + 16, 0xff);
                if (char *lo = __start_dglm_shared, *hi = __stop_dglm_shared; hi > lo) std::memset(lo, 0xff, (size_t)(hi - lo));
                b.exchange.resize(warps * 32);
                for (int t = 0; t < threads; t++) {
                    Fiber& f = b.fibers[t];
                    f.idx = {(unsigned)(t % blk.x), (unsigned)(t / blk.x % blk.y), (unsigned)(t / (blk.x * blk.y))};
                    f.tid = t;
                    f.stackLo = stacks[t].data();
                    f.stackHi = stacks[t].data() + StackBytes;
                    f.lane = t % 32;
                    f.warp = t / 32;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = stacks[t].data();
                    f.ctx.uc_stack.ss_size = StackBytes;
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, fiber_entry, 0);
                }
                block = &b;
                while (b.live > 0) {
                    bool progress = false;
                    for (int i = 0; i < threads; i++) {
                        Fiber& f = b.fibers[reverse ? threads - 1 - i : i];
                        if (f.state == Fiber::Runnable) {
                            current = &f;
                            swapcontext(&scheduler, &f.ctx);
                            progress = true;
                        }
                    }
                    if (!progress) {
                        int waiting = 0;
                        for (auto& f : b.fibers) waiting += f.state == Fiber::Waiting;
                        fail("deadlock in block (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + "): " +
                             std::to_string(waiting) + " threads wait at a barrier the others never reach");
                        block = nullptr;
                        return false;
                    }
                }
                block = nullptr;
                if (!error.empty()) return false;
            }
    return true;
}

} // namespace dglm_emu

#define threadIdx (dglm_emu::current->idx)
#define blockIdx (dglm_emu::block->idx)
#define blockDim (dglm_emu::blockDim_)
#define gridDim (dglm_emu::gridDim_)

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }

inline unsigned short dglm_emu_f32_to_f16(float f) { _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u; }
inline float dglm_emu_f16_to_f32(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }

inline void* dglm_emu_dynamic_shared() {
    auto p = (uintptr_t)dglm_emu::block->shared.data();
    return (void*)((p + 15) & ~(uintptr_t)15);
}

inline void __syncthreads() { dglm_emu::arrive(-1); }

// Two barriers per vote: writers and readers of one slot never overlap, and the other slot is cleared while
// nobody can touch it.
inline int __syncthreads_or(int predicate) {
    using namespace dglm_emu;
    int s = current->votes++ & 1;
    if (predicate) block->vote[s] = 1;
    arrive(-1);
    int r = block->vote[s];
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) block->vote[s ^ 1] = 0;
    arrive(-1);
    return r;
}

// Fibers never run concurrently: the atomics are plain read-modify-writes. The race check (device/racecheck.cpp,
// which defines dglm_race_atomic) sees them as atomic accesses, not as a plain read and write: atomics of
// different threads on one address do not race with each other, only with plain accesses.
extern "C" __attribute__((weak)) void dglm_race_atomic(const void* p, unsigned long bytes);
#define DGLM_EMU_ATOMIC template <typename T> __attribute__((no_sanitize_thread, noinline)) T
#define DGLM_EMU_ATOMIC_SEEN(p) if (dglm_race_atomic) dglm_race_atomic(p, sizeof(T))
DGLM_EMU_ATOMIC atomicCAS(T* p, T compare, T value) { DGLM_EMU_ATOMIC_SEEN(p); T old = *p; if (old == compare) *p = value; return old; }
DGLM_EMU_ATOMIC atomicMin(T* p, T value) { DGLM_EMU_ATOMIC_SEEN(p); T old = *p; if (value < old) *p = value; return old; }
DGLM_EMU_ATOMIC atomicMax(T* p, T value) { DGLM_EMU_ATOMIC_SEEN(p); T old = *p; if (value > old) *p = value; return old; }
DGLM_EMU_ATOMIC atomicAdd(T* p, T value) { DGLM_EMU_ATOMIC_SEEN(p); T old = *p; *p = old + value; return old; }
#undef DGLM_EMU_ATOMIC_SEEN
#undef DGLM_EMU_ATOMIC

template <typename T, typename F>
inline T dglm_emu_exchange(T v, F source) {
    using namespace dglm_emu;
    static_assert(sizeof(T) <= sizeof(Slot));
    std::memcpy(slot(current->lane).bytes, &v, sizeof(T));
    warp_sync();
    T r;
    std::memcpy(&r, slot(source(current->lane)).bytes, sizeof(T));
    warp_sync();
    return r;
}

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int mask) { return dglm_emu_exchange(v, [&](int l) { return l ^ mask; }); }
template <typename T> inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
    return dglm_emu_exchange(v, [&](int l) { return l + (int)delta < 32 ? l + (int)delta : l; });
}
template <typename T> inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    return dglm_emu_exchange(v, [&](int l) { return l >= (int)delta ? l - (int)delta : l; });
}
template <typename T> inline T __shfl_sync(unsigned, T v, int src) { return dglm_emu_exchange(v, [&](int) { return src & 31; }); }

inline float dglm_emu_bf16(unsigned short b) { return __uint_as_float((unsigned)b << 16); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, from the PTX ISA's fragment layouts (see common.cuh).
// Sums in double and rounds once: the hardware's own order and rounding are not modelled.
inline void dglm_emu_mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    using namespace dglm_emu;
    unsigned mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    std::memcpy(slot(current->lane).bytes, mine, sizeof mine);
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
    int g = current->lane >> 2, t = current->lane & 3;
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
    if (((uintptr_t)p & 15) != 0) fail("ldmatrix row address not 16-byte aligned");
    std::memcpy(slot(current->lane).bytes, &p, sizeof p);
    warp_sync();
    int i = current->lane >> 2, j = current->lane & 3;
    for (int m = 0; m < 4; m++) {
        const unsigned short *lo, *hi;
        std::memcpy(&lo, slot(8 * m + 2 * j).bytes, sizeof lo);
        std::memcpy(&hi, slot(8 * m + 2 * j + 1).bytes, sizeof hi);
        out[m] = (unsigned)lo[i] | ((unsigned)hi[i] << 16);
    }
    warp_sync();
}
