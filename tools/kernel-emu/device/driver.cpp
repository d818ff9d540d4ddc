// The emulated device's libcuda.so.1: the driver API calls Backends/Cuda/Native/CudaDriver.cs binds, over host
// memory, with every kernel of kernels/*.cu compiled in (cuda_host.h) and run by cuLaunchKernel.
//
// It reports one sm_80 device. Device pointers are host pointers; work runs synchronously at launch, so stream
// order holds trivially. Checks a real device would make become errors with the driver's status codes: launches
// with a zero grid, more than 1024 threads, or more than 48 KiB of dynamic shared memory without the function's
// opt-in (cuFuncSetAttribute) fail with CUDA_ERROR_INVALID_VALUE, more threads than the kernel's __launch_bounds__
// with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES; a kernel that deadlocks fails with
// CUDA_ERROR_LAUNCH_FAILED. Allocations carry guard bands checked after every launch and at cuMemFree, so a kernel
// writing past its buffer fails with CUDA_ERROR_ILLEGAL_ADDRESS naming the kernel. New memory is filled with 0xff
// bytes (NaN) as uninitialised device memory would hold garbage. Messages go to stderr.
#include "racecheck.h"
#include "registry.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace {

enum {
    SUCCESS = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, NO_DEVICE = 100, INVALID_DEVICE = 101,
    INVALID_HANDLE = 400, NOT_FOUND = 500, ILLEGAL_ADDRESS = 700, LAUNCH_OUT_OF_RESOURCES = 701, LAUNCH_FAILED = 719,
};

constexpr size_t Guard = 256;                  // bytes of guard band on each side of an allocation
constexpr unsigned char GuardByte = 0xa5;
constexpr long long TotalMemory = 16LL << 30;   // what cuMemGetInfo reports
constexpr int SharedDefault = 48 * 1024, SharedOptInMax = 163 * 1024; // sm_80's per-block limits

struct Allocation {
    unsigned char* base; // the guard band before the user's bytes
    size_t bytes;
};

struct Function {
    std::string name;
    dglm_emu::Invoker run;
    int maxThreads; // its __launch_bounds__ (the compiler planned its registers for no more)
    int maxDynamicShared = SharedDefault;
};

std::recursive_mutex lock;
bool initialised = false;
std::map<uintptr_t, Allocation> allocations; // keyed by the user pointer
long long allocated = 0;
std::map<std::string, Function*> functions;
int handles = 0;

// DGLM_EMU_TRACE=FILE appends one line per launch, copy and memset (cublas.cpp adds its GEMMs): what a pass
// costs in launches and bytes, e.g. to audit a training or decoding step (tools/kernel-emu/trace-summary.py).
std::FILE* traceFile() {
    static std::FILE* f = [] { const char* p = std::getenv("DGLM_EMU_TRACE"); return p && *p ? std::fopen(p, "a") : nullptr; }();
    return f;
}

void trace(const char* what, size_t bytes) {
    if (std::FILE* t = traceFile()) { std::fprintf(t, "%s %zu\n", what, bytes); std::fflush(t); } // in order with cublas.cpp's lines
}

const char* statusName(int s) {
    switch (s) {
        case SUCCESS: return "CUDA_SUCCESS";
        case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        default: return nullptr;
    }
}

const char* statusText(int s) {
    switch (s) {
        case SUCCESS: return "no error";
        case INVALID_VALUE: return "invalid argument";
        case OUT_OF_MEMORY: return "out of memory";
        case NOT_INITIALIZED: return "initialization error";
        case NO_DEVICE: return "no CUDA-capable device is detected";
        case INVALID_DEVICE: return "invalid device ordinal";
        case INVALID_HANDLE: return "invalid resource handle";
        case NOT_FOUND: return "named symbol not found";
        case ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
        case LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
        case LAUNCH_FAILED: return "unspecified launch failure";
        default: return nullptr;
    }
}

// The first allocation whose guard bands were overwritten, or null.
const Allocation* corrupted() {
    for (auto& [user, a] : allocations) {
        for (size_t i = 0; i < Guard; i++)
            if (a.base[i] != GuardByte || a.base[Guard + a.bytes + i] != GuardByte) return &a;
    }
    return nullptr;
}

void* fakeHandle() { return (void*)(uintptr_t)(0x1000 + 16 * ++handles); }

} // namespace

extern "C" {

int cuInit(unsigned flags) { (void)flags; initialised = true; return SUCCESS; }
int cuDriverGetVersion(int* v) { *v = 11080; return SUCCESS; } // matches the NVRTC 11.8 the tests compile with
int cuDeviceGetCount(int* n) { if (!initialised) return NOT_INITIALIZED; *n = 1; return SUCCESS; }
int cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return INVALID_DEVICE; *d = 0; return SUCCESS; }

