#!/usr/bin/python3
"""dev/reference.py: the PyTorch twin of model.c, for the live cross-check and the benchmark.

  /usr/bin/python3 dev/reference.py check DIR
      DIR/model.bin  a memr2 checkpoint (model.h: int32 header[256] + float32 parameters)
      DIR/batch.bin  int32 B, T; int32 tokens[B*T], targets[B*T]; float32 dlogp[B*T],
                     dentropy[B*T]; float32 lr, beta1, beta2, eps, weight_decay, grad_clip
    writes DIR/out.bin, all float64: logp[B*T], entropy[B*T], grads[nparams] (of
    sum dlogp*logp + dentropy*entropy, rows with target < 0 left out), grad_norm[3], and the
    parameters after 3 AdamW steps on that loss (same clip, same AdamW; decay on wte, wpe, qkvw,
    attprojw, fcw, fcprojw). Computed in float64, so it is the exact answer the float32 C code
    is compared against.

  /usr/bin/python3 dev/reference.py --bench [-V 512 -T 128 -L 4 -NH 4 -C 128 -B 16]
    float32, torch.set_num_threads(cores); prints `bench torch_train_tok_s X` (forward +
    backward + AdamW) and `bench torch_decode_tok_s X` (B prompts of T/2 tokens, T/2 new
    tokens, KV cache), the same work dev/bench_model.c times.
"""
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
DECAY = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}
MAGIC, VERSION = 20260523, 2


def shapes(V, T, L, NH, C):
    return {"wte": (V, C), "wpe": (T, C), "ln1w": (L, C), "ln1b": (L, C),
            "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C), "attprojw": (L, C, C),
            "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C), "fcw": (L, 4 * C, C),
            "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C), "lnfw": (C,),
            "lnfb": (C,)}


def split_flat(flat, cfg, dtype):
    out, off = {}, 0
    for name in NAMES:
        shp = shapes(*cfg)[name]
        n = int(np.prod(shp))
        out[name] = torch.tensor(flat[off:off + n], dtype=dtype).reshape(shp).requires_grad_(True)
        off += n
    assert off == len(flat), (off, len(flat))
    return out


def hidden(P, tokens, cfg):
    """Final LayerNorm output (B, T, C); GPT-2 pre-LN blocks as in model.c."""
    V, maxT, L, NH, C = cfg
    B, T = tokens.shape
    hs = C // NH
    x = P["wte"][tokens] + P["wpe"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], eps=1e-5)
        qkv = h @ P["qkvw"][l].T + P["qkvb"][l]
        q, k, v = (t.reshape(B, T, NH, hs).transpose(1, 2) for t in qkv.split(C, dim=-1))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ P["attprojw"][l].T + P["attprojb"][l]
        h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], eps=1e-5)
        h = F.gelu(h @ P["fcw"][l].T + P["fcb"][l], approximate="tanh")
        x = x + h @ P["fcprojw"][l].T + P["fcprojb"][l]
    return F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], eps=1e-5)


def logp_entropy(P, tokens, targets, cfg):
    lp = torch.log_softmax(hidden(P, tokens, cfg) @ P["wte"].T, dim=-1)
    valid = targets >= 0
    logp = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    ent = -(lp.exp() * lp).sum(-1) * valid
    return logp, ent


def read_checkpoint(path):
    with open(path, "rb") as f:
        header = struct.unpack("256i", f.read(1024))
        assert header[0] == MAGIC and header[1] in (1, VERSION) and header[16] == 0, f"{path}: not a memr2 GPT-2 checkpoint"
        cfg = tuple(header[2:7])
        flat = np.frombuffer(f.read(), dtype=np.float32)
    return cfg, flat


