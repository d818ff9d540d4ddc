// The emulated device's race check (racecheck.cpp): what the driver tells it, and what it reports.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dglm_race {

// Whether the kernels were built with the race check's instrumentation (build.sh --racecheck).
bool enabled();

// Device memory the kernels may share: cuMemAlloc_v2 registers each allocation, cuMemFree_v2 forgets it.
void track(uintptr_t user, size_t bytes);
void untrack(uintptr_t user);

} // namespace dglm_race
