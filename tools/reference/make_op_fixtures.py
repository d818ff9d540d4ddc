#!/usr/bin/python3
"""Independent PyTorch reference for DoctorGlm.Engine's per-op tests.

Run from anywhere with Debian's torch (apt package python3-torch, torch 1.13):

    /usr/bin/python3 tools/reference/make_op_fixtures.py [--out DIR]

Writes tests/DoctorGlm.Engine.Tests/Fixtures/ops/<name>.safetensors (see README.md).

Conventions (all fixtures):
  * Inputs are drawn as float32 and stored as F32 (ids / labels as I32, masks as U8).
  * Every output and gradient is computed in float64 from exactly those float32 values
    (``.double()``), then rounded once to float32 for storage.
  * Gradients come from torch.autograd with loss = sum(out * dout), where ``dout`` is a
    random float32 tensor stored in the file (cross_entropy: dout = 1 on the scalar loss).
  * Scalar hyper-parameters are stored in ``__metadata__`` as strings.
  * Each fixture uses its own torch.Generator with a fixed seed, so the files are
    byte-identical between runs and adding a fixture never changes the others.

The math is written from the specification (/work/shared/spec/chatglm-6b.md) and PyTorch
primitives only; nothing is imported from the C# repository.
"""
import argparse
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "DoctorGlm.Engine.Tests", "Fixtures", "ops")

torch.set_num_threads(1)  # deterministic reduction order on CPU
torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- helpers

class Fixture:
    def __init__(self, name, seed):
        self.name = name
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.tensors = OrderedDict()
        self.meta = OrderedDict()

    def randn(self, *shape, scale=1.0):
        """float32 normal(0, scale); returned as float32 (store it, then use .double())."""
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale
        t = t.to(torch.float32)
        assert bool((t != 0).all()), "zero in random tensor"
        return t

    def put(self, name, t, dtype="F32"):
        t = t.detach()
        if dtype == "F32":
            a = t.to(torch.float32).contiguous().numpy()
        elif dtype == "F64":
            a = t.to(torch.float64).contiguous().numpy()
        elif dtype == "I32":
            a = t.to(torch.int32).contiguous().numpy()
        elif dtype == "U8":
            a = t.to(torch.uint8).contiguous().numpy()
        else:
            raise ValueError(dtype)
        assert name not in self.tensors, name
        self.tensors[name] = a

    def m(self, key, value):
        self.meta[key] = value if isinstance(value, str) else repr(value)

    def save(self, out_dir):
        self.meta["generator"] = "tools/reference/make_op_fixtures.py"
        self.meta["torch_version"] = torch.__version__.split("+")[0]
        path = os.path.join(out_dir, self.name + ".safetensors")
        safetensors_io.save(path, self.tensors, self.meta)
        return path


def leaf(t32):
    """float64 leaf requiring grad, built from a float32 tensor."""
    return t32.double().clone().requires_grad_(True)


def backward(out, dout32):
    (out * dout32.double()).sum().backward()


# --------------------------------------------------------------------------- ops

def f_layer_norm(out_dir):
    fx = Fixture("layer_norm", 1001)
    eps = 1e-5
    x = fx.randn(5, 37)
    w = 1.0 + fx.randn(37, scale=0.2)
    b = fx.randn(37, scale=0.1)
    dout = fx.randn(5, 37)
    X, W, Bb = leaf(x), leaf(w), leaf(b)
    # Written out (biased variance, eps inside sqrt) and cross-checked against F.layer_norm.
    mu = X.mean(-1, keepdim=True)
    var = ((X - mu) ** 2).mean(-1, keepdim=True)
    y = (X - mu) / torch.sqrt(var + eps) * W + Bb
    y_ref = F.layer_norm(x.double(), (37,), w.double(), b.double(), eps)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-12)
    backward(y, dout)
    for k, v in [("x", x), ("weight", w), ("bias", b), ("y", y), ("dout", dout),
                 ("dx", X.grad), ("dweight", W.grad), ("dbias", Bb.grad)]:
        fx.put(k, v)
    fx.m("eps", "1e-5")
    return fx.save(out_dir)


