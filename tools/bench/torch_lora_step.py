#!/usr/bin/env python3
"""One LoRA training step of a ChatGLM-shaped model in PyTorch: the baseline for
`DoctorGlm.Engine.Benchmarks --lora-step` (benchmarks/DoctorGlm.Engine.Benchmarks/EndToEnd/LoraStepBenchmark.cs).

Same step as the engine's: random frozen weights (LayerNorm weights 1, biases 0, matrices uniform with std 0.02), PEFT
LoRA on query_key_value (r 8, alpha 32, dropout 0.1; A Kaiming-uniform, B zero), a batch of sequences of exactly
--seq tokens (random prompt of half the length, [gMASK] <sop>, random answer, <eop>; labels on the answer), loss
(shifted cross-entropy in fp32), backward, global-norm clipping at 1, AdamW (lr 1e-4, weight decay 0.01), zero grad.
The architecture is tools/reference/chatglm_reference.py's (spec §3), written here with device-resident rotary tables,
PyTorch's scaled_dot_product_attention when it exists (torch >= 2.0; the prefix-LM mask as a boolean attn_mask) and the
reference's explicit softmax attention otherwise, and gradient checkpointing per block (torch.utils.checkpoint,
non-reentrant, RNG state preserved so LoRA dropout replays). With --dtype bf16 the frozen weights and activations are
bf16; LoRA A/B stay fp32 master parameters, cast to bf16 where they are used (as autocast would).

FLOPs, MFU and HFU are counted exactly as the C# side counts them (see LoraStepBenchmark.cs): forward 2·N·T + 4·L·B·S²·H,
backward 2·N·T + 8·L·B·S²·H (input gradients only: the base is frozen), checkpointing adds 2·N_blocks·T + 4·L·B·S²·H
(HFU only). The ceiling is an 8192³ torch.matmul in the step's dtype on CUDA (TF32 off for fp32), or a 2048³ fp32
matmul on the CPU (PyTorch's own best, not the machine's FMA peak: compare tokens/s, not MFU, across the two there).

Each configuration prints one machine-readable line, "RESULT {json}", with the keys the C# side uses.

  /usr/bin/python3 tools/bench/torch_lora_step.py --device cpu --small            # runs here: fp32, preset tiny
  python3 tools/bench/torch_lora_step.py --device cuda --config 6b --dtype bf16 --batch 4
"""
import argparse
import json
import math
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The reference sits in ../reference in the repository, and next to this script in the GPU runner's bundle.
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from chatglm_reference import build_inputs, gelu_tanh, parameter_shapes, rotary_inv_freq, rotate_half, training_sequence  # noqa: E402


def tiny(vocab, hidden, layers, heads, inner):
    """GlmConfig.Tiny's layout: special ids at the top of the vocabulary, pad 3."""
    return dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_attention_heads=heads, inner_hidden_size=inner,
                mask_token_id=vocab - 10, gmask_token_id=vocab - 9, bos_token_id=vocab - 8, eos_token_id=vocab - 7,
                pad_token_id=3, layernorm_epsilon=1e-5)


# The same table as ModelPresets in the C# benchmarks.
PRESETS = {
    "6b": dict(vocab_size=130528, hidden_size=4096, num_layers=28, num_attention_heads=32, inner_hidden_size=16384,
               mask_token_id=130000, gmask_token_id=130001, bos_token_id=130004, eos_token_id=130005, pad_token_id=3,
               layernorm_epsilon=1e-5),
    "medium": tiny(32000, 2048, 8, 16, 8192),
    "small": tiny(16384, 1024, 4, 8, 4096),
    "tiny": tiny(1024, 256, 2, 4, 1024),
}

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def block_matrix_parameters(c):
    h, f = c["hidden_size"], c["inner_hidden_size"]
    return c["num_layers"] * (3 * h * h + h * h + 2 * f * h)


