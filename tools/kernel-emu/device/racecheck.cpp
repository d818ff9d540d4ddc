// The emulated device's race check: every load and store of a kernel, on shared or device memory, is checked
// against the earlier accesses of the same launch, and two accesses of different threads to one byte, at least one
// a write, with no barrier between them, fail the launch naming both threads and the memory. That is a data race on
// a GPU (what compute-sanitizer's racecheck reports), whatever order the emulator happened to run the threads in.
//
// How: build.sh --racecheck compiles the kernels with GCC's -fsanitize=thread instrumentation, which calls
// __tsan_readN / __tsan_writeN before each memory access; this file defines those hooks itself (the ThreadSanitizer
// runtime is not linked, so it works inside any host process, .NET's included). Without --racecheck nothing calls
// them.
//
// Ordering, as CUDA defines it: within a block, a __syncthreads orders everything before it against everything
// after it. Nothing else does: a shuffle, an mma or an ldmatrix synchronises a warp's lanes but does not order their
// memory accesses (CUDA promises that only for __syncwarp, which no kernel uses), so lanes of one warp that share
// memory need a block barrier too. Different blocks of one launch are never ordered, so they may share read-only
// data but not a byte one of them writes. Atomics (atomicAdd, ...) of different threads do not race with each
// other, only with plain accesses.
// Launches are ordered with each other (one stream).
//
// The same hooks check alignment: an access the compiler emitted as naturally aligned (__tsan_read4 for a float, not
// __tsan_unaligned_read4) is one transaction on a GPU, which faults when its address is not a multiple of its size.
#include "racecheck.h"

#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <unordered_map>