def gelu_tanh(u):
    return 0.5 * u * (1.0 + torch.tanh(0.7978845608028654 * (u + 0.044715 * u ** 3)))


def f_gelu(out_dir):
    fx = Fixture("gelu", 1002)
    x = fx.randn(7, 33)
    # a few large-magnitude values (~ +-5) where tanh saturates
    big = torch.tensor([5.0, -5.0, 4.75, -4.6, 6.1, -6.3, 3.9], dtype=torch.float32)
    x[torch.arange(7), torch.tensor([3, 8, 15, 21, 27, 30, 32])] = big
    dout = fx.randn(7, 33)
    X = leaf(x)
    y = gelu_tanh(X)
    y_ref = F.gelu(x.double(), approximate="tanh")
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-12)
    backward(y, dout)
    for k, v in [("x", x), ("y", y), ("dout", dout), ("dx", X.grad)]:
        fx.put(k, v)
    fx.m("form", "tanh")
    fx.m("k0", "0.7978845608028654")
    fx.m("k1", "0.044715")
    return fx.save(out_dir)


def glm_position_ids(S, ctx, mask_pos, pad_left=0):
    """Spec §4.1 on the unpadded sequence of length S - pad_left, then left-pad with 0 (§4.3)."""
    n = S - pad_left
    pos = [s if s < ctx else mask_pos for s in range(n)]
    blk = [0 if s < ctx else s - ctx + 1 for s in range(n)]
    return torch.tensor([[0] * pad_left + pos, [0] * pad_left + blk], dtype=torch.int64)


def glm_mask(S, ctx, pad_left=0):
    """Spec §4.1 prefix-LM mask (True = blocked) on the unpadded sequence, then left-padded
    with True rows and columns (§4.3)."""
    n = S - pad_left
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    core = (j > i) & (j >= ctx)
    m = torch.ones(S, S, dtype=torch.bool)
    m[pad_left:, pad_left:] = core
    return m


def rope_inv_freq_fp16(r):
    """inv_freq for one rotary half of size r: computed in float32, rounded to float16, back
    to float64 (exact)."""
    inv = 1.0 / (10000 ** (torch.arange(0, r, 2, dtype=torch.float32) / r))
    assert inv.dtype == torch.float32
    return inv.half().double()


def rotary2d(x, position_ids):
    """x [B, S, nh, d] float64; position_ids [B, 2, S] (row 0 pos, row 1 blk).
    First d/2 dims rotate with pos, last d/2 with blk; inside each half (size r) rotate-half
    with partner j + r/2."""
    B, S, nh, d = x.shape
    r = d // 2
    inv = rope_inv_freq_fp16(r)  # [r/2]
    outs = []
    for half in range(2):
        p = position_ids[:, half, :].double()  # [B, S]
        ang = p[:, :, None] * inv[None, None, :]  # [B, S, r/2] float64
        cos = torch.cos(ang)[:, :, None, :]  # [B, S, 1, r/2]
        sin = torch.sin(ang)[:, :, None, :]
        xh = x[..., half * r:(half + 1) * r]
        x1, x2 = xh[..., : r // 2], xh[..., r // 2:]
        outs.append(torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1))
    return torch.cat(outs, dim=-1)


def _rotary_fixture(out_dir, name, seed, B, S, nh, d, pos_ids, extra_meta):
    fx = Fixture(name, seed)
    x = fx.randn(B, S, nh, d)
    dout = fx.randn(B, S, nh, d)
    X = leaf(x)
    y = rotary2d(X, pos_ids)
    backward(y, dout)
    fx.put("x", x)
    fx.put("position_ids", pos_ids, "I32")
    fx.put("y", y)
    fx.put("dout", dout)
    fx.put("dx", X.grad)
    fx.m("base", "10000")
    fx.m("layout", "x,y,dout,dx: [B,S,nh,d]; position_ids: [B,2,S] row0=pos row1=block_pos")
    fx.m("inv_freq", "1/10000**(arange(0,r,2)/r) in fp32, rounded to fp16; angle=p*inv_freq in fp64; r=d/2")
    for k, v in extra_meta.items():
        fx.m(k, v)
    return fx.save(out_dir)