class GlmLora(torch.nn.Module):
    """ChatGLM with random frozen weights and a PEFT LoRA adapter on every query_key_value."""

    def __init__(self, cfg, dtype, device, attention, rank=8, alpha=32.0, dropout=0.1, seed=2026):
        super().__init__()
        self.cfg, self.dtype, self.attention = cfg, dtype, attention
        self.rank, self.scaling, self.lora_dropout = rank, alpha / rank, dropout
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        bound = 0.02 * math.sqrt(3.0)  # uniform with standard deviation 0.02, as the engine's random weights
        self.w = {}
        for name, shape in parameter_shapes(cfg):
            if name.endswith("layernorm.weight"):
                t = torch.ones(shape, dtype=dtype, device=device)
            elif len(shape) == 1:
                t = torch.zeros(shape, dtype=dtype, device=device)
            else:
                t = torch.empty(shape, dtype=dtype, device=device).uniform_(-bound, bound, generator=gen)
            self.w[name] = t  # frozen: plain tensors, not parameters
        h = cfg["hidden_size"]
        self.lora_a = torch.nn.ParameterList()
        self.lora_b = torch.nn.ParameterList()
        for _ in range(cfg["num_layers"]):
            a = torch.empty(rank, h, dtype=torch.float32, device=device)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's init of lora_A
            self.lora_a.append(torch.nn.Parameter(a))
            self.lora_b.append(torch.nn.Parameter(torch.zeros(3 * h, rank, dtype=torch.float32, device=device)))
        d = h // cfg["num_attention_heads"]
        self.inv_freq = rotary_inv_freq(d // 2).to(device)  # fp16-rounded θ_j of one rotary half (spec §3.4)

    def rotary_tables(self, position_ids):
        """cos/sin [B, S, 1, r] for each of the two halves (position, block position), fp32 angles, cast to the dtype."""
        tables = []
        for k in range(2):
            freqs = position_ids[:, k].to(torch.float32)[..., None] * self.inv_freq[None, None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            tables.append((emb.cos().to(self.dtype)[:, :, None, :], emb.sin().to(self.dtype)[:, :, None, :]))
        return tables

    @staticmethod
    def rotate(x, tables):
        r = x.shape[-1] // 2
        halves = []
        for k, (cos, sin) in enumerate(tables):
            part = x[..., k * r:(k + 1) * r]
            halves.append(part * cos + rotate_half(part) * sin)
        return torch.cat(halves, dim=-1)

    def attend(self, q, k, v, mask, layer):
        b, s, nh, d = q.shape
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=~mask[:, None])
            return out.transpose(1, 2).reshape(b, s, nh * d)
        c = float(layer + 1)  # the reference's explicit form (spec §3.5), on the device
        scores = torch.einsum("bqhd,bkhd->bhqk", q / (math.sqrt(d) * c), k)
        scores = scores.masked_fill(mask[:, None], -10000.0)
        probs = torch.softmax(scores.float() * c, dim=-1).to(q.dtype)
        return torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, nh * d)

    def block(self, i, x, tables, mask):
        cfg, w = self.cfg, self.w
        p = f"transformer.layers.{i}."
        hsz, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        d = hsz // nh
        eps, alpha = cfg["layernorm_epsilon"], math.sqrt(2 * cfg["num_layers"])
        b, s, _ = x.shape
        a = F.layer_norm(x, (hsz,), w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        t = F.linear(a, w[p + "attention.query_key_value.weight"], w[p + "attention.query_key_value.bias"])
        la, lb = self.lora_a[i].to(self.dtype), self.lora_b[i].to(self.dtype)
        t = t + self.scaling * F.linear(F.linear(F.dropout(a, self.lora_dropout, self.training), la), lb)
        t = t.view(b, s, nh, 3 * d)
        q, k, v = t[..., :d], t[..., d:2 * d], t[..., 2 * d:]
        ctx = self.attend(self.rotate(q, tables), self.rotate(k, tables), v, mask, i)
        o = F.linear(ctx, w[p + "attention.dense.weight"], w[p + "attention.dense.bias"])
        h = alpha * a + o
        m = F.layer_norm(h, (hsz,), w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
        u = F.linear(m, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])
        return alpha * m + F.linear(gelu_tanh(u), w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])

    def loss(self, ids, position_ids, mask, labels, checkpointing):
        e = self.w["transformer.word_embeddings.weight"]
        h = F.embedding(ids, e)
        tables = self.rotary_tables(position_ids)
        for i in range(self.cfg["num_layers"]):
            if checkpointing:
                h = checkpoint(self.block, i, h, tables, mask, use_reentrant=False)
            else:
                h = self.block(i, h, tables, mask)
        h = F.layer_norm(h, (self.cfg["hidden_size"],), self.w["transformer.final_layernorm.weight"],
                         self.w["transformer.final_layernorm.bias"], self.cfg["layernorm_epsilon"])
        logits = F.linear(h, e)  # tied head
        shift = logits[:, :-1, :].float()  # loss in fp32 (spec §5.1)
        return F.cross_entropy(shift.reshape(-1, shift.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def make_batch(cfg, batch, seq, device):
    """The C# side's batch: prompt of seq/2 − 1 random ordinary ids, [gMASK] <sop>, answer, <eop>; no padding."""
    source, target = seq // 2, seq - seq // 2
    gen = torch.Generator().manual_seed(77)
    span = min(cfg["vocab_size"], cfg["mask_token_id"]) - 16
    seqs, labels = [], []
    for _ in range(batch):
        prompt = (16 + torch.randint(span, (source - 1,), generator=gen)).tolist()
        answer = (16 + torch.randint(span, (target - 2,), generator=gen)).tolist()
        ids, lab = training_sequence(prompt, answer, cfg, source, target)
        assert len(ids) == seq, len(ids)
        seqs.append(ids)
        labels.append(lab)
    ids, pos, mask, _ = build_inputs(seqs, cfg)
    return ids.to(device), pos.to(device), mask.to(device), torch.tensor(labels, dtype=torch.long, device=device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling_tflops(device, dtype):
    """TFLOP/s of a large matmul in the step's dtype (median of three after a warm-up)."""
    n = 8192 if device.type == "cuda" else 2048
    gen = torch.Generator(device=device).manual_seed(5)
    a = torch.empty(n, n, dtype=dtype, device=device).uniform_(-1, 1, generator=gen)
    b = torch.empty(n, n, dtype=dtype, device=device).uniform_(-1, 1, generator=gen)
    torch.matmul(a, b)
    times = []
    for _ in range(3):
        synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2.0 * n ** 3 / times[1] / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default=None, choices=sorted(PRESETS), help="model shape (default: 6b on cuda, small on cpu)")
    ap.add_argument("--small", action="store_true",
                    help="the CPU smoke shape: --config tiny (2 layers, hidden 256); Debian's CPU PyTorch runs 'small' at ~60 s/step")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="weights and activations (default: bf16 on cuda, f32 on cpu)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--checkpointing", default="off,on", help="comma-separated: off, on")
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "explicit"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--jsonl", default="", help="also append each result's JSON to this file")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_lora_step: --device cuda but torch.cuda.is_available() is False")
    preset = "tiny" if args.small else (args.config or ("6b" if device.type == "cuda" else "small"))
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "f32")
    dtype = DTYPES[dtype_name]
    modes = [m.strip() for m in args.checkpointing.split(",") if m.strip()]
    if not modes or any(m not in ("off", "on") for m in modes):
        sys.exit(f"torch_lora_step: --checkpointing takes off and/or on, not {args.checkpointing!r}")
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    attention = ("sdpa" if has_sdpa else "explicit") if args.attention == "auto" else args.attention
    if attention == "sdpa" and not has_sdpa:
        sys.exit(f"torch_lora_step: torch {torch.__version__} has no scaled_dot_product_attention (needs >= 2.0)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as the engine's pedantic cuBLAS
        torch.backends.cudnn.allow_tf32 = False

    cfg = PRESETS[preset]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    n_params = sum(math.prod(s) for _, s in parameter_shapes(cfg))
    print(f"LoRA step (PyTorch {torch.__version__}, {attention} attention): {preset} ({cfg['num_layers']} layers, hidden "
          f"{cfg['hidden_size']}, {cfg['num_attention_heads']} heads, FFN {cfg['inner_hidden_size']}, vocabulary "
          f"{cfg['vocab_size']}, {n_params / 1e9:.3f} B parameters), {dtype_name}, batch {args.batch} x seq {args.seq}, on {name}",
          flush=True)
    ceiling = matmul_ceiling_tflops(device, dtype)
    print(f"  matrix ceiling ({'8192' if device.type == 'cuda' else '2048'}^3 {dtype_name} torch.matmul): {ceiling:.3g} TFLOP/s", flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(11)
    model = GlmLora(cfg, dtype, device, attention)
    model.train()
    params = list(model.lora_a) + list(model.lora_b)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    ids, pos, mask, labels = make_batch(cfg, args.batch, args.seq, device)
    synchronize(device)
    print(f"  model with random weights ready in {time.perf_counter() - t0:.1f} s; {sum(p.numel() for p in params):,} LoRA parameters train", flush=True)

    tokens = args.batch * args.seq
    n_blocks = block_matrix_parameters(cfg)
    n = n_blocks + cfg["vocab_size"] * cfg["hidden_size"]
    attn = 4.0 * cfg["num_layers"] * args.batch * args.seq * args.seq * cfg["hidden_size"]
    model_flops = 4 * n * tokens + 3 * attn

    def step(ckpt):
        loss = model.loss(ids, pos, mask, labels, ckpt)
        value = loss.item()  # the engine's step reads the loss too (Trainer logs it)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value

    for mode in modes:
        ckpt = mode == "on"
        first = last = float("nan")
        times = []
        try:
            for _ in range(args.warmup):
                first = step(ckpt)
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(args.steps):
                t = time.perf_counter()
                last = step(ckpt)
                synchronize(device)
                times.append(time.perf_counter() - t)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(e):
                raise
            # Without checkpointing a large batch may not fit; the other mode can still run.
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"  checkpointing {mode:<3}: out of memory ({str(e).splitlines()[0]})", flush=True)
            emit(args, dict(impl="torch", kind="lora_step", device=str(device), config=preset, dtype=dtype_name, batch=args.batch,
                            seq=args.seq, checkpointing=ckpt, error="out of memory"))
            continue
        times.sort()
        median = times[len(times) // 2]
        hardware = model_flops + (2 * n_blocks * tokens + attn if ckpt else 0)
        mfu, hfu = model_flops / median / 1e12 / ceiling, hardware / median / 1e12 / ceiling
        if device.type == "cuda":
            peak, peak_kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
        else:
            peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"
        print(f"  checkpointing {mode:<3}: {median * 1e3:.1f} ms/step (median of {args.steps}), {tokens / median:.1f} tokens/s, "
              f"MFU {100 * mfu:.1f}% (HFU {100 * hfu:.1f}%), peak memory {peak / 1e9:.2f} GB ({peak_kind}), loss {first:.4f} -> {last:.4f}",
              flush=True)
        result = dict(impl="torch", kind="lora_step", device=str(device), device_name=name, config=preset, dtype=dtype_name,
                      batch=args.batch, seq=args.seq, checkpointing=ckpt, steps=args.steps, step_ms=median * 1e3,
                      tokens_per_s=tokens / median, model_flops_per_step=model_flops, hardware_flops_per_step=hardware,
                      ceiling_tflops=ceiling, mfu=mfu, hfu=hfu, peak_memory_bytes=peak, peak_memory_kind=peak_kind, loss=last,
                      attention=attention, torch_version=torch.__version__)
        emit(args, result)


def emit(args, result):
    """The machine-readable line, and the --jsonl copy."""
    line = json.dumps(result)
    print("RESULT " + line, flush=True)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
