// Kernel registry of the emulated device: every extern "C" kernel of kernels/*.cu, by name, with an invoker that
// unpacks cuLaunchKernel's `void** kernelParams` by the kernel's own parameter types (as the GPU does: each
// pointer addresses one argument's bytes), and the most threads a block of it may have: its __launch_bounds__, or
// 1024 without one.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

namespace dglm_emu {

using Invoker = std::function<void(void**)>;

struct Kernel {
    Invoker run;
    int maxThreads = 1024;
};

inline std::map<std::string, Kernel>& kernels() {
    static std::map<std::string, Kernel> table;
    return table;
}

template <typename... A, size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
Invoker invoker(void (*f)(A...)) {
    return [f](void** args) { call_with(f, args, std::index_sequence_for<A...>{}); };
}

// __launch_bounds__(maxThreadsPerBlock[, minBlocksPerMultiprocessor[, maxBlocksPerCluster]]): the first is the limit.
constexpr int launch_bound(int maxThreads, int = 0, int = 0) { return maxThreads; }

struct Registrar {
    Registrar(std::initializer_list<std::pair<const char*, Kernel>> entries) {
        for (auto& e : entries) kernels()[e.first] = e.second;
    }
};

} // namespace dglm_emu