int cuDeviceGetName(char* name, int len, int device) {
    if (device != 0) return INVALID_DEVICE;
    std::snprintf(name, (size_t)len, dglm_race::enabled() ? "DoctorGlm host emulator (sm_80, race check)" : "DoctorGlm host emulator (sm_80)");
    return SUCCESS;
}

int cuDeviceGetAttribute(int* value, int attribute, int device) {
    if (device != 0) return INVALID_DEVICE;
    switch (attribute) {
        case 75: *value = 8; break;              // compute capability major
        case 76: *value = 0; break;              // minor
        case 16: *value = 2; break;              // multiprocessors: few, so grid-stride loops take several turns
        case 38: *value = 4 << 20; break;        // L2 cache bytes
        case 8: *value = SharedDefault; break;   // shared memory per block
        case 97: *value = SharedOptInMax; break; // opt-in shared memory per block
        default: *value = 0; break;
    }
    return SUCCESS;
}

int cuDevicePrimaryCtxRetain(void** ctx, int device) { if (device != 0) return INVALID_DEVICE; *ctx = (void*)0x100; return SUCCESS; }
int cuDevicePrimaryCtxRelease_v2(int device) { return device == 0 ? SUCCESS : INVALID_DEVICE; }
int cuCtxSetCurrent(void* ctx) { (void)ctx; return SUCCESS; }
int cuCtxSynchronize() { return SUCCESS; }

int cuMemAlloc_v2(unsigned long long* dptr, size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(lock);
    if (bytes == 0) return INVALID_VALUE;
    if (allocated + (long long)bytes > TotalMemory) return OUT_OF_MEMORY;
    auto* base = (unsigned char*)std::aligned_alloc(256, (Guard * 2 + bytes + 255) / 256 * 256);
    if (!base) return OUT_OF_MEMORY;
    std::memset(base, GuardByte, Guard);
    std::memset(base + Guard, 0xff, bytes);
    std::memset(base + Guard + bytes, GuardByte, Guard);
    uintptr_t user = (uintptr_t)(base + Guard);
    allocations[user] = {base, bytes};
    dglm_race::track(user, bytes);
    allocated += (long long)bytes;
    *dptr = user;
    return SUCCESS;
}

int cuMemFree_v2(unsigned long long dptr) {
    std::lock_guard<std::recursive_mutex> g(lock);
    auto it = allocations.find((uintptr_t)dptr);
    if (it == allocations.end()) return INVALID_VALUE;
    Allocation a = it->second;
    for (size_t i = 0; i < Guard; i++)
        if (a.base[i] != GuardByte || a.base[Guard + a.bytes + i] != GuardByte) {
            std::fprintf(stderr, "emulated device: the %zu-byte allocation at %p was written outside its bounds\n", a.bytes, (void*)dptr);
            return ILLEGAL_ADDRESS;
        }
    allocations.erase(it);
    dglm_race::untrack((uintptr_t)dptr);
    allocated -= (long long)a.bytes;
    std::free(a.base);
    return SUCCESS;
}

int cuMemGetInfo_v2(size_t* free, size_t* total) {
    std::lock_guard<std::recursive_mutex> g(lock);
    *total = (size_t)TotalMemory;
    *free = (size_t)(TotalMemory - allocated);
    return SUCCESS;
}

int cuMemcpyHtoD_v2(unsigned long long dst, const void* src, size_t n) { trace("copy HtoD", n); std::memcpy((void*)dst, src, n); return SUCCESS; }
int cuMemcpyDtoH_v2(void* dst, unsigned long long src, size_t n) { trace("copy DtoH", n); std::memcpy(dst, (const void*)src, n); return SUCCESS; }
int cuMemcpyDtoD_v2(unsigned long long dst, unsigned long long src, size_t n) { trace("copy DtoD", n); std::memmove((void*)dst, (const void*)src, n); return SUCCESS; }
int cuMemcpyHtoDAsync_v2(unsigned long long dst, const void* src, size_t n, void*) { return cuMemcpyHtoD_v2(dst, src, n); }
int cuMemcpyDtoHAsync_v2(void* dst, unsigned long long src, size_t n, void*) { return cuMemcpyDtoH_v2(dst, src, n); }
int cuMemcpyDtoDAsync_v2(unsigned long long dst, unsigned long long src, size_t n, void*) { return cuMemcpyDtoD_v2(dst, src, n); }
int cuMemsetD8Async(unsigned long long dst, unsigned char v, size_t n, void*) { trace("memset", n); std::memset((void*)dst, v, n); return SUCCESS; }
int cuMemsetD32Async(unsigned long long dst, unsigned v, size_t n, void*) {
    trace("memset", 4 * n);
    auto* p = (unsigned*)dst;
    for (size_t i = 0; i < n; i++) p[i] = v;
    return SUCCESS;
}

