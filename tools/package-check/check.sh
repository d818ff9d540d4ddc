#!/usr/bin/env bash
# Packs DoctorGlm.Engine and uses the package as a user's project would: tools/package-check/PackageConsumer.csproj
# restores it from the packed .nupkg (not the source tree), builds, and runs the package readme's steps (chat, a few
# LoRA steps and their export, BLEU/ROUGE's jieba segmentation) on the Train sample's small model, then publishes it
# and looks for the dictionaries in the published folder. Ends with the plain line "package check: ok (...)" or
# "package check: FAILED ...", and the exit code says the same.
#   tools/package-check/check.sh
# The version packed is 0.0.0-check.<time>, so a copy of an earlier check in the NuGet cache is never used; the
# packages it leaves there are removed at the end.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)
version="0.0.0-check.$(date -u +%Y%m%d%H%M%S).$$"
cache="${NUGET_PACKAGES:-$HOME/.nuget/packages}/doctorglm.engine/$version"
trap 'rm -rf "$work" "$cache"' EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

echo "== package check: dotnet pack src/DoctorGlm.Engine -p:Version=$version"
# Into its own folders, so the check never touches (or is fed by) the tree's own build output.
if ! dotnet pack "$root/src/DoctorGlm.Engine" -c Release -o "$work/feed" -p:Version="$version" \
     -p:BaseOutputPath="$work/lib-bin/" >"$work/pack.log" 2>&1; then
  cat "$work/pack.log"; echo "package check: FAILED (dotnet pack)"; exit 1
fi
unzip -l "$work/feed/DoctorGlm.Engine.$version.nupkg" | awk 'NR > 3 && $4 != "" && $4 !~ /^-+$/ {print "  " $4}' | grep -v '^  \(_rels\|package/\|\[Content\)'
for f in lib/net10.0/DoctorGlm.Engine.dll lib/net10.0/DoctorGlm.Engine.xml build/DoctorGlm.Engine.targets buildTransitive/DoctorGlm.Engine.targets PACKAGE.md; do
  unzip -l "$work/feed/DoctorGlm.Engine.$version.nupkg" "$f" >/dev/null 2>&1 || { echo "package check: FAILED (the package lacks $f)"; exit 1; }
done

# The consumer project, copied out of the tree (the tree's Directory.Build.props stays out of it), with a nuget.config
# that adds the packed feed to the sources this machine already uses (the dependencies come from those).
mkdir -p "$work/consumer"
cp "$root/tools/package-check/PackageConsumer.csproj" "$root/tools/package-check/Program.cs" "$work/consumer/"
cat > "$work/consumer/Directory.Build.props" <<'PROPS'
<Project>
  <PropertyGroup>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
  </PropertyGroup>
</Project>
PROPS
cat > "$work/consumer/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="doctorglm-packed" value="$work/feed" />
  </packageSources>
</configuration>
CONFIG
echo "== package check: dotnet run (PackageConsumer against DoctorGlm.Engine $version)"
(cd "$work/consumer" && dotnet run -c Release -p:DoctorGlmVersion="$version" -- "$root/samples/Train/base" "$root/samples/Train/data/train.jsonl") 2>&1 | tee "$work/run.log"
rc=${PIPESTATUS[0]}
if grep -q '^package check: ok' "$work/run.log" && [ "$rc" = 0 ]; then
  # An application is deployed with dotnet publish: the dictionaries must travel into that folder too.
  echo "== package check: dotnet publish (PackageConsumer)"
  if ! (cd "$work/consumer" && dotnet publish -c Release -p:DoctorGlmVersion="$version" -o "$work/published") >"$work/publish.log" 2>&1; then
    cat "$work/publish.log"; echo "package check: FAILED (dotnet publish)"; exit 1
  fi
  for f in dict.txt prob_trans.json prob_emit.json; do
    [ -f "$work/published/jieba/$f" ] || { echo "package check: FAILED (the published application lacks jieba/$f)"; exit 1; }
  done
  echo "package check: ok (published with jieba/ beside it)"
  exit 0
fi
grep -q '^package check: FAILED' "$work/run.log" || echo "package check: FAILED (the consumer did not build or run; exit code $rc)"
exit 1
