#!/usr/bin/env python3
"""dev/bench_smollm2.py: the PyTorch side of dev/bench_smollm2.c, on the same dequantised
SmolLM2-135M weights (out/smollm2.bin) and the same shapes, float32, all cores.

    /usr/bin/python3 dev/bench_smollm2.py [--ckpt out/smollm2.bin] [--only prefill|decode|train]

prints `bench torch_smollm2_prefill_tok_s X`, `..._decode_tok_s X`, `..._train_tok_s X` and
`bench torch_smollm2_PART_maxrss_mb X` (getrusage of this process). The model is
dev/llama_torch.py (Hugging Face's equations, a KV cache for decoding); training is autograd +
torch.optim.AdamW. Each figure is the best of a few timed calls after one warm-up call.
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_torch as lt  # noqa: E402
import memr2ckpt  # noqa: E402

PRE_B, PRE_T, DEC_B, DEC_P, DEC_N, TR_B, TR_T = 4, 128, 16, 32, 32, 4, 64


def best_of(reps, fn):
    best = float("inf")
    for r in range(reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if r > 0:
            best = min(best, dt)
    return best


def prefill(hc, W, g):
    tok = torch.randint(0, hc["V"], (PRE_B, PRE_T), generator=g)

    def run():
        with torch.no_grad():
            # the C side computes the head for the last position only; so does this
            logits, _ = lt.forward(hc, W, tok, last_only=True)
            return logits.log_softmax(-1)
    return PRE_B * PRE_T / best_of(4, run)


def decode(hc, W, g):
    prompts = torch.randint(0, hc["V"], (DEC_B, DEC_P), generator=g)

    def run():
        with torch.no_grad():
            logits, cache = lt.forward(hc, W, prompts)
            last = logits[:, -1]
            for _ in range(DEC_N):
                nxt = torch.multinomial(last.softmax(-1), 1, generator=g)
                logits, cache = lt.forward(hc, W, nxt, cache)
                last = logits[:, -1]
    return DEC_B * DEC_N / best_of(3, run)


def train(hc, W, g):
    params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    tok = torch.randint(0, hc["V"], (TR_B, TR_T), generator=g)
    tgt = torch.randint(0, hc["V"], (TR_B, TR_T), generator=g)

    def run():
        logits, _ = lt.forward(hc, params, tok)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, hc["V"]), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
    return TR_B * TR_T / best_of(3, run)


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="out/smollm2.bin")
    ap.add_argument("--only", choices=("prefill", "decode", "train"))
    a = ap.parse_args(argv[1:])
    torch.set_num_threads(os.cpu_count() or 1)
    cfg, t = memr2ckpt.read_checkpoint(a.ckpt)
    hc, W = lt.from_memr2_config(cfg), lt.memr2_to_hf(cfg, t, torch.float32)
    del t
    g = torch.Generator().manual_seed(1)
    parts = [a.only] if a.only else ["prefill", "decode", "train"]
    for p in parts:
        v = {"prefill": prefill, "decode": decode, "train": train}[p](hc, W, g)
        print(f"bench torch_smollm2_{p}_tok_s {v:.1f}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"bench torch_smollm2_{a.only or 'all'}_maxrss_mb {rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