def f_rotary2d(out_dir):
    S = 7
    # sample 0: "a a a a [gMASK] <sop> b": ctx = 5, mask_pos = 4
    # sample 1: "a [MASK] a <sop> b b b": ctx = 3, mask_pos = 1 (blank infilling)
    pos_ids = torch.stack([glm_position_ids(S, 5, 4), glm_position_ids(S, 3, 1)])
    return _rotary_fixture(out_dir, "rotary2d", 1003, 2, S, 3, 16, pos_ids,
                           {"ctx": "5,3", "mask_pos": "4,1"})


def f_rotary2d_d128(out_dir):
    # Arbitrary larger ids (not a §4.1 sequence): the op just consumes the ids.
    pos_ids = torch.tensor([[[0, 13, 27, 40, 40], [0, 0, 5, 1, 38]]], dtype=torch.int64)
    return _rotary_fixture(out_dir, "rotary2d_d128", 1004, 1, 5, 2, 128, pos_ids,
                           {"note": "arbitrary position ids up to 40"})


def glm_attention(q, k, v, mask, c, prefix_k=None, prefix_v=None):
    """q,k,v [B,S,nh,d] (already rotated); mask bool [B,S,S] True = blocked; prefix [B,N,nh,d]
    concatenated before k/v with never-blocked mask columns. Spec §3.5. Returns [B,S,nh,d]."""
    B, S, nh, d = q.shape
    if prefix_k is not None:
        k = torch.cat([prefix_k, k], dim=1)
        v = torch.cat([prefix_v, v], dim=1)
        N = prefix_k.shape[1]
        mask = torch.cat([torch.zeros(B, S, N, dtype=torch.bool), mask], dim=-1)
    qh = q.permute(0, 2, 1, 3)  # [B,nh,S,d]
    kh = k.permute(0, 2, 1, 3)  # [B,nh,T,d]
    vh = v.permute(0, 2, 1, 3)
    qs = qh / (math.sqrt(d) * c)
    scores = qs @ kh.transpose(-1, -2)  # [B,nh,S,T]
    scores = scores.masked_fill(mask[:, None, :, :], -10000.0)
    scores = scores * c
    probs = torch.softmax(scores, dim=-1)
    ctx = probs @ vh  # [B,nh,S,d]
    return ctx.permute(0, 2, 1, 3)


def _attn_inputs(fx, B, S, nh, d):
    q = fx.randn(B, S, nh, d)
    k = fx.randn(B, S, nh, d)
    v = fx.randn(B, S, nh, d)
    # sample 0: unpadded, ctx = 4 (<sop> at 4); sample 1: 4 real tokens with ctx = 2,
    # left-padded by 2 (so <sop> is at padded index 4).
    mask = torch.stack([glm_mask(S, 4), glm_mask(S, 2, pad_left=2)])
    return q, k, v, mask


def f_glm_attention(out_dir):
    fx = Fixture("glm_attention", 1005)
    B, S, nh, d, c = 2, 6, 2, 8, 3
    q, k, v, mask = _attn_inputs(fx, B, S, nh, d)
    dout = fx.randn(B, S, nh, d)
    Q, K, V = leaf(q), leaf(k), leaf(v)
    out = glm_attention(Q, K, V, mask, float(c))
    backward(out, dout)
    fx.put("q", q); fx.put("k", k); fx.put("v", v)
    fx.put("mask", mask, "U8")
    fx.put("out", out); fx.put("dout", dout)
    fx.put("dq", Q.grad); fx.put("dk", K.grad); fx.put("dv", V.grad)
    fx.m("layer_coeff", "3"); fx.m("layer_id", "2"); fx.m("mask_fill", "-10000.0")
    fx.m("ctx", "4,2"); fx.m("pad_left", "0,2")
    fx.m("layout", "q,k,v,out: [B,S,nh,d]; mask: [B,S(query),S(key)] u8 1=blocked")
    return fx.save(out_dir)


