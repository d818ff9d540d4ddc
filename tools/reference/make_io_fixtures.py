"""Checkpoint I/O fixtures for DoctorGlm.Engine (tests/DoctorGlm.Engine.Tests/IO/).

Writes small files exactly as the Python tools write them:
  * torch.save zip checkpoints (fp32/fp16/bf16/f64/int8/uint8/int32/int64/bool, OrderedDict, a state dict with
    _metadata (pickled with BUILD), nesting under `module`, a Parameter, a 0-d tensor, two views of one storage at
    different offsets, a non-contiguous (transposed) tensor that the reader must refuse, non-tensor values);
  * the same checkpoint re-zipped with deflate;
  * a 2-shard `pytorch_model.bin.index.json` set and a 2-shard `model.safetensors.index.json` set;
  * a HF PEFT (>= 0.3) LoRA adapter folder, a PEFT 0.2.0 (MergedLinear) adapter folder, a DoctorGLM / deep_training
    adapter folder, P-Tuning v2 checkpoints (with and without prefix_projection);
  * `malicious.bin`: a torch.save-shaped zip whose data.pkl calls `os.system` (must be refused, never run).
`expected.safetensors` holds every tensor value the tests compare against, in its stored dtype (F16/BF16 as their
bits), under "<fixture>/<key>".

Run:  /usr/bin/python3 tools/reference/make_io_fixtures.py [--out DIR]   (Debian python3-torch 1.13)
Deterministic: fixed seeds, fixed zip timestamps (torch writes none), so reruns are byte-identical.
"""
import argparse
import collections
import json
import os
import struct
import zipfile

import torch

ST_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def raw_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().tobytes()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy().tobytes()
    return t.numpy().tobytes()


