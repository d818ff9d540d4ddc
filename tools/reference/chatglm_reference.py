"""Independent PyTorch reference of the ChatGLM-6B architecture (spec /work/shared/spec/chatglm-6b.md §3, §4, §5.1, §8, §9).

Written from the specification only (nothing from the C# repository). Batch-major layout: activations [B, S, H],
attention tensors [B, S, nh, d]. The math follows the spec step by step:

  * QKV: t = a·Wᵀ + b viewed [B, S, nh, 3d], q | k | v split per head (§3.3, per-head interleaved rows).
  * 2D rotary (§3.4): dims [0, d/2) rotate with pos, [d/2, d) with blk, rotate-half inside each half;
    inv_freq computed in fp32 and rounded to fp16; angles and cos/sin in fp32 (the fp32 ``model.float()`` path).
  * attention (§3.5): q / (√d·c), scores, masked_fill(−10000), ×c, softmax in at least fp32, ·v; c = layer + 1;
    P-Tuning prefix keys/values (no rotary) concatenated before the current ones, prefix columns never masked.
  * block: h = α·LN1(x) + attn, y = α·LN2(h) + MLP(LN2(h)), tanh GELU, α = √(2L); tied lm_head (§3.2).
  * masks and position ids (§4.1) with the tokenizer's left padding (§4.3).
  * LoRA (§9): PEFT form y += s·(x·Aᵀ)·Bᵀ, and loralib MergedLinear (enable_lora) via a grouped 1×1 conv1d
    whose output is scattered to the enabled contiguous row blocks, as loralib does.
  * loss (§5.1): logits[:, t] predict labels[:, t+1], cross-entropy ignoring −100, mean.

Every function takes the compute dtype from its inputs (the fixture script uses float64).
"""
import math

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- inputs (§4)

def context_and_mask_pos(ids, cfg):
    """ctx = first <sop> (len when absent); mask_pos = first [gMASK] else first [MASK]."""
    ctx = ids.index(cfg["bos_token_id"]) if cfg["bos_token_id"] in ids else len(ids)
    if cfg["gmask_token_id"] in ids:
        mask_pos = ids.index(cfg["gmask_token_id"])
    elif cfg["mask_token_id"] in ids:
        mask_pos = ids.index(cfg["mask_token_id"])
    else:
        mask_pos = 0
    return ctx, mask_pos


def build_inputs(seqs, cfg):
    """Left-pads a list of id lists (§4.3). Returns ids [B,S] long, position_ids [B,2,S] long,
    mask [B,S,S] bool (True = blocked), pad_left list."""
    S = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, S), cfg["pad_token_id"], dtype=torch.long)
    pos = torch.zeros((B, 2, S), dtype=torch.long)
    mask = torch.ones((B, S, S), dtype=torch.bool)
    pads = []
    for b, s in enumerate(seqs):
        n = len(s)
        pad = S - n
        pads.append(pad)
        ctx, mask_pos = context_and_mask_pos(s, cfg)
        ids[b, pad:] = torch.tensor(s, dtype=torch.long)
        # §4.1 on the unpadded sequence
        m = torch.tril(torch.ones((n, n), dtype=torch.long))   # 1 = attend (causal)
        m[:, :ctx] = 1                                           # context columns visible to everyone
        blocked = m < 1
        mask[b, pad:, pad:] = blocked
        p = torch.arange(n, dtype=torch.long)
        p[ctx:] = mask_pos
        blk = torch.cat([torch.zeros(ctx, dtype=torch.long), torch.arange(1, n - ctx + 1, dtype=torch.long)])
        pos[b, 0, pad:] = p
        pos[b, 1, pad:] = blk
    return ids, pos, mask, pads


def training_sequence(prompt, answer, cfg, max_source, max_target):
    """§5.1: a + [gMASK, <sop>] + b + [<eop>], right-padded; labels −100 before <sop> and on pad."""
    a = prompt[: max_source - 1]
    b = answer[: max_target - 2]
    ids = a + [cfg["gmask_token_id"], cfg["bos_token_id"]] + b + [cfg["eos_token_id"]]
    ctx = ids.index(cfg["bos_token_id"])
    labels = [-100] * ctx + ids[ctx:]
    total = max_source + max_target
    pad = total - len(ids)
    ids = ids + [cfg["pad_token_id"]] * pad
    labels = labels + [cfg["pad_token_id"]] * pad
    labels = [(-100 if l == cfg["pad_token_id"] else l) for l in labels]
    return ids, labels


