"""dev/memr2ckpt.py: memr2 model checkpoints (format in model.h) from Python, Llama family only.

Shared by the importers (dev/import_gguf.py, dev/import_hf.py), the PyTorch checks and the bench.
A checkpoint is int32 header[256] = {MAGIC, VERSION, V, maxT, L, NH, C, ...; [16] arch,
[17] n_kv_heads, [18] ffn, [19] rope_dim, [20] rope_base (float bits), [21] norm_eps (float bits),
[22] tied, [23] qkv_bias, [32..33] tokenizer_hash}, then the flat float32 parameters in
llama.h's LlamaParams order, every per-layer tensor stacked with L leading.
"""
import os
import struct

import numpy as np

MAGIC = 20260523
VERSION = 2
HEADER_INTS = 256
ARCH_LLAMA = 1

# llama.h LLAMA_TENSOR_NAMES, in the order of the flat array.
TENSOR_NAMES = ("wte", "attn_norm", "wq", "wk", "wv", "bq", "bk", "bv", "wo", "mlp_norm",
                "w_gate", "w_up", "w_down", "norm_f", "lm_head")

CONFIG_KEYS = ("V", "maxT", "L", "NH", "C", "n_kv_heads", "ffn", "rope_dim", "rope_base",
               "norm_eps", "tied", "qkv_bias", "tokenizer_hash")


def f32_bits(x):
    return struct.unpack("<i", struct.pack("<f", x))[0]


def bits_f32(i):
    return struct.unpack("<f", struct.pack("<i", i))[0]


def tensor_shapes(cfg):
    """name -> numpy shape (the layout of llama.h; size-0 tensors get shape (0,))."""
    V, L, C, F, NH, KV = (cfg[k] for k in ("V", "L", "C", "ffn", "NH", "n_kv_heads"))
    hs = C // NH
    Q, K = NH * hs, KV * hs
    bias = bool(cfg["qkv_bias"])
    return {
        "wte": (V, C), "attn_norm": (L, C), "wq": (L, Q, C), "wk": (L, K, C), "wv": (L, K, C),
        "bq": (L, Q) if bias else (0,), "bk": (L, K) if bias else (0,),
        "bv": (L, K) if bias else (0,), "wo": (L, C, Q), "mlp_norm": (L, C),
        "w_gate": (L, F, C), "w_up": (L, F, C), "w_down": (L, C, F), "norm_f": (C,),
        "lm_head": (0,) if cfg["tied"] else (V, C),
    }


def check_config(cfg, where):
    """The checks of llama.c llama_config_check, so a bad config fails here, not in C."""
    for k in CONFIG_KEYS:
        if k not in cfg:
            raise ValueError(f"{where}: config lacks {k}")
    V, T, L, C, NH, KV, F = (cfg[k] for k in ("V", "maxT", "L", "C", "NH", "n_kv_heads", "ffn"))
    ok = (1 <= V <= 1 << 24 and 1 <= T <= 1 << 17 and 1 <= L <= 256 and 1 <= C <= 1 << 14
          and 1 <= NH <= C and C % NH == 0 and 1 <= KV <= NH and NH % KV == 0
          and 1 <= F <= 1 << 16)
    if not ok:
        raise ValueError(f"{where}: unusable sizes V={V} maxT={T} L={L} C={C} NH={NH} "
                         f"n_kv_heads={KV} ffn={F} (limits in llama.c llama_config_check)")
    rd = cfg["rope_dim"]
    if rd < 0 or rd > C // NH or rd % 2:
        raise ValueError(f"{where}: rope_dim {rd} must be even and <= head size {C // NH}")
    if not (cfg["rope_base"] > 1 and np.isfinite(cfg["rope_base"])):
        raise ValueError(f"{where}: rope_base {cfg['rope_base']} must be > 1")
    if not 0 < cfg["norm_eps"] < 1:
        raise ValueError(f"{where}: norm_eps {cfg['norm_eps']} must be in (0, 1)")


def write_checkpoint(path, cfg, tensors):
    """cfg: dict with CONFIG_KEYS; tensors: name -> array of tensor_shapes(cfg)[name] (absent
    size-0 tensors may be omitted). Written to path.tmp, then renamed (like model.c)."""
    check_config(cfg, path)
    shapes = tensor_shapes(cfg)
    h = [0] * HEADER_INTS
    h[0], h[1] = MAGIC, VERSION
    h[2:7] = [cfg["V"], cfg["maxT"], cfg["L"], cfg["NH"], cfg["C"]]
    h[16:24] = [ARCH_LLAMA, cfg["n_kv_heads"], cfg["ffn"], cfg["rope_dim"],
                f32_bits(cfg["rope_base"]), f32_bits(cfg["norm_eps"]), int(cfg["tied"]),
                int(cfg["qkv_bias"])]
    th = int(cfg["tokenizer_hash"]) & 0xFFFFFFFFFFFFFFFF
    h[32], h[33] = struct.unpack("<ii", struct.pack("<Q", th))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", *h))
        for name in TENSOR_NAMES:
            shape = shapes[name]
            if int(np.prod(shape)) == 0:
                continue
            t = tensors.get(name)
            if t is None:
                raise ValueError(f"{path}: tensor {name} missing")
            t = np.asarray(t)
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{path}: tensor {name} has shape {t.shape}, expected {shape}")
            t = np.ascontiguousarray(t, dtype="<f4")
            if not np.isfinite(t).all():
                raise ValueError(f"{path}: tensor {name} has non-finite values")
            f.write(t.tobytes())
    os.replace(tmp, path)


def read_checkpoint(path):
    """(cfg dict, name -> float32 array); Llama checkpoints of version 2 only."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_INTS * 4)
        if len(raw) != HEADER_INTS * 4:
            raise ValueError(f"{path}: truncated header")
        h = struct.unpack(f"<{HEADER_INTS}i", raw)
        if h[0] != MAGIC or h[1] != VERSION or h[16] != ARCH_LLAMA:
            raise ValueError(f"{path}: not a memr2 v2 Llama checkpoint (magic {h[0]}, version "
                             f"{h[1]}, arch {h[16]})")
        cfg = dict(V=h[2], maxT=h[3], L=h[4], NH=h[5], C=h[6], n_kv_heads=h[17], ffn=h[18],
                   rope_dim=h[19], rope_base=bits_f32(h[20]), norm_eps=bits_f32(h[21]),
                   tied=h[22], qkv_bias=h[23],
                   tokenizer_hash=struct.unpack("<Q", struct.pack("<ii", h[32], h[33]))[0])
        check_config(cfg, path)
        shapes = tensor_shapes(cfg)
        flat = np.fromfile(f, dtype="<f4")
    need = sum(int(np.prod(s)) for s in shapes.values())
    if flat.size != need:
        raise ValueError(f"{path}: {flat.size} floats of parameters, the header needs {need}")
    out, o = {}, 0
    for name in TENSOR_NAMES:
        n = int(np.prod(shapes[name]))
        if n:
            out[name] = flat[o:o + n].reshape(shapes[name])
        o += n
    return cfg, out
