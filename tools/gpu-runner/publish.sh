#!/usr/bin/env bash
# Builds what the GPU machine runs, for a machine with the NVIDIA driver but no .NET and no network:
#   out/gpu-runner/doctorglm-gpu.tar.xz  the test program and the benchmark program, published self-contained for
#                                        linux-x64 into ONE folder (they share the .NET runtime and the engine, whose
#                                        files are byte-identical: checked below), plus the PyTorch baseline script;
#                                        xz-compressed (~39 MB) so it fits the device call's 64 MiB carry limit
#                                        together with the repository (~23 MiB). Two single-file bundles would carry
#                                        the runtime twice (~45 MB + ~40 MB).
#   out/gpu-runner/run.sh                extracts the archive once (to $DOCTORGLM_RUNNER_DIR, default /tmp/doctorglm-gpu)
#                                        and runs the stages; see tools/gpu-runner/README.md.
# Not single-file on purpose: xunit v3 loads the test assembly from a path, and a plain folder needs no extraction step
# of its own. Destination: $GPU_RUNNER_DEST (default out/gpu-runner).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${GPU_RUNNER_DEST:-$ROOT/out/gpu-runner}"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
APP="$STAGE/doctorglm-gpu"

publish() { # project, folder
  dotnet publish "$ROOT/$1" -c Release -r linux-x64 --self-contained -p:InvariantGlobalization=true -o "$STAGE/$2" -nologo -v quiet
}
publish tests/DoctorGlm.Engine.Tests/DoctorGlm.Engine.Tests.csproj tests
publish benchmarks/DoctorGlm.Engine.Benchmarks/DoctorGlm.Engine.Benchmarks.csproj bench

# Merge: every file the two publishes share must be byte-identical (same runtime, same engine build), or one program
# would run with the other's copy.
mkdir -p "$APP"
cp -a "$STAGE/tests/." "$APP/"
(cd "$STAGE/bench" && find . -type f) | while read -r f; do
  if [ -e "$APP/$f" ]; then
    cmp -s "$STAGE/bench/$f" "$APP/$f" || { echo "publish.sh: $f differs between the test and the benchmark publish" >&2; exit 1; }
  else
    mkdir -p "$APP/$(dirname "$f")"
    cp -a "$STAGE/bench/$f" "$APP/$f"
  fi
done

mkdir -p "$APP/bench-scripts"
cp "$ROOT/tools/bench/torch_lora_step.py" "$ROOT/tools/reference/chatglm_reference.py" "$APP/bench-scripts/"
chmod +x "$APP/DoctorGlm.Engine.Tests" "$APP/DoctorGlm.Engine.Benchmarks"
git -C "$ROOT" rev-parse HEAD > "$APP/COMMIT" 2>/dev/null || echo unknown > "$APP/COMMIT"

mkdir -p "$DEST"
rm -f "$DEST/doctorglm-gpu.tar.xz"
XZ_OPT=-6 tar -C "$STAGE" -cJf "$DEST/doctorglm-gpu.tar.xz" doctorglm-gpu
cp "$ROOT/tools/gpu-runner/run.sh" "$DEST/run.sh"
chmod +x "$DEST/run.sh"
du -sh "$APP" "$DEST"
# The device call carries the repository's tracked files and this folder, 64 MiB at most: say how close it is.
total=$( { git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 stat -c %s); stat -c %s "$DEST"/*; } | awk '{s += $1} END {printf "%.1f", s / 1048576}')
echo "repository + $DEST: $total MiB of the device call's 64 MiB"
awk -v t="$total" 'BEGIN { exit !(t > 62) }' && echo "publish.sh: warning: $total MiB leaves under 2 MiB of the 64 MiB carry limit" >&2
echo "published to $DEST: carry that folder (device call: carry [\"${DEST#$ROOT/}\"], command \"bash ${DEST#$ROOT/}/run.sh\", timeout_s 600)"