def check(d):
    torch.set_num_threads(1)
    cfg, flat = read_checkpoint(os.path.join(d, "model.bin"))
    with open(os.path.join(d, "batch.bin"), "rb") as f:
        B, T = struct.unpack("2i", f.read(8))
        n = B * T
        tokens = torch.tensor(np.frombuffer(f.read(4 * n), np.int32).astype(np.int64)).reshape(B, T)
        targets = torch.tensor(np.frombuffer(f.read(4 * n), np.int32).astype(np.int64)).reshape(B, T)
        dlogp = torch.tensor(np.frombuffer(f.read(4 * n), np.float32), dtype=torch.float64).reshape(B, T)
        dent = torch.tensor(np.frombuffer(f.read(4 * n), np.float32), dtype=torch.float64).reshape(B, T)
        lr, b1, b2, eps, wd, clip = struct.unpack("6f", f.read(24))
    P = split_flat(flat.astype(np.float64), cfg, torch.float64)
    groups = [{"params": [P[k] for k in NAMES if k in DECAY], "weight_decay": wd},
              {"params": [P[k] for k in NAMES if k not in DECAY], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    outs, norms = [], []
    for step in range(3):
        opt.zero_grad(set_to_none=False)
        logp, ent = logp_entropy(P, tokens, targets, cfg)
        loss = (dlogp * logp).sum() + (dent * ent).sum()
        loss.backward()
        if step == 0:
            outs += [logp.detach().reshape(-1), ent.detach().reshape(-1)]
            outs += [torch.cat([P[k].grad.reshape(-1) for k in NAMES])]
        if clip > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_([P[k] for k in NAMES], clip)))
        else:
            norms.append(float(torch.cat([P[k].grad.reshape(-1) for k in NAMES]).norm()))
        opt.step()
    outs += [torch.tensor(norms, dtype=torch.float64)]
    outs += [torch.cat([P[k].detach().reshape(-1) for k in NAMES])]
    with open(os.path.join(d, "out.bin"), "wb") as f:
        for t in outs:
            f.write(t.numpy().astype(np.float64).tobytes())


def bench(argv):
    opts = {"-V": 512, "-T": 128, "-L": 4, "-NH": 4, "-C": 128, "-B": 16}
    for i in range(0, len(argv) - 1, 2):
        if argv[i] in opts:
            opts[argv[i]] = int(argv[i + 1])
    V, T, L, NH, C, B = (opts[k] for k in ("-V", "-T", "-L", "-NH", "-C", "-B"))
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    cfg = (V, T, L, NH, C)
    P = {k: (torch.randn(s) * 0.02).requires_grad_(True) for k, s in shapes(*cfg).items()}
    for k in ("ln1w", "ln2w", "lnfw"):
        P[k] = torch.ones(shapes(*cfg)[k], requires_grad=True)
    opt = torch.optim.AdamW(list(P.values()), lr=1e-4)
    tokens = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))

    def train_step():
        opt.zero_grad()
        logp, _ = logp_entropy(P, tokens, targets, cfg)
        (-logp.mean()).backward()
        opt.step()

    def timed(fn, min_s=1.0, windows=3):
        """Seconds per call: the best of `windows` windows of >= min_s (as bench_model.c)."""
        fn()  # warm up
        best = float("inf")
        for _ in range(windows):
            n, t0 = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_s:
                    break
            best = min(best, dt / n)
        return best

    print(f"bench torch_train_tok_s {B * T / timed(train_step):.1f}", flush=True)

    Tp, new = T // 2, T - T // 2
    hs = C // NH
    prompts = torch.randint(0, V, (B, Tp))

    @torch.no_grad()
    def decode():
        kc = torch.zeros(L, B, NH, T, hs)
        vc = torch.zeros(L, B, NH, T, hs)
        g = torch.Generator().manual_seed(1)

        def step(tok, pos0):  # tok (B, n) at positions pos0..pos0+n-1 -> last logits (B, V)
            n = tok.shape[1]
            x = P["wte"][tok] + P["wpe"][pos0:pos0 + n]
            end = pos0 + n
            mask = torch.ones(n, end, dtype=torch.bool).tril(diagonal=pos0)
            for l in range(L):
                h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], eps=1e-5)
                qkv = h @ P["qkvw"][l].T + P["qkvb"][l]
                q, k, v = (t.reshape(B, n, NH, hs).transpose(1, 2) for t in qkv.split(C, -1))
                kc[l, :, :, pos0:end] = k
                vc[l, :, :, pos0:end] = v
                att = (q @ kc[l, :, :, :end].transpose(-2, -1)) / math.sqrt(hs)
                att = att.masked_fill(~mask, float("-inf")).softmax(-1)
                y = (att @ vc[l, :, :, :end]).transpose(1, 2).reshape(B, n, C)
                x = x + y @ P["attprojw"][l].T + P["attprojb"][l]
                h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], eps=1e-5)
                x = x + F.gelu(h @ P["fcw"][l].T + P["fcb"][l], approximate="tanh") @ \
                    P["fcprojw"][l].T + P["fcprojb"][l]
            x = F.layer_norm(x[:, -1], (C,), P["lnfw"], P["lnfb"], eps=1e-5)
            return x @ P["wte"].T

        logits = step(prompts, 0)
        for k in range(new):
            probs = logits.softmax(-1)
            tok = torch.multinomial(probs, 1, generator=g)
            if k + 1 < new:
                logits = step(tok, Tp + k)

    print(f"bench torch_decode_tok_s {B * new / timed(decode):.1f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--bench":
        bench(sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
