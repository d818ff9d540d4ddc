#!/usr/bin/env bash
# Compiles a kernel test under the host emulator (cuda_host.h) with g++ and runs it. No GPU needed.
#   tools/kernel-emu/run.sh [case-filter]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${TMPDIR:-/tmp}/dglm-kernel-emu
mkdir -p "$out"
g++ -std=c++20 -O2 -DDGLM_HOST_EMULATION -include tools/kernel-emu/cuda_host.h \
    -Wall -Wno-unused-function -Wno-unknown-pragmas \
    -o "$out/attention_mma_test" tools/kernel-emu/attention_mma_test.cpp
# Threads in order between barriers, then in reverse order (a missing barrier shows in one of the two).
echo "-- thread order: forward"
DGLM_EMU_ORDER=forward "$out/attention_mma_test" "$@"
echo "-- thread order: reverse"
DGLM_EMU_ORDER=reverse "$out/attention_mma_test" "$@"
