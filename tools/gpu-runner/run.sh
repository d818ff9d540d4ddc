#!/usr/bin/env bash
# Runs the published tests on the GPU machine. Kernel binaries are cached next to the executable, and a
# summary plus a TRX report go to ./results. Extra arguments go to the test runner (xunit v3 console options, e.g. -namespace DoctorGlm.Engine.Tests.Cuda).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export DOCTORGLM_KERNEL_CACHE="${DOCTORGLM_KERNEL_CACHE:-$HERE/kernel-cache}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cd "$HERE"
mkdir -p "$HERE/results"
./DoctorGlm.Engine.Tests -trx "$HERE/results/tests.trx" "$@"
