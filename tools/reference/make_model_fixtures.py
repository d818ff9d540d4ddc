#!/usr/bin/python3
"""Whole-model PyTorch fixtures for DoctorGlm.Engine's ChatGLM tests (tiny random model).

    /usr/bin/python3 tools/reference/make_model_fixtures.py [--out DIR]

Writes tests/DoctorGlm.Engine.Tests/Fixtures/model/ (committed; rerun only when a fixture changes, output is
byte-identical between runs):
  config.json               tiny HF-style config (2 layers, H 64, 4 heads → d 16, F 256, V 200)
  weights.safetensors       HF keys, F32, plus a tied lm_head.weight copy and per-layer rotary inv_freq (ignored on load)
  logits.safetensors        3 sequences ([gMASK] prompt, [MASK] prompt, a left-padded one): inputs and logits [B,S,V]
  train.safetensors         §5.1 training batch (right-padded) with labels, loss, and the full-fine-tune gradients
  lora_peft.safetensors     PEFT LoRA (A [r,H], B [3H,r], random non-zero B): loss and dA/dB per layer
  lora_grouped.safetensors  DoctorGLM MergedLinear enable_lora [T,F,T] (A [2r,H], B [2H,r]): loss and dA/dB
  ptuning.safetensors       P-Tuning v2 without projection: prefix embedding, loss, gradient
  ptuning_proj.safetensors  P-Tuning v2 with projection: encoder tensors, loss, gradients of all five

and the same weights as checkpoint folders saved the way torch / HF / PEFT / the Trainer save them (for
GlmModel.FromPretrained, LoadLoraAdapter and LoadPrefixEncoder; all fp32 so parity stays exact):
  hf_bin/                   config.json + pytorch_model.bin (torch.save of the state dict; lm_head.weight is the *same*
                            tensor as the embedding, so the zip holds one shared storage, as a tied HF model saves it)
  hf_bin_sharded/           2 torch.save shards + pytorch_model.bin.index.json (weight_map; metadata.total_size stale,
                            as on the hub); lm_head in the last shard, like the hub's shard 8
  hf_safetensors_sharded/   2 safetensors shards + model.safetensors.index.json; no lm_head (HF drops the tied copy
                            when saving safetensors)
  peft_adapter/             adapter_config.json as PEFT 0.3 writes it + adapter_model.bin (torch.save), keys
                            base_model.model.transformer.layers.{i}.attention.query_key_value.lora_A.weight / lora_B.weight;
                            the lora_peft tensors
  doctorglm_adapter/        deep_training adapter_config.json (spec §9.1, with this fixture's r / alpha) + adapter_model.bin
                            with keys model.transformer.transformer.layers.{i}.attention.query_key_value.lora_A / lora_B
                            (no .weight); the lora_grouped tensors, kept fp32 (DoctorGLM's are fp16)
  ptuning_checkpoint/       config.json (the model config + pre_seq_len 3, prefix_projection false, as the Trainer saves
                            it) + pytorch_model.bin with transformer.prefix_encoder.embedding.weight; the ptuning tensors
torch 1.13's torch.save writes no timestamps, no random serialization id and numbers storages in order, so the zips
are byte-identical between runs (checked by running the script twice and comparing; see tools/reference/README.md).

The model math is tools/reference/chatglm_reference.py (written from the spec). Weights are drawn in float32 and
stored as F32; everything is computed in float64 from those values and rounded once to F32 on storage.
Dropout is off (evaluation mode) so the fixtures are deterministic.
"""
import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chatglm_reference as ref  # noqa: E402
import safetensors_io  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "DoctorGlm.Engine.Tests", "Fixtures", "model")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

CONFIG = OrderedDict([
    ("architectures", ["ChatGLMModel"]),
    ("model_type", "chatglm"),
    ("vocab_size", 200),
    ("hidden_size", 64),
    ("num_layers", 2),
    ("num_attention_heads", 4),
    ("inner_hidden_size", 256),
    ("layernorm_epsilon", 1e-05),
    ("max_sequence_length", 512),
    ("position_encoding_2d", True),
    ("mask_token_id", 190),
    ("gmask_token_id", 191),
    ("bos_token_id", 192),
    ("eos_token_id", 193),
    ("pad_token_id", 3),
    ("use_cache", True),
    ("torch_dtype", "float32"),
    ("some_unknown_field", {"ignored": True}),
])

MASK, GMASK, SOP, EOP, PAD = 190, 191, 192, 193, 3