namespace {

bool instrumented = false;

struct Access {
    unsigned stamp = 0;  // the launch's serial (device memory) or the block's (shared memory); 0: none
    unsigned block = 0;  // the block's serial
    unsigned tid = 0;    // thread index within the block
    unsigned epoch = 0;  // block barriers completed before the access
    bool atomic = false; // an atomic read-modify-write (recorded as the write)
};

// The last write and the last read of one byte. Several concurrent readers are kept as one (the first) plus how
// many warps they span: 0 = that reader alone, 1 = readers of its warp, 2 = readers of several warps.
struct Cell {
    Access write, read;
    unsigned readers = 0;
    unsigned writers = 0; // likewise for concurrent atomics of several threads (plain writes of two threads race)
};

constexpr int PageBits = 12;
constexpr size_t PageBytes = size_t(1) << PageBits;
constexpr size_t MaxPages = 256; // shadow pages kept (each 4096 cells, 192 KiB) before they are dropped between launches

std::unordered_map<uintptr_t, std::unique_ptr<Cell[]>> pages;
uintptr_t lastPage = ~uintptr_t(0);
Cell* lastCells = nullptr;
unsigned pagesLaunch = 0;

std::map<uintptr_t, size_t> device; // user pointer → bytes
uintptr_t deviceLo = 0, deviceHi = 0; // the allocation found last

enum class Kind { None, Shared, StaticShared, Device };

Kind classify(uintptr_t a) {
    auto* b = dglm_emu::block;
    auto* f = dglm_emu::current;
    if (!b || !f) return Kind::None;
    if (a >= (uintptr_t)f->stackLo && a < (uintptr_t)f->stackHi) return Kind::None; // the thread's own locals
    // The emulator's own state that every thread reads (threadIdx, blockIdx, blockDim, ...): not kernel memory.
    if (a >= (uintptr_t)b->fibers.data() && a < (uintptr_t)(b->fibers.data() + b->fibers.size())) return Kind::None;
    if (a >= (uintptr_t)b && a < (uintptr_t)(b + 1)) return Kind::None;
    if (a == (uintptr_t)&dglm_emu::current || a == (uintptr_t)&dglm_emu::block) return Kind::None;
    if ((a >= (uintptr_t)&dglm_emu::blockDim_ && a < (uintptr_t)(&dglm_emu::blockDim_ + 1)) ||
        (a >= (uintptr_t)&dglm_emu::gridDim_ && a < (uintptr_t)(&dglm_emu::gridDim_ + 1))) return Kind::None;
    uintptr_t s = (uintptr_t)b->shared.data();
    if (a >= s && a < s + b->shared.size()) return Kind::Shared;
    if (a >= (uintptr_t)__start_dglm_shared && a < (uintptr_t)__stop_dglm_shared) return Kind::StaticShared;
    if (a >= deviceLo && a < deviceHi) return Kind::Device;
    auto it = device.upper_bound(a);
    if (it == device.begin()) return Kind::None;
    --it;
    if (a >= it->first + it->second) return Kind::None;
    deviceLo = it->first;
    deviceHi = it->first + it->second;
    return Kind::Device;
}

Cell& cell(uintptr_t a) {
    uintptr_t page = a >> PageBits;
    if (page != lastPage) {
        if (pagesLaunch != dglm_emu::launchSerial) {
            // Everything recorded before this launch is stale (its stamps are older), so the shadow may be dropped.
            pagesLaunch = dglm_emu::launchSerial;
            if (pages.size() > MaxPages) pages.clear();
        }
        auto& p = pages[page];
        if (!p) p = std::make_unique<Cell[]>(PageBytes);
        lastPage = page;
        lastCells = p.get();
    }
    return lastCells[a & (PageBytes - 1)];
}

unsigned warpOf(unsigned tid) { return tid / 32; }

// Whether access x (recorded earlier, by one thread when readers = 0, else by the readers it stands for) may run at
// the same time as `me`, a different thread's access of the same block or of another block.
bool concurrent(const Access& x, unsigned readers, const Access& me) {
    if (x.block != me.block) return true;
    if (readers == 0 && x.tid == me.tid) return false;
    if (x.epoch != me.epoch) return false;
    return true;
}

// "name + offset" of a static shared byte, from static-shared.txt (build.sh writes it beside this library).
std::string staticShared(size_t offset) {
    std::string where = "static shared memory, byte " + std::to_string(offset);
    Dl_info info;
    if (!dladdr((void*)&staticShared, &info) || !info.dli_fname) return where;
    std::string path = info.dli_fname;
    path = path.substr(0, path.find_last_of('/') + 1) + "static-shared.txt";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return where;
    size_t at;
    char name[512];
    std::string best;
    size_t bestAt = 0;
    while (std::fscanf(f, "%zu %511[^\n]", &at, name) == 2)
        if (at <= offset) { best = name; bestAt = at; }
    std::fclose(f);
    return best.empty() ? where : "static shared memory, " + best + " + byte " + std::to_string(offset - bestAt);
}

std::string dim(unsigned linear, dglm_dim3 d) {
    return "(" + std::to_string(linear % d.x) + "," + std::to_string(linear / d.x % d.y) + "," + std::to_string(linear / (d.x * d.y)) + ")";
}

std::string who(const Access& a) {
    unsigned linear = a.block - dglm_emu::launchSerial - 1; // blocks are numbered in launch order after their launch
    return "thread " + dim(a.tid, dglm_emu::blockDim_) + " of block " + dim(linear, dglm_emu::gridDim_);
}

// Where a device address lies ("the N-byte allocation at P, byte O"), for messages.
std::string describe(uintptr_t a) {
    auto it = device.upper_bound(a);
    if (it != device.begin()) {
        --it;
        if (a < it->first + it->second) {
            char text[96];
            std::snprintf(text, sizeof text, "the %zu-byte allocation at %p, byte %zu", it->second, (void*)it->first, (size_t)(a - it->first));
            return text;
        }
    }
    char text[32];
    std::snprintf(text, sizeof text, "%p", (void*)a);
    return text;
}

// Where a byte of kernel memory lies, for messages.
std::string where(uintptr_t a, Kind k) {
    return k == Kind::Shared ? "dynamic shared memory, byte " + std::to_string(a - (uintptr_t)dglm_emu::block->shared.data())
         : k == Kind::StaticShared ? staticShared(a - (uintptr_t)__start_dglm_shared)
                                   : describe(a);
}

void report(const char* what, const Access& earlier, unsigned readers, const Access& me, uintptr_t a, Kind k) {
    std::string first = who(earlier) + (readers == 1 ? " (and other threads of its warp)" : readers == 2 ? " (and threads of other warps)" : "");
    std::string barrier = earlier.block == me.block ? "with no barrier between them" : "from another block of the same launch";
    dglm_emu::fail(std::string("data race (") + what + ") on " + where(a, k) + ": " + who(me) + " after " + first + ", " + barrier);
}

void check(uintptr_t a, const Access& me, bool write, Kind k) {
    Cell& c = cell(a);
    bool live = c.write.stamp == me.stamp;
    if (live && !(c.write.atomic && me.atomic) && concurrent(c.write, c.writers, me)) {
        const char* what = !write ? (c.write.atomic ? "read after atomic" : "read after write")
                         : c.write.atomic ? "write after atomic" : me.atomic ? "atomic after write" : "write after write";
        report(what, c.write, c.writers, me, a, k);
        return;
    }
    if (write) {
        if (c.read.stamp == me.stamp && concurrent(c.read, c.readers, me)) {
            report(me.atomic ? "atomic after read" : "write after read", c.read, c.readers, me, a, k);
            return;
        }
        if (me.atomic && live && c.write.atomic && concurrent(c.write, c.writers, me)) {
            // Concurrent atomics of several threads: one record stands for them all (as for readers).
            if (!(c.writers == 0 && c.write.tid == me.tid && c.write.block == me.block)) {
                unsigned span = c.write.block == me.block && warpOf(c.write.tid) == warpOf(me.tid) ? 1u : 2u;
                if (span > c.writers) c.writers = span;
            }
            return;
        }
        c.write = me;
        c.writers = 0;
        c.read.stamp = 0;
        c.readers = 0;
        return;
    }
    if (c.read.stamp != me.stamp || !concurrent(c.read, c.readers, me)) {
        c.read = me; // the earlier reads, if any, are ordered before this one: it stands for them all
        c.readers = 0;
    } else if (!(c.readers == 0 && c.read.tid == me.tid && c.read.block == me.block)) {
        unsigned span = c.read.block == me.block && warpOf(c.read.tid) == warpOf(me.tid) ? 1u : 2u;
        if (span > c.readers) c.readers = span;
    }
}

// `aligned`: the compiler emitted the access as naturally aligned (an n-byte load or store of a type whose alignment
// is n: a float, a u32, a float4). A GPU executes it as one n-byte transaction, which must be n-byte aligned, and
// faults otherwise (CUDA_ERROR_MISALIGNED_ADDRESS, which ends the context); x86 does not care, so it is checked here.
void access(const void* p, size_t n, bool write, bool atomic = false, bool aligned = false) {
    if (!dglm_emu::error.empty()) return; // the launch fails already; its first problem is the one to report
    uintptr_t a = (uintptr_t)p;
    Kind k = classify(a);
    if (k == Kind::None) return;
    auto* b = dglm_emu::block;
    auto* f = dglm_emu::current;
    Access me{k == Kind::Device ? dglm_emu::launchSerial : b->serial, b->serial, (unsigned)f->tid, b->epoch, atomic};
    if (aligned && (a & (n - 1)) != 0) {
        dglm_emu::fail("misaligned address: " + who(me) + " makes a " + std::to_string(n) + "-byte " + (write ? "write" : "read") +
                       " at " + where(a, k) + ", which is not " + std::to_string(n) + "-byte aligned (a GPU faults here)");
        return;
    }
    for (size_t i = 0; i < n; i++) check(a + i, me, write, k);
}

} // namespace

