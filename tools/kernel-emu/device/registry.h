// Kernel registry of the emulated device: every extern "C" kernel of kernels/*.cu, by name, with an invoker that
// unpacks cuLaunchKernel's `void** kernelParams` by the kernel's own parameter types (as the GPU does: each
// pointer addresses one argument's bytes).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

namespace dglm_emu {

using Invoker = std::function<void(void**)>;

inline std::map<std::string, Invoker>& kernels() {
    static std::map<std::string, Invoker> table;
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

struct Registrar {
    Registrar(std::initializer_list<std::pair<const char*, Invoker>> entries) {
        for (auto& e : entries) kernels()[e.first] = e.second;
    }
};

} // namespace dglm_emu