# Logits batch: a [gMASK] prompt with two answer tokens, a [MASK] (blank-infilling) prompt, and a short one that
# gets left-padded (§4.3).
LOGIT_SEQS = [
    [11, 27, 45, 101, 7, GMASK, SOP, 60, 88],
    [5, 17, MASK, 40, 22, 33, SOP, 9],
    [8, 12, 150, GMASK, SOP],
]

# Training batch (§5.1): (prompt, answer) with max_source 6, max_target 6 → S = 12.
TRAIN_PAIRS = [
    ([21, 34, 55, 89], [13, 8, 5]),
    ([144, 33, 70, 71, 72, 73, 74], [99, 98]),            # prompt truncated to 5
    ([6], [17, 18, 19, 20, 21, 22, 23]),                   # answer truncated to 4
]
MAX_SOURCE, MAX_TARGET = 6, 6


def f32_randn(gen, *shape, std=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std).to(torch.float32)


def f32_uniform(gen, *shape, bound=1.0):
    return ((torch.rand(*shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound).to(torch.float32)


def make_weights(cfg, seed=1234):
    gen = torch.Generator().manual_seed(seed)
    w = OrderedDict()
    for name, shape in ref.parameter_shapes(cfg):
        if name.endswith("word_embeddings.weight"):
            t = f32_randn(gen, *shape, std=0.3)
        elif name.endswith("layernorm.weight"):
            t = 1.0 + f32_randn(gen, *shape, std=0.1)
        elif len(shape) == 1:
            t = f32_randn(gen, *shape, std=0.1)
        else:
            t = f32_randn(gen, *shape, std=1.0 / math.sqrt(shape[1]))
        w[name] = t.to(torch.float32)
    return w


def to_f64(w, grad=False):
    out = OrderedDict()
    for k, v in w.items():
        t = v.detach().double().clone()
        t.requires_grad_(grad)
        out[k] = t
    return out


def put(tensors, name, t, kind="F32"):
    t = t.detach()
    if kind == "F32":
        a = t.to(torch.float32).contiguous().numpy()
    elif kind == "I32":
        a = t.to(torch.int32).contiguous().numpy()
    elif kind == "U8":
        a = t.to(torch.uint8).contiguous().numpy()
    else:
        raise ValueError(kind)
    assert name not in tensors, name
    tensors[name] = a


def save(out, name, tensors, meta):
    meta = OrderedDict(meta)
    meta["generator"] = "tools/reference/make_model_fixtures.py"
    meta["torch_version"] = torch.__version__.split("+")[0]
    safetensors_io.save(os.path.join(out, name + ".safetensors"), tensors, {k: str(v) for k, v in meta.items()})


def train_batch(cfg):
    ids, labels = zip(*[ref.training_sequence(p, a, cfg, MAX_SOURCE, MAX_TARGET) for p, a in TRAIN_PAIRS])
    ids_t, pos, mask, pads = ref.build_inputs(list(ids), cfg)
    assert all(p == 0 for p in pads)
    return ids_t, pos, mask, torch.tensor(labels, dtype=torch.long)


def write_json(path, obj, sort_keys=False):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def hf_state_dict(w32, cfg):
    """The state dict a tied HF ChatGLM model returns: parameters, the rotary inv_freq buffers, and lm_head.weight as
    the very tensor object of the embedding (tie_weights shares the Parameter)."""
    sd = OrderedDict()
    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    for k, v in w32.items():
        sd[k] = v
        if k.endswith("attention.query_key_value.bias"):
            layer = k.split(".")[2]
            sd[f"transformer.layers.{layer}.attention.rotary_emb.inv_freq"] = ref.rotary_inv_freq(d // 2).to(torch.float32)
    sd["lm_head.weight"] = sd["transformer.word_embeddings.weight"]
    return sd


def save_sharded(folder, sd, split, kind):
    """Two shards named as HF names them, and the index json (stale total_size, sorted weight_map)."""
    os.makedirs(folder, exist_ok=True)
    keys = list(sd)
    shards = [keys[:split], keys[split:]]
    stem, ext, index = ("pytorch_model", "bin", "pytorch_model.bin.index.json") if kind == "bin" \
        else ("model", "safetensors", "model.safetensors.index.json")
    wm = OrderedDict()
    for i, ks in enumerate(shards):
        fname = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}"
        part = OrderedDict((k, sd[k]) for k in ks)
        if kind == "bin":
            torch.save(part, os.path.join(folder, fname))
        else:
            safetensors_io.save(os.path.join(folder, fname), OrderedDict((k, v.contiguous().numpy()) for k, v in part.items()),
                                {"format": "pt"})
        for k in ks:
            wm[k] = fname
    # total_size deliberately wrong: the ChatGLM hub index was never updated after the vocabulary change (spec §2).
    write_json(os.path.join(folder, index), {"metadata": {"total_size": 13744473856}, "weight_map": wm}, sort_keys=True)


def save_folders(out, w32, cfg, lora_tensors, prefix_tensors):
    sd = hf_state_dict(w32, cfg)
    layer1 = next(i for i, k in enumerate(sd) if k.startswith("transformer.layers.1."))

    d = os.path.join(out, "hf_bin")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), CONFIG)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))

    d = os.path.join(out, "hf_bin_sharded")
    save_sharded(d, sd, layer1, "bin")  # shard 1: embedding + layer 0; shard 2: layer 1, final LN, lm_head
    write_json(os.path.join(d, "config.json"), CONFIG)

    d = os.path.join(out, "hf_safetensors_sharded")
    st = OrderedDict((k, v) for k, v in sd.items() if k != "lm_head.weight")
    save_sharded(d, st, layer1, "safetensors")
    write_json(os.path.join(d, "config.json"), CONFIG)

    L = cfg["num_layers"]
    A, B, r, alpha, enable = lora_tensors["lora_peft"]
    assert enable is None
    peft = OrderedDict()
    for i in range(L):
        pre = f"base_model.model.transformer.layers.{i}.attention.query_key_value"
        peft[f"{pre}.lora_A.weight"] = A[i]
        peft[f"{pre}.lora_B.weight"] = B[i]
    d = os.path.join(out, "peft_adapter")
    os.makedirs(d, exist_ok=True)
    torch.save(peft, os.path.join(d, "adapter_model.bin"))
    # PEFT 0.3.0's LoraConfig.save_pretrained: the dataclass fields as json.dump(indent=2, sort_keys=True).
    write_json(os.path.join(d, "adapter_config.json"), {
        "base_model_name_or_path": "THUDM/chatglm-6b", "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "lora_alpha": int(alpha), "lora_dropout": 0.1,
        "modules_to_save": None, "peft_type": "LORA", "r": r, "target_modules": ["query_key_value"],
        "task_type": "CAUSAL_LM"}, sort_keys=True)

    A, B, r, alpha, enable = lora_tensors["lora_grouped"]
    dg = OrderedDict()
    for i in range(L):
        pre = f"model.transformer.transformer.layers.{i}.attention.query_key_value"
        dg[f"{pre}.lora_A"] = A[i]
        dg[f"{pre}.lora_B"] = B[i]
    d = os.path.join(out, "doctorglm_adapter")
    os.makedirs(d, exist_ok=True)
    torch.save(dg, os.path.join(d, "adapter_model.bin"))
    # deep_training 0.1.0's LoraArguments as DoctorGLM's ckpt/lora/adapter_config.json lists them (spec §9.1), in that order.
    write_json(os.path.join(d, "adapter_config.json"), OrderedDict([
        ("r", r), ("lora_alpha", int(alpha)), ("lora_dropout", 0.05), ("target_modules", ["query_key_value"]),
        ("enable_lora", enable), ("fan_in_fan_out", True), ("merge_weights", False), ("bias", "none"),
        ("modules_to_save", None), ("inference_mode", True), ("with_lora", True), ("target_dtype", "16"),
        ("lora_model_name_or_path", None)]))

    p32 = prefix_tensors["ptuning"]
    d = os.path.join(out, "ptuning_checkpoint")
    os.makedirs(d, exist_ok=True)
    torch.save(OrderedDict([("transformer.prefix_encoder.embedding.weight", p32["embedding.weight"])]),
               os.path.join(d, "pytorch_model.bin"))
    pcfg = OrderedDict(CONFIG)
    pcfg["pre_seq_len"] = p32["embedding.weight"].shape[0]
    pcfg["prefix_projection"] = False
    write_json(os.path.join(d, "config.json"), pcfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg = dict(CONFIG)
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")

    w32 = make_weights(cfg)
    # ---- weights.safetensors: HF keys (+ tied lm_head copy, + stored-but-ignored inv_freq per layer)
    wt = OrderedDict()
    for k, v in w32.items():
        put(wt, k, v)
        if k.endswith("attention.query_key_value.bias"):
            layer = k.split(".")[2]
            put(wt, f"transformer.layers.{layer}.attention.rotary_emb.inv_freq",
                ref.rotary_inv_freq(cfg["hidden_size"] // cfg["num_attention_heads"] // 2))
    put(wt, "lm_head.weight", w32["transformer.word_embeddings.weight"])
    save(args.out, "weights", wt, {"note": "tiny random ChatGLM; lm_head.weight is a copy of the embedding (tied)"})

    # ---- logits.safetensors
    w = to_f64(w32)
    ids, pos, mask, pads = ref.build_inputs(LOGIT_SEQS, cfg)
    with torch.no_grad():
        logits = ref.forward(w, cfg, ids, pos, mask)
    t = OrderedDict()
    put(t, "sequences", torch.tensor([x for s in LOGIT_SEQS for x in s]), "I32")
    put(t, "lengths", torch.tensor([len(s) for s in LOGIT_SEQS]), "I32")
    put(t, "ids", ids, "I32")
    put(t, "position_ids", pos, "I32")
    put(t, "logits", logits)
    put(t, "mask", mask, "U8")
    save(args.out, "logits", t, {"pad_left": ",".join(map(str, pads))})

    # ---- train.safetensors: base model loss and full fine-tune gradients
    ids, pos, mask, labels = train_batch(cfg)
    wg = to_f64(w32, grad=True)
    loss = ref.lm_loss(ref.forward(wg, cfg, ids, pos, mask), labels)
    loss.backward()
    t = OrderedDict()
    put(t, "ids", ids, "I32")
    put(t, "labels", labels, "I32")
    put(t, "position_ids", pos, "I32")
    put(t, "loss", loss.reshape(1))
    for k, v in wg.items():
        put(t, "grad." + k, v.grad)
    put(t, "mask", mask, "U8")
    save(args.out, "train", t, {"max_source_length": MAX_SOURCE, "max_target_length": MAX_TARGET})

    # ---- LoRA (both forms)
    L, H = cfg["num_layers"], cfg["hidden_size"]
    lora_tensors = {}
    for name, r, alpha, enable, seed in [("lora_peft", 4, 8.0, None, 77), ("lora_grouped", 2, 6.0, [True, False, True], 78)]:
        gen = torch.Generator().manual_seed(seed)
        g = 1 if enable is None else sum(enable)
        block = 3 * H if enable is None else 3 * H // len(enable)
        A32 = [f32_uniform(gen, r * g, H, bound=1.0 / math.sqrt(H)) for _ in range(L)]
        B32 = [f32_randn(gen, block * g, r, std=0.2) for _ in range(L)]
        A = [a.double().requires_grad_(True) for a in A32]
        B = [b.double().requires_grad_(True) for b in B32]
        lora = {"A": A, "B": B, "scaling": alpha / r, "enable_lora": enable}
        loss = ref.lm_loss(ref.forward(w, cfg, ids, pos, mask, lora=lora), labels)
        loss.backward()
        t = OrderedDict()
        put(t, "loss", loss.reshape(1))
        for i in range(L):
            put(t, f"lora_a.{i}", A32[i])
            put(t, f"lora_b.{i}", B32[i])
            put(t, f"grad_a.{i}", A[i].grad)
            put(t, f"grad_b.{i}", B[i].grad)
        lora_tensors[name] = (A32, B32, r, alpha, enable)
        meta = {"r": r, "alpha": alpha, "scaling": alpha / r}
        if enable is not None:
            meta["enable_lora"] = ",".join("1" if e else "0" for e in enable)
        save(args.out, name, t, meta)

    # ---- P-Tuning v2 (both forms)
    N = 3
    W = 2 * L * H
    prefix_tensors = {}
    for name, projection, seed in [("ptuning", False, 91), ("ptuning_proj", True, 92)]:
        gen = torch.Generator().manual_seed(seed)
        p32 = OrderedDict()
        if projection:
            p32["embedding.weight"] = f32_randn(gen, N, H)
            p32["trans.0.weight"] = f32_uniform(gen, H, H, bound=1.0 / math.sqrt(H))
            p32["trans.0.bias"] = f32_uniform(gen, H, bound=1.0 / math.sqrt(H))
            p32["trans.2.weight"] = f32_uniform(gen, W, H, bound=1.0 / math.sqrt(H))
            p32["trans.2.bias"] = f32_uniform(gen, W, bound=1.0 / math.sqrt(H))
        else:
            p32["embedding.weight"] = f32_randn(gen, N, W)
        prefix_tensors[name] = p32
        p = OrderedDict((k, v.double().requires_grad_(True)) for k, v in p32.items())
        loss = ref.lm_loss(ref.forward(w, cfg, ids, pos, mask, prefix=p, prefix_projection=projection), labels)
        loss.backward()
        t = OrderedDict()
        put(t, "loss", loss.reshape(1))
        for k in p32:
            put(t, "transformer.prefix_encoder." + k, p32[k])
            put(t, "grad.transformer.prefix_encoder." + k, p[k].grad)
        save(args.out, name, t, {"pre_seq_len": N, "prefix_projection": str(projection).lower()})

    save_folders(args.out, w32, cfg, lora_tensors, prefix_tensors)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