def f_glm_attention_prefix(out_dir):
    fx = Fixture("glm_attention_prefix", 1006)
    B, S, nh, d, c, N = 2, 6, 2, 8, 3, 3
    q, k, v, mask = _attn_inputs(fx, B, S, nh, d)
    pk = fx.randn(B, N, nh, d)
    pv = fx.randn(B, N, nh, d)
    dout = fx.randn(B, S, nh, d)
    Q, K, V, PK, PV = leaf(q), leaf(k), leaf(v), leaf(pk), leaf(pv)
    out = glm_attention(Q, K, V, mask, float(c), PK, PV)
    backward(out, dout)
    fx.put("q", q); fx.put("k", k); fx.put("v", v)
    fx.put("prefix_k", pk); fx.put("prefix_v", pv)
    fx.put("mask", mask, "U8")
    fx.put("out", out); fx.put("dout", dout)
    fx.put("dq", Q.grad); fx.put("dk", K.grad); fx.put("dv", V.grad)
    fx.put("dprefix_k", PK.grad); fx.put("dprefix_v", PV.grad)
    fx.m("layer_coeff", "3"); fx.m("layer_id", "2"); fx.m("mask_fill", "-10000.0")
    fx.m("ctx", "4,2"); fx.m("pad_left", "0,2"); fx.m("prefix_len", "3")
    fx.m("layout", "q,k,v,out: [B,S,nh,d]; prefix_k/v: [B,N,nh,d] placed before k/v; "
                   "mask: [B,S,S] for the non-prefix keys only, prefix columns never blocked")
    return fx.save(out_dir)


def f_cross_entropy(out_dir):
    fx = Fixture("cross_entropy", 1007)
    N, V = 11, 53
    logits = fx.randn(N, V, scale=2.0)
    labels = torch.randint(0, V, (N,), generator=fx.gen, dtype=torch.int64)
    labels[torch.tensor([1, 6, 10])] = -100
    L = leaf(logits)
    # mean over kept tokens of (logsumexp - logit[label])
    keep = labels != -100
    lse = torch.logsumexp(L, dim=-1)
    picked = L.gather(1, labels.clamp(min=0)[:, None])[:, 0]
    loss = ((lse - picked) * keep.double()).sum() / keep.sum()
    loss_ref = F.cross_entropy(logits.double(), labels, ignore_index=-100, reduction="mean")
    assert torch.allclose(loss, loss_ref, rtol=0, atol=1e-12)
    loss.backward()
    fx.put("logits", logits)
    fx.put("labels", labels, "I32")
    fx.put("loss", loss.reshape(1))
    fx.put("dlogits", L.grad)
    fx.m("ignore_index", "-100"); fx.m("reduction", "mean")
    return fx.save(out_dir)


def f_embedding(out_dir):
    fx = Fixture("embedding", 1008)
    V, H = 13, 6
    table = fx.randn(V, H)
    ids = torch.tensor([3, 0, 12, 3, 7, 7, 3, 1, 12, 5], dtype=torch.int64)
    dout = fx.randn(10, H)
    T = leaf(table)
    y = T[ids]
    assert torch.equal(y, F.embedding(ids, table.double()))
    backward(y, dout)
    fx.put("table", table)
    fx.put("ids", ids, "I32")
    fx.put("y", y); fx.put("dout", dout); fx.put("dtable", T.grad)
    return fx.save(out_dir)


def f_lora_linear(out_dir):
    fx = Fixture("lora_linear", 1009)
    B, S, IN, OUT, r, alpha = 2, 3, 12, 18, 2, 4
    s = alpha / r
    x = fx.randn(B, S, IN)
    w = fx.randn(OUT, IN, scale=0.3)
    b = fx.randn(OUT, scale=0.1)
    a = fx.randn(r, IN, scale=0.3)
    bb = fx.randn(OUT, r, scale=0.3)
    dout = fx.randn(B, S, OUT)
    X, A, BB = leaf(x), leaf(a), leaf(bb)
    Wd, bd = w.double(), b.double()  # frozen
    y = X @ Wd.t() + bd + s * ((X @ A.t()) @ BB.t())
    backward(y, dout)
    fx.put("x", x); fx.put("weight", w); fx.put("bias", b)
    fx.put("lora_a", a); fx.put("lora_b", bb)
    fx.put("y", y); fx.put("dout", dout)
    fx.put("dx", X.grad); fx.put("dlora_a", A.grad); fx.put("dlora_b", BB.grad)
    fx.m("alpha", "4"); fx.m("r", "2"); fx.m("scaling", "2.0"); fx.m("dropout", "0")
    return fx.save(out_dir)


