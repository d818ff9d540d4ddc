#!/usr/bin/python3
"""Greedy-generation fixtures for DoctorGlm.Engine's KV-cache decoding (tiny random ChatGLM).

    /usr/bin/python3 tools/reference/make_generation_fixtures.py [--out DIR]

Reads tests/DoctorGlm.Engine.Tests/Fixtures/model/{config.json, weights.safetensors, lora_peft.safetensors,
ptuning.safetensors} (written by make_model_fixtures.py) and writes generation.safetensors next to them.

The oracle has no KV cache: every step re-runs the *whole* sequence through chatglm_reference.forward with the
full-sequence masks and position ids of spec §4.1 (generated tokens: pos = mask_pos, blk = t − ctx + 1, causal),
in float64, and takes the arg-max of the last position (torch.argmax: first index on ties). The C# side decodes
incrementally with its KV cache (§4.2), so agreement checks the cache, the incremental positions and the
"prefix = initial past" path against an independent implementation.

The tiny model's tied head makes plain greedy decoding repeat the last input token, so every case decodes with
repetition penalty θ = 10 (DoctorGLM's gradio setting; HF: s/θ if s ≥ 0 else s·θ on every id so far), which gives
varied continuations; one plain greedy case is kept as well. Cases (ids used directly: random weights, V = 200):
  {case}.prompt         prompt ids ending in [gMASK] <sop> (prompt2 has [gMASK] inside the context: mask_pos 1, ctx 4)
  {case}.greedy         the continuation (up to NEW tokens, cut after eos if it comes)
  {case}.logits         [n, V] raw last-position logits of every step (before the penalty), F32
  cases: p0, p1, p2 (base), turn2 (p0's context + its answer + a new query + [gMASK] <sop>, re-encoded as §4.2
  requires), lora0, lora1 (p0, p1 with lora_peft's adapter, PEFT form, scaling alpha/r), ptuning0, ptuning1 (p0,
  p1 with ptuning's prefix, pre_seq_len 3, no projection, as the initial past), plain0 (p0 without the penalty).
The smallest top-1/top-2 gap of the penalised scores over all steps is stored in the metadata (min_gap).
"""
import argparse
import json
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chatglm_reference as ref  # noqa: E402
import safetensors_io  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_DIR = os.path.join(REPO_ROOT, "tests", "DoctorGlm.Engine.Tests", "Fixtures", "model")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

NEW = 12
PENALTY = 10.0


def load_tensors(path):
    arrays, meta = safetensors_io.load(path)
    return OrderedDict((k, torch.from_numpy(v).double()) for k, v in arrays.items()), meta


def greedy(w, cfg, prompt, new, lora=None, prefix=None, penalty=1.0, record_logits=False):
    seq = list(prompt)
    out, step_logits, gaps = [], [], []
    while len(out) < new:
        ids, pos, mask, pads = ref.build_inputs([seq], cfg)
        assert pads == [0]
        with torch.no_grad():
            logits = ref.forward(w, cfg, ids, pos, mask, lora=lora, prefix=prefix)[0, -1].clone()
        if record_logits:
            step_logits.append(logits.clone())
        if penalty != 1.0:
            for t in set(seq):
                s = logits[t]
                logits[t] = s * penalty if s < 0 else s / penalty
        top2 = torch.topk(logits, 2).values
        gaps.append(float(top2[0] - top2[1]))
        tok = int(torch.argmax(logits))
        seq.append(tok)
        out.append(tok)
        if tok == cfg["eos_token_id"]:
            break
    return out, step_logits, min(gaps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=DEFAULT_DIR, help="folder with the model fixtures (read) and generation.safetensors (written)")
    args = ap.parse_args()
    with open(os.path.join(args.dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    w, _ = load_tensors(os.path.join(args.dir, "weights.safetensors"))
    w = OrderedDict((k, v) for k, v in w.items() if k != "lm_head.weight" and not k.endswith("inv_freq"))
    GMASK, SOP = cfg["gmask_token_id"], cfg["bos_token_id"]
    prompts = [
        [11, 27, 45, 101, 7, GMASK, SOP],
        [150, 4, 60, 60, 60, 17, 88, 9, 120, 44, GMASK, SOP],
        [8, GMASK, 12, 99, SOP],
    ]
    t = OrderedDict()
    gaps = []

    def case(name, prompt, penalty=PENALTY, **kw):
        out, logits, gap = greedy(w, cfg, prompt, NEW, penalty=penalty, record_logits=True, **kw)
        gaps.append(gap)
        t[f"{name}.prompt"] = torch.tensor(prompt, dtype=torch.int32).numpy()
        t[f"{name}.greedy"] = torch.tensor(out, dtype=torch.int32).numpy()
        t[f"{name}.logits"] = torch.stack(logits).to(torch.float32).numpy()
        return out

    answers = [case(f"p{i}", p) for i, p in enumerate(prompts)]
    specials = {cfg["eos_token_id"], GMASK, SOP, cfg["mask_token_id"]}
    answer0 = [x for x in answers[0] if x not in specials]
    case("turn2", prompts[0][:-2] + answer0 + [33, 34, 35, GMASK, SOP])

    lf, lmeta = load_tensors(os.path.join(args.dir, "lora_peft.safetensors"))
    L = cfg["num_layers"]
    r, alpha = int(lmeta["r"]), float(lmeta["alpha"])
    lora = {"A": [lf[f"lora_a.{i}"] for i in range(L)], "B": [lf[f"lora_b.{i}"] for i in range(L)],
            "scaling": alpha / r, "enable_lora": None}
    for i in range(2):
        case(f"lora{i}", prompts[i], lora=lora)

    pf, pmeta = load_tensors(os.path.join(args.dir, "ptuning.safetensors"))
    assert pmeta["prefix_projection"] == "false"
    prefix = {"embedding.weight": pf["transformer.prefix_encoder.embedding.weight"]}
    for i in range(2):
        case(f"ptuning{i}", prompts[i], prefix=prefix)
    case("plain0", prompts[0], penalty=1.0)

    meta = OrderedDict([
        ("generator", "tools/reference/make_generation_fixtures.py"),
        ("torch_version", torch.__version__.split("+")[0]),
        ("new_tokens", str(NEW)),
        ("repetition_penalty", str(PENALTY)),
        ("lora_r", str(r)), ("lora_alpha", str(alpha)),
        ("min_gap", f"{min(gaps):.6g}"),
        ("cases", "p0,p1,p2,turn2,lora0,lora1,ptuning0,ptuning1,plain0"),
    ])
    safetensors_io.save(os.path.join(args.dir, "generation.safetensors"), t, meta)
    print("wrote", os.path.join(args.dir, "generation.safetensors"), "min top-1/top-2 gap", min(gaps))
    for k, v in t.items():
        if not k.endswith(".logits"):
            print(k, list(v))


if __name__ == "__main__":
    main()
