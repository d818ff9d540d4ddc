#!/usr/bin/env python3
"""Writes tests/DoctorGlm.Engine.Tests/Fixtures/quant/*.safetensors: ChatGLM's weight-only INT8/INT4 quantization
(spec §10) computed with PyTorch exactly as THUDM's quantization.py does it, on fp16 weights:

    scale = (w.abs().max(dim=-1).values / (2**(bits-1) - 1)).half()
    q     = torch.round(w / scale[:, None]).to(torch.int8)        # fp16 division, then round half to even
    int4: byte k of a row = (q[2k] & 0xF) << 4 | (q[2k+1] & 0xF)  # high nibble = even element
    dequantized = (q.half() * scale[:, None])                      # fp16 product

CPU torch 1.13 has no fp16 round, so the fp16 quotient is rounded in fp32 (exact: the quotient is an fp16 value).
Run: /usr/bin/python3 tools/reference/make_quant_fixtures.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "DoctorGlm.Engine.Tests", "Fixtures", "quant")


def quantize(w16, bits):
    scale = (w16.abs().max(dim=-1).values / (2 ** (bits - 1) - 1)).half()
    q = torch.round((w16 / scale[:, None]).float()).to(torch.int8)
    return q, scale


def pack_int4(q):
    hi = (q[:, 0::2].to(torch.int32) & 0xF) << 4
    lo = q[:, 1::2].to(torch.int32) & 0xF
    b = (hi | lo)
    return torch.where(b > 127, b - 256, b).to(torch.int8)


def main():
    torch.manual_seed(20261125)
    os.makedirs(OUT, exist_ok=True)
    # Odd row count, rows with very different magnitudes, and ties at .5 after division.
    rows, cols = 7, 34
    w = torch.randn(rows, cols) * torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 20.0, 0.002])[:, None]
    w[4, :6] = torch.tensor([0.5, -0.5, 1.5, -2.5, 0.25, -0.75])  # with max 0.5·… exact halves appear
    w16 = w.half()
    tensors = {"weight": w16.float()}
    for bits in (8, 4):
        q, scale = quantize(w16, bits)
        deq = (q.half() * scale[:, None]).float()
        tensors[f"q{bits}"] = q
        tensors[f"scale{bits}"] = scale
        tensors[f"dequant{bits}"] = deq
    tensors["packed4"] = pack_int4(tensors["q4"])
    safetensors_io.save(os.path.join(OUT, "quant.safetensors"), tensors,
                        {"rows": str(rows), "cols": str(cols), "generator": "tools/reference/make_quant_fixtures.py"})


QUANTIZED = ("attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight")


def pre_quantized_folders():
    """THUDM-style pre-quantized checkpoints of the tiny parity model (Fixtures/model): the four block linears become
    int8 `weight` ([out, in], or [out, in/2] packed for INT4) plus an fp16 `weight_scale` [out], quantized from the
    fp16-rounded weights as quantization.py does; everything else is kept as stored; config.json gets
    quantization_bit. Written with torch.save as `pytorch_model.bin`."""
    import json
    model_dir = os.path.join(os.path.dirname(OUT), "model")
    tensors, _ = safetensors_io.load(os.path.join(model_dir, "weights.safetensors"))
    config = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
    for bits in (8, 4):
        state = {}
        for name, arr in tensors.items():
            t = torch.from_numpy(arr.copy())
            if name.endswith(QUANTIZED):
                q, scale = quantize(t.half(), bits)
                state[name] = pack_int4(q) if bits == 4 else q
                state[name + "_scale"] = scale
            else:
                state[name] = t
        folder = os.path.join(OUT, f"hf_int{bits}")
        os.makedirs(folder, exist_ok=True)
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump(dict(config, quantization_bit=bits), f, indent=2)


if __name__ == "__main__":
    main()
    pre_quantized_folders()