# --------------------------------------------------------------------------- rotary (§3.4)

def rotary_inv_freq(rot_dim):
    """inv_freq[j] = 1 / 10000^(2j/rot_dim), computed in fp32 then rounded to fp16 (HF constructor)."""
    inv = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    return inv.half().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rotary_1d(x, p, rot_dim):
    """x [B,S,nh,rot_dim]; p [B,S] long. Angles and cos/sin in fp32, then cast to x's dtype."""
    inv = rotary_inv_freq(rot_dim)
    freqs = p.to(torch.float32)[..., None] * inv[None, None, :]         # [B,S,rot_dim/2], fp32
    emb = torch.cat((freqs, freqs), dim=-1)                            # [B,S,rot_dim]
    cos = emb.cos().to(x.dtype)[:, :, None, :]
    sin = emb.sin().to(x.dtype)[:, :, None, :]
    return x * cos + rotate_half(x) * sin


def apply_rotary_2d(x, position_ids):
    d = x.shape[-1]
    r = d // 2
    x1, x2 = x[..., :r], x[..., r:]
    return torch.cat((apply_rotary_1d(x1, position_ids[:, 0], r), apply_rotary_1d(x2, position_ids[:, 1], r)), dim=-1)


# --------------------------------------------------------------------------- LoRA (§9)

def lora_delta_peft(x, A, B, scaling):
    return scaling * ((x @ A.t()) @ B.t())


def lora_delta_merged(x, A, B, scaling, enable_lora, out_features):
    """loralib MergedLinear: z = x·Aᵀ, grouped 1×1 conv with lora_B, scattered into the enabled row blocks."""
    n_enabled = sum(enable_lora)
    r = A.shape[0] // n_enabled
    z = x @ A.t()                                                       # [..., r·g]
    lead = z.shape[:-1]
    zc = z.reshape(-1, z.shape[-1]).t().unsqueeze(0)                    # [1, r·g, N]
    w = B.unsqueeze(-1)                                                 # [block·g, r, 1]
    dz = F.conv1d(zc, w, groups=n_enabled)                              # [1, block·g, N]
    dz = dz.squeeze(0).t().reshape(*lead, -1)                           # [..., block·g]
    block = out_features // len(enable_lora)
    lora_ind = torch.zeros(out_features, dtype=torch.bool)
    for i, e in enumerate(enable_lora):
        if e:
            lora_ind[i * block:(i + 1) * block] = True
    result = torch.zeros(*lead, out_features, dtype=x.dtype)
    result[..., lora_ind] = dz
    return scaling * result


# --------------------------------------------------------------------------- prefix (§8)

def prefix_table(prefix, projection):
    """[N, 2LH] from the prefix encoder parameters (keys without 'transformer.prefix_encoder.')."""
    e = prefix["embedding.weight"]
    if not projection:
        return e
    h = torch.tanh(F.linear(e, prefix["trans.0.weight"], prefix["trans.0.bias"]))
    return F.linear(h, prefix["trans.2.weight"], prefix["trans.2.bias"])


def prefix_past(table, batch, cfg):
    """Per layer (key, value) [B, N, nh, d]: column ((2i+kv)·nh + head)·d + dim."""
    L, nh = cfg["num_layers"], cfg["num_attention_heads"]
    d = cfg["hidden_size"] // nh
    n = table.shape[0]
    t = table.unsqueeze(0).expand(batch, n, table.shape[1]).reshape(batch, n, 2 * L, nh, d)
    t = t.permute(2, 0, 1, 3, 4)                                       # [2L, B, N, nh, d]
    return [(t[2 * i], t[2 * i + 1]) for i in range(L)]


# --------------------------------------------------------------------------- model (§3)

def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


def attention(q, k, v, mask, layer_id, past=None):
    """q, k, v [B,S,nh,d] (q, k rotated); mask [B,S,S] bool True = blocked; past (pk, pv) [B,N,nh,d]."""
    B, S, nh, d = q.shape
    c = float(layer_id + 1)
    if past is not None:
        pk, pv = past
        k = torch.cat((pk, k), dim=1)
        v = torch.cat((pv, v), dim=1)
        mask = torch.cat((torch.zeros(B, S, pk.shape[1], dtype=torch.bool), mask), dim=2)
    q = q / (math.sqrt(d) * c)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k)
    scores = scores.masked_fill(mask[:, None, :, :], -10000.0)
    work = torch.promote_types(scores.dtype, torch.float32)           # softmax in (at least) fp32
    probs = torch.softmax(scores.to(work) * c, dim=-1).to(q.dtype)
    ctx = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    return ctx.reshape(B, S, nh * d)