def save_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer (all dtypes incl. F16/BF16/BOOL), tensors back to back in insertion order."""
    header, chunks, off = {}, [], 0
    for name, t in tensors.items():
        b = raw_bytes(t)
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def rezip_deflate(src, dst):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, zin.read(info.filename))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "DoctorGlm.Engine.Tests", "Fixtures", "io"))
    out = os.path.abspath(ap.parse_args().out)
    os.makedirs(out, exist_ok=True)
    expected = collections.OrderedDict()

    def expect(prefix, sd):
        for k, v in sd.items():
            expected[f"{prefix}/{k}"] = v.detach().contiguous().clone()

    g = torch.Generator().manual_seed(1234)

    # ---------------------------------------------------------------- dtypes.bin
    base = torch.randn(10, generator=g)
    f16 = torch.tensor([1.0, -0.0, 65504.0, 6.0e-8, float("inf"), -2.5, 0.333], dtype=torch.float16)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4, generator=g)
    sd["f16"] = f16
    sd["bf16"] = (torch.randn(2, 3, generator=g) * 1000).to(torch.bfloat16)
    sd["f64"] = torch.tensor([1.0 / 3.0, -1e-300, 2.5], dtype=torch.float64)
    sd["i8"] = torch.randint(-127, 128, (4, 3), generator=g, dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 1, 200, 255], dtype=torch.uint8)
    sd["i32"] = torch.tensor([0, -1, 2147483647, -2147483648, 7, 130004], dtype=torch.int32)
    sd["i64"] = torch.tensor([3, -5, 150528], dtype=torch.int64)
    sd["i64_big"] = torch.tensor([1, 1 << 40], dtype=torch.int64)  # does not fit I32: refused on read
    sd["bool"] = torch.tensor([True, False, True, True, False])
    sd["scalar"] = torch.tensor(2.75)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    sd["view_a"] = base[2:5]             # shares base's storage, offset 2
    sd["view_b"] = base[5:9].view(2, 2)  # same storage, offset 5
    sd["transposed"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # non-contiguous: refused
    sd["epoch"] = 3  # not a tensor: skipped
    sd["note"] = "hello"
    torch.save(sd, os.path.join(out, "dtypes.bin"))
    expect("dtypes", {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})
    rezip_deflate(os.path.join(out, "dtypes.bin"), os.path.join(out, "dtypes_deflate.bin"))

    # ---------------------------------------------------------------- nested.pt (DoctorGLM int8 style, module.*)
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 4, generator=g))
        lin.bias.copy_(torch.randn(3, generator=g))
    inner = lin.state_dict()  # an OrderedDict with a _metadata attribute: pickled with BUILD
    w = torch.randn(6, 4, generator=g).half()
    scale = (w.abs().max(dim=1).values / 127).half()
    q = torch.round(w.float() / scale.float()[:, None]).to(torch.int8)
    inner["transformer.layers.0.attention.query_key_value.weight"] = q
    inner["transformer.layers.0.attention.query_key_value.weight_scale"] = scale
    nested = {"module": inner, "step": 10, "optimizer": None}
    torch.save(nested, os.path.join(out, "nested.pt"))
    expect("nested", {"module." + k: v for k, v in inner.items()})

    # ---------------------------------------------------------------- sharded .bin and .safetensors
    full = collections.OrderedDict()
    full["transformer.word_embeddings.weight"] = torch.randn(5, 4, generator=g).half()
    full["transformer.layers.0.input_layernorm.weight"] = torch.randn(4, generator=g).half()
    full["transformer.layers.0.attention.query_key_value.weight"] = torch.randn(12, 4, generator=g).half()
    full["transformer.final_layernorm.weight"] = torch.randn(4, generator=g).half()
    full["lm_head.weight"] = torch.randn(5, 4, generator=g).half()
    keys = list(full)
    shards = [keys[:2], keys[2:]]
    for kind in ("bin", "safetensors"):
        d = os.path.join(out, f"sharded_{kind}")
        os.makedirs(d, exist_ok=True)
        wm = {}
        for i, ks in enumerate(shards):
            stem = "pytorch_model" if kind == "bin" else "model"
            fname = f"{stem}-{i + 1:05d}-of-00002.{kind}"
            part = collections.OrderedDict((k, full[k]) for k in ks)
            if kind == "bin":
                torch.save(part, os.path.join(d, fname))
            else:
                save_safetensors(os.path.join(d, fname), part, {"format": "pt"})
            for k in ks:
                wm[k] = fname
        index = {"metadata": {"total_size": 999}, "weight_map": wm}  # total_size deliberately stale (as on the hub)
        iname = "pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json"
        with open(os.path.join(d, iname), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    expect("sharded", full)
    save_safetensors(os.path.join(out, "single.safetensors"), full, {"format": "pt"})

    # ---------------------------------------------------------------- PEFT >= 0.3 adapter (L=2, H=4, r=2)
    L, H, r = 2, 4, 2
    peft = collections.OrderedDict()
    for i in range(L):
        pre = f"base_model.model.transformer.layers.{i}.attention.query_key_value"
        peft[f"{pre}.lora_A.weight"] = torch.randn(r, H, generator=g)
        peft[f"{pre}.lora_B.weight"] = torch.randn(3 * H, r, generator=g)
    d = os.path.join(out, "peft_adapter")
    os.makedirs(d, exist_ok=True)
    torch.save(peft, os.path.join(d, "adapter_model.bin"))
    cfg = {
        "base_model_name_or_path": "THUDM/chatglm-6b", "bias": "none", "enable_lora": None, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "layers_pattern": None, "layers_to_transform": None,
        "lora_alpha": 8, "lora_dropout": 0.1, "merge_weights": False, "modules_to_save": None, "peft_type": "LORA",
        "r": r, "revision": None, "target_modules": ["query_key_value"], "task_type": "CAUSAL_LM",
        "use_rslora": False, "some_future_field": {"x": 1},
    }
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    expect("peft", peft)

    # ---------------------------------------------------------------- PEFT 0.2.0 MergedLinear adapter
    peft2 = collections.OrderedDict()
    for i in range(L):
        pre = f"base_model.model.transformer.layers.{i}.attention.query_key_value"
        peft2[f"{pre}.lora_A.weight"] = torch.randn(2 * r, H, generator=g)
        peft2[f"{pre}.lora_B.weight"] = torch.randn(2 * H, r, 1, generator=g)  # Conv1d(2r, 2H, 1, groups=2)
    d = os.path.join(out, "peft020_adapter")
    os.makedirs(d, exist_ok=True)
    torch.save(peft2, os.path.join(d, "adapter_model.bin"))
    cfg2 = {
        "base_model_name_or_path": "THUDM/chatglm-6b", "bias": "none", "enable_lora": [True, False, True],
        "fan_in_fan_out": False, "inference_mode": True, "lora_alpha": 16, "lora_dropout": 0.05,
        "merge_weights": True, "modules_to_save": None, "peft_type": "LORA", "r": r,
        "target_modules": ["query_key_value"], "task_type": "CAUSAL_LM",
    }
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg2, f, indent=2)
    expect("peft020", peft2)

    # ---------------------------------------------------------------- DoctorGLM / deep_training adapter (fp16, no .weight)
    dg = collections.OrderedDict()
    for i in range(L):
        pre = f"model.transformer.transformer.layers.{i}.attention.query_key_value"
        dg[f"{pre}.lora_A"] = torch.randn(2 * r, H, generator=g).half()
        dg[f"{pre}.lora_B"] = torch.randn(2 * H, r, generator=g).half()
    d = os.path.join(out, "doctorglm_adapter")
    os.makedirs(d, exist_ok=True)
    torch.save(dg, os.path.join(d, "adapter_model.bin"))
    cfg3 = {
        "r": r, "lora_alpha": 4, "lora_dropout": 0.05, "target_modules": ["query_key_value"],
        "enable_lora": [True, False, True], "fan_in_fan_out": True, "merge_weights": False, "bias": "none",
        "modules_to_save": None, "inference_mode": True, "with_lora": True, "target_dtype": "16",
        "lora_model_name_or_path": None,
    }
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg3, f, indent=2)
    expect("doctorglm", dg)

    # ---------------------------------------------------------------- P-Tuning v2 (N=3 prefix tokens)
    N = 3
    pt = collections.OrderedDict()
    pt["transformer.prefix_encoder.embedding.weight"] = torch.randn(N, 2 * L * H, generator=g)
    d = os.path.join(out, "ptuning")
    os.makedirs(d, exist_ok=True)
    torch.save(pt, os.path.join(d, "pytorch_model.bin"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "chatglm", "hidden_size": H, "num_layers": L, "num_attention_heads": 2,
                   "vocab_size": 5, "pre_seq_len": N, "prefix_projection": False}, f, indent=2)
    expect("ptuning", pt)

    ptp = collections.OrderedDict()
    ptp["transformer.prefix_encoder.embedding.weight"] = torch.randn(N, H, generator=g)
    ptp["transformer.prefix_encoder.trans.0.weight"] = torch.randn(H, H, generator=g)
    ptp["transformer.prefix_encoder.trans.0.bias"] = torch.randn(H, generator=g)
    ptp["transformer.prefix_encoder.trans.2.weight"] = torch.randn(2 * L * H, H, generator=g)
    ptp["transformer.prefix_encoder.trans.2.bias"] = torch.randn(2 * L * H, generator=g)
    d = os.path.join(out, "ptuning_projection")
    os.makedirs(d, exist_ok=True)
    torch.save(ptp, os.path.join(d, "pytorch_model.bin"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "chatglm", "hidden_size": H, "num_layers": L, "num_attention_heads": 2,
                   "vocab_size": 5, "pre_seq_len": N, "prefix_projection": True}, f, indent=2)
    expect("ptuning_projection", ptp)

    # ---------------------------------------------------------------- malicious.bin: GLOBAL os system + REDUCE
    # The exact bytes a pickle of os.system("echo pwned") makes with the portable module name, placed where
    # torch.load would look for the state dict.
    evil = (b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01cos\nsystem\nq\x02X\x0a\x00\x00\x00echo pwnedq\x03\x85q\x04Rq\x05s.")
    with zipfile.ZipFile(os.path.join(out, "malicious.bin"), "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in (("malicious/data.pkl", evil), ("malicious/version", b"3\n")):
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(zi, data)

    save_safetensors(os.path.join(out, "expected.safetensors"), expected, {"torch_version": torch.__version__})


if __name__ == "__main__":
    main()