def f_lora_linear_grouped(out_dir):
    fx = Fixture("lora_linear_grouped", 1010)
    B, S, IN, OUT, r, alpha = 2, 3, 12, 18, 2, 4
    enable = [True, False, True]
    s = alpha / r
    blk = OUT // len(enable)  # 6
    x = fx.randn(B, S, IN)
    w = fx.randn(OUT, IN, scale=0.3)
    b = fx.randn(OUT, scale=0.1)
    a = fx.randn(r * sum(enable), IN, scale=0.3)       # [2r, in]
    bb = fx.randn(blk * sum(enable), r, scale=0.3)     # [12, r]
    dout = fx.randn(B, S, OUT)
    X, A, BB = leaf(x), leaf(a), leaf(bb)
    Wd, bd = w.double(), b.double()
    z = X @ A.t()  # [B,S,2r]
    # grouped 1x1 conv (loralib MergedLinear): group g uses channels r*g.. and lora_b rows blk*g..
    deltas = []
    for g in range(sum(enable)):
        deltas.append(z[..., r * g:r * (g + 1)] @ BB[blk * g:blk * (g + 1)].t())
    delta = torch.cat(deltas, dim=-1)  # [B,S,12]
    # zero_pad: scatter the enabled groups into their output blocks
    pieces, gi = [], 0
    for e in enable:
        if e:
            pieces.append(delta[..., blk * gi:blk * (gi + 1)])
            gi += 1
        else:
            pieces.append(torch.zeros(B, S, blk, dtype=torch.float64))
    full = torch.cat(pieces, dim=-1)
    y = X @ Wd.t() + bd + s * full
    # cross-check with the merged-weight form (spec §9.1 "Merge")
    Wm = Wd.clone()
    Wm[0:6] += s * bb[0:6].double() @ a[0:2].double()
    Wm[12:18] += s * bb[6:12].double() @ a[2:4].double()
    assert torch.allclose(y.detach(), x.double() @ Wm.t() + bd, rtol=0, atol=1e-12)
    backward(y, dout)
    fx.put("x", x); fx.put("weight", w); fx.put("bias", b)
    fx.put("lora_a", a); fx.put("lora_b", bb)
    fx.put("y", y); fx.put("dout", dout)
    fx.put("dx", X.grad); fx.put("dlora_a", A.grad); fx.put("dlora_b", BB.grad)
    fx.m("alpha", "4"); fx.m("r", "2"); fx.m("scaling", "2.0"); fx.m("dropout", "0")
    fx.m("enable_lora", "1,0,1")
    return fx.save(out_dir)


def _opt_inputs(fx, n=23, steps=3):
    p0 = fx.randn(n)
    grads = [fx.randn(n, scale=0.5) for _ in range(steps)]
    return p0, grads


def f_adamw(out_dir):
    fx = Fixture("adamw", 1011)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    p0, grads = _opt_inputs(fx)
    p = torch.nn.Parameter(p0.double().clone())
    opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                            amsgrad=False, foreach=False, maximize=False)
    params = [p.detach().clone()]
    for g in grads:
        p.grad = g.double().clone()
        opt.step()
        params.append(p.detach().clone())
    st = opt.state[p]
    # independent re-derivation of the same update
    q = p0.double().clone(); m = torch.zeros_like(q); v = torch.zeros_like(q)
    for t, g in enumerate(grads, 1):
        g = g.double()
        q = q * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** t)) + eps
        q = q - lr * mhat / denom
        assert torch.allclose(q, params[t], rtol=0, atol=1e-14)
    fx.put("param0", p0)
    for i, g in enumerate(grads):
        fx.put(f"grad{i}", g)
    for i in (1, 2, 3):
        fx.put(f"param{i}", params[i])
    fx.put("exp_avg", st["exp_avg"]); fx.put("exp_avg_sq", st["exp_avg_sq"])
    fx.m("lr", "1e-2"); fx.m("beta1", "0.9"); fx.m("beta2", "0.999")
    fx.m("eps", "1e-8"); fx.m("weight_decay", "0.1"); fx.m("steps", "3")
    return fx.save(out_dir)