def block(w, i, x, position_ids, mask, cfg, lora=None, past=None):
    p = f"transformer.layers.{i}."
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    d = H // nh
    eps = cfg["layernorm_epsilon"]
    alpha = math.sqrt(2 * cfg["num_layers"])
    B, S, _ = x.shape
    a = F.layer_norm(x, (H,), w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
    t = F.linear(a, w[p + "attention.query_key_value.weight"], w[p + "attention.query_key_value.bias"])
    if lora is not None:
        A, Bm = lora["A"][i], lora["B"][i]
        if lora.get("enable_lora") is None:
            t = t + lora_delta_peft(a, A, Bm, lora["scaling"])
        else:
            t = t + lora_delta_merged(a, A, Bm, lora["scaling"], lora["enable_lora"], 3 * H)
    t = t.view(B, S, nh, 3 * d)
    q, k, v = t[..., :d], t[..., d:2 * d], t[..., 2 * d:]
    q = apply_rotary_2d(q, position_ids)
    k = apply_rotary_2d(k, position_ids)
    ctx = attention(q, k, v, mask, i, past)
    o = F.linear(ctx, w[p + "attention.dense.weight"], w[p + "attention.dense.bias"])
    h = alpha * a + o
    m = F.layer_norm(h, (H,), w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
    u = F.linear(m, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])
    mlp = F.linear(gelu_tanh(u), w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])
    return alpha * m + mlp


def forward(w, cfg, ids, position_ids, mask, lora=None, prefix=None, prefix_projection=False):
    """Logits [B, S, V]. w: dict of HF keys → tensors (compute dtype); lora: dict(A=[..], B=[..], scaling,
    enable_lora=None|list); prefix: dict of prefix-encoder tensors (keys without the module prefix)."""
    E = w["transformer.word_embeddings.weight"]
    h = F.embedding(ids, E)
    past = None
    if prefix is not None:
        past = prefix_past(prefix_table(prefix, prefix_projection), ids.shape[0], cfg)
    for i in range(cfg["num_layers"]):
        h = block(w, i, h, position_ids, mask, cfg, lora, None if past is None else past[i])
    h = F.layer_norm(h, (cfg["hidden_size"],), w["transformer.final_layernorm.weight"],
                     w["transformer.final_layernorm.bias"], cfg["layernorm_epsilon"])
    return F.linear(h, E)                                              # tied lm_head


def lm_loss(logits, labels):
    """§5.1: shift by one, cross-entropy with ignore_index −100, mean over kept tokens (logits in ≥ fp32)."""
    work = torch.promote_types(logits.dtype, torch.float32)
    shift_logits = logits[:, :-1, :].to(work)
    shift_labels = labels[:, 1:]
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)


def parameter_shapes(cfg):
    """HF checkpoint keys and shapes of the base model (lm_head tied, listed separately by callers)."""
    H, F_, V = cfg["hidden_size"], cfg["inner_hidden_size"], cfg["vocab_size"]
    out = [("transformer.word_embeddings.weight", (V, H))]
    for i in range(cfg["num_layers"]):
        p = f"transformer.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (H,)), (p + "input_layernorm.bias", (H,)),
            (p + "attention.query_key_value.weight", (3 * H, H)), (p + "attention.query_key_value.bias", (3 * H,)),
            (p + "attention.dense.weight", (H, H)), (p + "attention.dense.bias", (H,)),
            (p + "post_attention_layernorm.weight", (H,)), (p + "post_attention_layernorm.bias", (H,)),
            (p + "mlp.dense_h_to_4h.weight", (F_, H)), (p + "mlp.dense_h_to_4h.bias", (F_,)),
            (p + "mlp.dense_4h_to_h.weight", (H, F_)), (p + "mlp.dense_4h_to_h.bias", (H,)),
        ]
    out += [("transformer.final_layernorm.weight", (H,)), ("transformer.final_layernorm.bias", (H,))]
    return out
