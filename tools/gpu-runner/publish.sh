#!/usr/bin/env bash
# Builds the test project (xunit v3 test projects are programs) into one self-contained, compressed linux-x64
# executable of about 45 MB, so the GPU tests run on a machine that has an NVIDIA driver but no .NET.
# IncludeAllContentForSelfExtract makes the bundle extract its assemblies and Fixtures/ to a folder at start-up,
# which xunit v3 needs (it loads the test assembly from a path). Output: $OUT (default out/gpu-tests).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/gpu-tests}"
dotnet publish "$ROOT/tests/DoctorGlm.Engine.Tests/DoctorGlm.Engine.Tests.csproj" \
  -c Release -r linux-x64 --self-contained \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true \
  -p:IncludeAllContentForSelfExtract=true -p:InvariantGlobalization=true \
  -o "$OUT"
rm -f "$OUT"/*.pdb
cp "$(dirname "$0")/run.sh" "$OUT/run.sh"
chmod +x "$OUT/run.sh" "$OUT/DoctorGlm.Engine.Tests"
du -sh "$OUT"
echo "published to $OUT: carry that folder to the GPU machine and run ./run.sh there"
