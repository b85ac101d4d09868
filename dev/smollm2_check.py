#!/usr/bin/env python3
"""dev/smollm2_check.py: the PyTorch side of tests/test_smollm2.c (the real-model check).

    /usr/bin/python3 dev/smollm2_check.py CHECKPOINT REQUESTS RESULTS

Runs dev/llama_torch.py in float64 on the weights of a memr2 checkpoint (the dequantised
SmolLM2 that `make smollm2` writes: the very floats the C model reads). REQUESTS has one request
per line, token ids made by the C tokenizer:
    logp ID ID ...              -> "logp" and log p(ID[t+1] | ID[..t]) for every t
    greedy N STOP ID ID ...     -> "greedy", the greedy continuation (at most N tokens, ending at
                                   token STOP), then "margin" and the smallest top-1 minus top-2
                                   logit gap met on the way (how close to a tie the C model was)
RESULTS gets one line per request.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_torch as lt  # noqa: E402
import memr2ckpt  # noqa: E402


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    cfg, t = memr2ckpt.read_checkpoint(argv[1])
    hc, W = lt.from_memr2_config(cfg), lt.memr2_to_hf(cfg, t, torch.float64)
    del t
    out = []
    with open(argv[2]) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "logp":
                ids = torch.tensor([[int(x) for x in w[1:]]])
                lp = lt.target_logp(hc, W, ids)[0]
                out.append("logp " + " ".join(f"{x:.17g}" for x in lp.tolist()))
            elif w[0] == "greedy":
                n, stop, ids = int(w[1]), int(w[2]), [int(x) for x in w[3:]]
                toks, margins = lt.greedy(hc, W, ids, n, stop=(stop,))
                out.append("greedy " + " ".join(map(str, toks)) +
                           f" margin {min(margins):.6g}")
            else:
                print(f"smollm2_check: {argv[2]}: unknown request {w[0]!r}", file=sys.stderr)
                return 1
    with open(argv[3], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
