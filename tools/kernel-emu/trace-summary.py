#!/usr/bin/env python3
"""Summarises a DGLM_EMU_TRACE file of the emulated CUDA device: launches, GEMMs, copies and memsets per phase.

A program run against the emulated device (DOCTORGLM_CUDA_PATH=OUT, tools/kernel-emu/device/build.sh OUT) with
DGLM_EMU_TRACE=FILE appends one line per kernel launch ("launch NAME gx gy gz bx by bz shared"), cuBLAS GEMM
("gemm m n k batch transA transB typeA typeB typeC", cuBLAS type codes: 0 fp32, 2 fp16, 14 bf16), copy
("copy HtoD|DtoH|DtoD BYTES") and memset ("memset BYTES"). The program may append its own "### PHASE" lines between
steps (after synchronising) to split the trace; this prints each phase's counts, most frequent first.

    trace-summary.py FILE [PHASE ...]      (phases: the names after "### "; default: all)

Why: a decoding step on a GPU launches every one of these per layer and token, and a one-token kernel costs a few
microseconds however little it does, so the count is what to cut (README: "launches per layer").
"""
import collections
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    phases: "collections.OrderedDict[str, collections.Counter]" = collections.OrderedDict()
    phase = "(before any ### line)"
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "###":
                phase = line[4:].strip()
                phases.setdefault(phase, collections.Counter())
                continue
            counts = phases.setdefault(phase, collections.Counter())
            if words[0] == "launch":
                counts["launch " + words[1]] += 1
            elif words[0] == "gemm":
                counts[f"gemm (types {words[7]}/{words[8]} -> {words[9]})"] += 1
            else:
                counts[" ".join(words[:2])] += 1
    wanted = sys.argv[2:] or list(phases)
    for name in wanted:
        if name not in phases:
            print(f"trace-summary.py: no phase '{name}' in {sys.argv[1]} (phases: {', '.join(phases)})", file=sys.stderr)
            return 2
        counts = phases[name]
        launches = sum(v for k, v in counts.items() if k.startswith("launch "))
        gemms = sum(v for k, v in counts.items() if k.startswith("gemm "))
        print(f"== {name}: {launches} kernel launches, {gemms} GEMMs, {sum(counts.values()) - launches - gemms} copies/memsets")
        for key, value in counts.most_common():
            print(f"  {value:5d}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
