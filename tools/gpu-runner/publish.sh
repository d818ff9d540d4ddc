#!/usr/bin/env bash
# Builds the test project into one self-contained linux-x64 executable (xunit v3 test projects are programs),
# so the GPU tests run on a machine that has an NVIDIA driver but no .NET. Output: $OUT (default out/gpu-tests).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/gpu-tests}"
dotnet publish "$ROOT/tests/DoctorGlm.Engine.Tests/DoctorGlm.Engine.Tests.csproj" \
  -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=false \
  -o "$OUT"
cp "$(dirname "$0")/run.sh" "$OUT/run.sh"
chmod +x "$OUT/run.sh" "$OUT/DoctorGlm.Engine.Tests"
echo "published to $OUT: copy that folder to the GPU machine and run ./run.sh there"