namespace dglm_race {

bool enabled() { return instrumented; }

void track(uintptr_t user, size_t bytes) { device[user] = bytes; }

void untrack(uintptr_t user) {
    device.erase(user);
    deviceLo = deviceHi = 0;
}

} // namespace dglm_race

// The instrumentation's entry points (GCC's -fsanitize=thread ABI). Function entry/exit is not instrumented
// (build.sh passes --param tsan-instrument-func-entry-exit=0); the others report to access().
extern "C" {
void __tsan_init() { instrumented = true; }
// cuda_host.h's atomics report here (they are not instrumented themselves).
void dglm_race_atomic(const void* p, unsigned long bytes) {
    if (instrumented) access(p, bytes, true, true);
}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
#define DGLM_RACE_HOOKS(n)                                                      \
    void __tsan_read##n(void* p) { access(p, n, false, false, true); }        \
    void __tsan_write##n(void* p) { access(p, n, true, false, true); }        \
    void __tsan_unaligned_read##n(void* p) { access(p, n, false); }           \
    void __tsan_unaligned_write##n(void* p) { access(p, n, true); }
DGLM_RACE_HOOKS(1)
DGLM_RACE_HOOKS(2)
DGLM_RACE_HOOKS(4)
DGLM_RACE_HOOKS(8)
DGLM_RACE_HOOKS(16)
#undef DGLM_RACE_HOOKS
void __tsan_read_range(void* p, unsigned long n) { access(p, n, false); }
void __tsan_write_range(void* p, unsigned long n) { access(p, n, true); }

// Atomics the instrumented code makes outside the kernels (the C++ library's, e.g. a static's guard): done as the
// builtins would, unchecked.
unsigned char __tsan_atomic8_load(const volatile unsigned char* a, int order) { return __atomic_load_n(a, order); }
}