int cuModuleLoadData(void** module, const void* image) {
    if (!image) return INVALID_VALUE;
    *module = fakeHandle(); // the CUBIN NVRTC built is not executed: the same source is compiled into this library
    return SUCCESS;
}

int cuModuleGetFunction(void** function, void* module, const char* name) {
    std::lock_guard<std::recursive_mutex> g(lock);
    (void)module;
    auto& table = dglm_emu::kernels();
    auto it = table.find(name);
    if (it == table.end()) return NOT_FOUND;
    auto& f = functions[name];
    if (!f) f = new Function{name, it->second.run, it->second.maxThreads};
    *function = f;
    return SUCCESS;
}

int cuModuleUnload(void* module) { (void)module; return SUCCESS; }

int cuFuncSetAttribute(void* function, int attribute, int value) {
    if (!function) return INVALID_HANDLE;
    if (attribute == 8) { // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > SharedOptInMax) return INVALID_VALUE;
        ((Function*)function)->maxDynamicShared = value;
    }
    return SUCCESS;
}

int cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shared, void* stream, void** args, void** extra) {
    std::lock_guard<std::recursive_mutex> g(lock);
    (void)stream;
    auto* f = (Function*)function;
    if (!f) return INVALID_HANDLE;
    if (extra) return INVALID_VALUE;
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || bx * by * bz == 0 || bx * by * bz > 1024) {
        std::fprintf(stderr, "emulated device: %s launched with grid (%u,%u,%u), block (%u,%u,%u)\n", f->name.c_str(), gx, gy, gz, bx, by, bz);
        return INVALID_VALUE;
    }
    if ((int)(bx * by * bz) > f->maxThreads) {
        // What a GPU answers when a block has more threads than the kernel's __launch_bounds__ promised.
        std::fprintf(stderr, "emulated device: %s launched with %u threads a block; its __launch_bounds__ allow %d\n",
                     f->name.c_str(), bx * by * bz, f->maxThreads);
        return LAUNCH_OUT_OF_RESOURCES;
    }
    if ((int)shared > f->maxDynamicShared) {
        std::fprintf(stderr, "emulated device: %s asks for %u bytes of dynamic shared memory; its limit is %d (cuFuncSetAttribute raises it)\n",
                     f->name.c_str(), shared, f->maxDynamicShared);
        return INVALID_VALUE;
    }
    if (std::FILE* t = traceFile())
        std::fprintf(t, "launch %s %u %u %u %u %u %u %u\n", f->name.c_str(), gx, gy, gz, bx, by, bz, shared), std::fflush(t);
    std::function<void()> body = [&] { f->run(args); };
    if (!dglm_emu::launch({gx, gy, gz}, {bx, by, bz}, shared, body)) {
        std::fprintf(stderr, "emulated device: %s failed: %s\n", f->name.c_str(), dglm_emu::error.c_str());
        return LAUNCH_FAILED;
    }
    if (const Allocation* a = corrupted()) {
        std::fprintf(stderr, "emulated device: %s wrote outside the %zu-byte allocation at %p\n", f->name.c_str(), a->bytes, (void*)(a->base + Guard));
        return ILLEGAL_ADDRESS;
    }
    return SUCCESS;
}

int cuStreamCreate(void** stream, unsigned flags) { (void)flags; *stream = fakeHandle(); return SUCCESS; }
int cuStreamDestroy_v2(void* stream) { (void)stream; return SUCCESS; }
int cuStreamSynchronize(void* stream) { (void)stream; return SUCCESS; }

int cuEventCreate(void** ev, unsigned flags) {
    (void)flags;
    *ev = new std::chrono::steady_clock::time_point();
    return SUCCESS;
}
int cuEventRecord(void* ev, void* stream) { (void)stream; *(std::chrono::steady_clock::time_point*)ev = std::chrono::steady_clock::now(); return SUCCESS; }
int cuEventSynchronize(void* ev) { (void)ev; return SUCCESS; }
int cuEventElapsedTime(float* ms, void* start, void* end) {
    auto d = *(std::chrono::steady_clock::time_point*)end - *(std::chrono::steady_clock::time_point*)start;
    *ms = std::chrono::duration<float, std::milli>(d).count();
    return SUCCESS;
}
int cuEventDestroy_v2(void* ev) { delete (std::chrono::steady_clock::time_point*)ev; return SUCCESS; }

int cuGetErrorName(int error, const char** name) {
    *name = statusName(error);
    return *name ? SUCCESS : INVALID_VALUE;
}

int cuGetErrorString(int error, const char** text) {
    *text = statusText(error);
    return *text ? SUCCESS : INVALID_VALUE;
}

} // extern "C"
