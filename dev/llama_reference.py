#!/usr/bin/python3
"""dev/llama_reference.py: the PyTorch twin of llama_cpu.c, written from the equations in llama.h
(it does not import transformers), for tests/test_llama.c.

  /usr/bin/python3 dev/llama_reference.py check DIR
      DIR/model.bin  a memr2 Llama checkpoint (model.h: int32 header[256], version 2, arch 1,
                     then the float32 parameters in llama.h's LlamaParams order)
      DIR/batch.bin  int32 B, T; int32 tokens[B*T], targets[B*T]; float32 dlogp[B*T],
                     dentropy[B*T]; float32 lr, beta1, beta2, eps, weight_decay, grad_clip
    writes DIR/out.bin, all float64: logp[B*T], entropy[B*T], grads[nparams] (of
    sum dlogp*logp + dentropy*entropy; rows with target < 0 left out), grad_norm[3], and the
    parameters after 3 AdamW steps on that loss (global-norm clip, decay on the matrices:
    LLAMA_TENSOR_DECAY). Everything in float64: the exact answer the float32 C code is held to.
"""
import os
import struct
import sys

import numpy as np
import torch

NAMES = ["wte", "attn_norm", "wq", "wk", "wv", "bq", "bk", "bv", "wo", "mlp_norm",
         "w_gate", "w_up", "w_down", "norm_f", "lm_head"]
DECAY = {"wte", "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "lm_head"}
MAGIC, VERSION, ARCH_LLAMA = 20260523, 2, 1


def read_checkpoint(path):
    with open(path, "rb") as f:
        h = struct.unpack("256i", f.read(1024))
        if h[0] != MAGIC or h[1] != VERSION or h[16] != ARCH_LLAMA:
            sys.exit(f"{path}: not a memr2 version-2 Llama checkpoint")
        fl = struct.unpack("2f", struct.pack("2i", h[20], h[21]))
        cfg = dict(V=h[2], maxT=h[3], L=h[4], NH=h[5], C=h[6], KV=h[17], F=h[18],
                   rope_dim=h[19], rope_base=fl[0], eps=fl[1], tied=h[22], bias=h[23])
        flat = np.frombuffer(f.read(), dtype=np.float32)
    return cfg, flat


def shapes(c):
    V, L, C, F = c["V"], c["L"], c["C"], c["F"]
    hs = C // c["NH"]
    Q, KVd = c["NH"] * hs, c["KV"] * hs
    b = 1 if c["bias"] else 0
    return {"wte": (V, C), "attn_norm": (L, C), "wq": (L, Q, C), "wk": (L, KVd, C),
            "wv": (L, KVd, C), "bq": (b * L, Q), "bk": (b * L, KVd), "bv": (b * L, KVd),
            "wo": (L, C, Q), "mlp_norm": (L, C), "w_gate": (L, F, C), "w_up": (L, F, C),
            "w_down": (L, C, F), "norm_f": (C,), "lm_head": (0 if c["tied"] else V, C)}


def split_flat(flat, c):
    out, off = {}, 0
    for name in NAMES:
        shp = shapes(c)[name]
        n = int(np.prod(shp))
        out[name] = torch.tensor(flat[off:off + n].astype(np.float64)).reshape(shp)
        out[name].requires_grad_(True)
        off += n
    if off != len(flat):
        sys.exit(f"checkpoint holds {len(flat)} floats, the config needs {off}")
    return out


def rmsnorm(x, g, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g


def rope(x, c):
    """x (B, H, T, hs): llama.h's rotate_half on the first rope_dim channels of each head."""
    rd = c["rope_dim"]
    if rd == 0:
        return x
    T, h2 = x.shape[2], rd // 2
    i = torch.arange(h2, dtype=torch.float64)
    theta = float(c["rope_base"]) ** (-2.0 * i / rd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2, rest = x[..., :h2], x[..., h2:rd], x[..., rd:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def logits_of(P, tokens, c):
    B, T = tokens.shape
    C, NH, KV, eps = c["C"], c["NH"], c["KV"], c["eps"]
    hs = C // NH
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    x = P["wte"][tokens]
    for l in range(c["L"]):
        h = rmsnorm(x, P["attn_norm"][l], eps)
        q = h @ P["wq"][l].T
        k = h @ P["wk"][l].T
        v = h @ P["wv"][l].T
        if c["bias"]:
            q, k, v = q + P["bq"][l], k + P["bk"][l], v + P["bv"][l]
        q = rope(q.reshape(B, T, NH, hs).transpose(1, 2), c)
        k = rope(k.reshape(B, T, KV, hs).transpose(1, 2), c)
        v = v.reshape(B, T, KV, hs).transpose(1, 2)
        # grouped-query attention: query head j reads key/value head j // (NH // KV)
        k = k.repeat_interleave(NH // KV, dim=1)
        v = v.repeat_interleave(NH // KV, dim=1)
        att = (q @ k.transpose(-2, -1)) / (hs ** 0.5)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, NH * hs)
        x = x + y @ P["wo"][l].T
        h = rmsnorm(x, P["mlp_norm"][l], eps)
        a, u = h @ P["w_gate"][l].T, h @ P["w_up"][l].T
        x = x + (torch.nn.functional.silu(a) * u) @ P["w_down"][l].T
    x = rmsnorm(x, P["norm_f"], eps)
    return x @ (P["wte"] if c["tied"] else P["lm_head"]).T


def logp_entropy(P, tokens, targets, c):
    lp = torch.log_softmax(logits_of(P, tokens, c), dim=-1)
    valid = targets >= 0
    logp = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    ent = -(lp.exp() * lp).sum(-1) * valid
    return logp, ent


def check(d):
    torch.set_num_threads(1)
    c, flat = read_checkpoint(os.path.join(d, "model.bin"))
    with open(os.path.join(d, "batch.bin"), "rb") as f:
        B, T = struct.unpack("2i", f.read(8))
        n = B * T

        def ints():
            return torch.tensor(np.frombuffer(f.read(4 * n), np.int32).astype(np.int64)).reshape(B, T)

        def floats():
            return torch.tensor(np.frombuffer(f.read(4 * n), np.float32).astype(np.float64)).reshape(B, T)
        tokens, targets, dlogp, dent = ints(), ints(), floats(), floats()
        lr, b1, b2, eps, wd, clip = struct.unpack("6f", f.read(24))
    P = split_flat(flat, c)
    live = [k for k in NAMES if P[k].numel() > 0]
    groups = [{"params": [P[k] for k in live if k in DECAY], "weight_decay": wd},
              {"params": [P[k] for k in live if k not in DECAY], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    outs, norms = [], []
    for step in range(3):
        opt.zero_grad(set_to_none=False)
        logp, ent = logp_entropy(P, tokens, targets, c)
        loss = (dlogp * logp).sum() + (dent * ent).sum()
        loss.backward()
        grads = [P[k].grad if P[k].grad is not None else torch.zeros_like(P[k]) for k in NAMES]
        if step == 0:
            outs += [logp.detach().reshape(-1), ent.detach().reshape(-1)]
            outs += [torch.cat([g.reshape(-1) for g in grads])]
        norm = float(torch.cat([g.reshape(-1) for g in grads]).norm())
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([P[k] for k in live], clip)
        norms.append(norm)
        opt.step()
    outs += [torch.tensor(norms, dtype=torch.float64)]
    outs += [torch.cat([P[k].detach().reshape(-1) for k in NAMES])]
    with open(os.path.join(d, "out.bin"), "wb") as f:
        for t in outs:
            f.write(t.numpy().astype(np.float64).tobytes())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