def f_lion(out_dir):
    fx = Fixture("lion", 1012)
    lr, b1, b2, wd = 1e-3, 0.9, 0.99, 0.1
    p0, grads = _opt_inputs(fx)
    p = p0.double().clone()
    m = torch.zeros_like(p)
    params = [p.clone()]
    for g in grads:
        g = g.double()
        p = p * (1 - lr * wd)
        c = b1 * m + (1 - b1) * g
        assert bool((c != 0).all())
        p = p - lr * torch.sign(c)
        m = b2 * m + (1 - b2) * g
        params.append(p.clone())
    fx.put("param0", p0)
    for i, g in enumerate(grads):
        fx.put(f"grad{i}", g)
    for i in (1, 2, 3):
        fx.put(f"param{i}", params[i])
    fx.put("exp_avg", m)
    fx.m("lr", "1e-3"); fx.m("beta1", "0.9"); fx.m("beta2", "0.99")
    fx.m("weight_decay", "0.1"); fx.m("steps", "3")
    return fx.save(out_dir)


def f_clip_grad_norm(out_dir):
    fx = Fixture("clip_grad_norm", 1013)
    max_norm = 0.5
    g0 = fx.randn(7)
    g1 = fx.randn(5, 3)
    p0 = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    p1 = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    p0.grad = g0.double().clone()
    p1.grad = g1.double().clone()
    total = torch.nn.utils.clip_grad_norm_([p0, p1], max_norm, norm_type=2.0)
    tn = torch.sqrt((g0.double() ** 2).sum() + (g1.double() ** 2).sum())
    assert abs(float(total) - float(tn)) < 1e-12 and float(tn) > max_norm
    coef = min(max_norm / (float(tn) + 1e-6), 1.0)
    assert torch.allclose(p0.grad, g0.double() * coef, rtol=0, atol=1e-15)
    fx.put("grad0", g0); fx.put("grad1", g1)
    fx.put("total_norm", total.reshape(1))
    fx.put("clipped0", p0.grad); fx.put("clipped1", p1.grad)
    fx.m("max_norm", "0.5"); fx.m("norm_type", "2")
    fx.m("coef", "min(max_norm / (total_norm + 1e-6), 1)")
    return fx.save(out_dir)


def f_lr_schedules(out_dir):
    fx = Fixture("lr_schedules", 1014)
    total, warmup, base = 30, 5, 1e-3
    num_cycles = 0.5

    def linear(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    def cosine(step):
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    def constant(step):
        if step < warmup:
            return step / max(1.0, warmup)
        return 1.0

    for name, fn in [("linear", linear), ("cosine", cosine), ("constant_warmup", constant)]:
        fx.put(name, torch.tensor([base * fn(i) for i in range(total)], dtype=torch.float64), "F64")
    fx.m("base_lr", "1e-3"); fx.m("warmup_steps", "5"); fx.m("total_steps", "30")
    fx.m("num_cycles", "0.5")
    fx.m("index", "value[i] = lr used for optimizer step i (after i scheduler.step() calls)")
    return fx.save(out_dir)


ALL = [f_layer_norm, f_gelu, f_rotary2d, f_rotary2d_d128, f_glm_attention,
       f_glm_attention_prefix, f_cross_entropy, f_embedding, f_lora_linear,
       f_lora_linear_grouped, f_adamw, f_lion, f_clip_grad_norm, f_lr_schedules]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for fn in ALL:
        path = fn(args.out)
        print(os.path.relpath(path, os.getcwd()))


if __name__ == "__main__":
    main()
