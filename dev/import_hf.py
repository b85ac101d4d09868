#!/usr/bin/env python3
"""dev/import_hf.py: a Hugging Face model folder (Llama, Qwen2) -> a memr2 checkpoint (version 2,
float32) and a tokenizer file beside it.

    /usr/bin/python3 dev/import_hf.py DIR -o out/NAME.bin [--max-t 2048]

DIR holds config.json, model.safetensors (or model.safetensors.index.json and its shards) and
tokenizer.json (+ tokenizer_config.json for bos/eos and the chat template), as downloaded from
the Hub, e.g. Qwen2.5-0.5B-Instruct or SmolLM2-360M-Instruct. Writes out/NAME.bin and
out/NAME.tok; the checkpoint records the tokenizer file's hash (dev/tokenizer_export.py).

Safetensors files are read here, without the safetensors package: an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data (F32, F16,
BF16 accepted). Hugging Face stores q/k already in the rotate_half convention of llama.h, so the
tensors are copied as they are, stacked over layers.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memr2ckpt  # noqa: E402


class HFImportError(ValueError):
    pass


# ---- safetensors -----------------------------------------------------------------------------

ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def read_safetensors_header(path):
    """{name: (dtype, shape, begin, end)} with absolute byte offsets, every field checked."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise HFImportError(f"{path}: truncated (no 8-byte header length)")
            n = int.from_bytes(head, "little")
            if n < 2 or n > size - 8 or n > 100 << 20:
                raise HFImportError(f"{path}: header length {n} does not fit a {size}-byte file")
            raw = f.read(n)
    except OSError as e:
        raise HFImportError(f"{path}: cannot read: {e.strerror}") from None
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFImportError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(hdr, dict):
        raise HFImportError(f"{path}: header is not a JSON object")
    base, out = 8 + n, {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name}"
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise HFImportError(f"{where}: header entry lacks dtype/shape/data_offsets")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in ST_DTYPES:
            raise HFImportError(f"{where}: dtype {dt!r}, this importer reads F32, F16, BF16")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise HFImportError(f"{where}: bad shape {shape!r} or data_offsets {offs!r}")
        b, en = offs
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(ST_DTYPES[dt]).itemsize
        if not 0 <= b <= en or en - b != need:
            raise HFImportError(f"{where}: data_offsets {offs} hold {en - b} bytes, shape "
                                f"{shape} of {dt} needs {need}")
        if base + en > size:
            raise HFImportError(f"{where}: data ends at byte {base + en}, past the end of the "
                                f"file ({size} bytes): truncated")
        out[name] = (dt, tuple(shape), base + b, base + en)
    return out


def load_tensor(path, entry):
    dt, shape, b, e = entry
    a = np.memmap(path, dtype=np.uint8, mode="r", offset=b, shape=(e - b,)) if e > b else \
        np.zeros(0, np.uint8)
    a = np.asarray(a).view(ST_DTYPES[dt])
    if dt == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    a = a.astype(np.float32).reshape(shape)
    if not np.isfinite(a).all():
        raise HFImportError(f"{path}: tensor has non-finite values")
    return a


def index_folder(d):
    """name -> (file, header entry) over the folder's safetensors (sharded or single)."""
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        try:
            with open(idx, encoding="utf-8") as f:
                wm = json.load(f).get("weight_map")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise HFImportError(f"{idx}: unreadable index ({e})") from None
        if not isinstance(wm, dict) or not wm:
            raise HFImportError(f"{idx}: no weight_map")
        files = sorted(set(wm.values()))
    else:
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        wm = None
        if not files:
            raise HFImportError(f"{d}: no *.safetensors files (PyTorch .bin is not read)")
    out = {}
    for fn in files:
        if not isinstance(fn, str) or os.sep in fn or fn.startswith("."):
            raise HFImportError(f"{idx}: bad shard name {fn!r}")
        p = os.path.join(d, fn)
        if not os.path.exists(p):
            raise HFImportError(f"{p}: shard named by the index is missing")
        for name, e in read_safetensors_header(p).items():
            if name in out:
                raise HFImportError(f"{p}: tensor {name} also in {out[name][0]}")
            out[name] = (p, e)
    if wm is not None:
        for name, fn in wm.items():
            if name not in out or out[name][0] != os.path.join(d, fn):
                raise HFImportError(f"{idx}: tensor {name} is not in {fn}")
    return out


# ---- config ----------------------------------------------------------------------------------

def read_config(d, max_t):
    p = os.path.join(d, "config.json")
    try:
        with open(p, encoding="utf-8") as f:
            c = json.load(f)
    except OSError as e:
        raise HFImportError(f"{p}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFImportError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(c, dict):
        raise HFImportError(f"{p}: not a JSON object")
    mt = c.get("model_type")
    if mt not in ("llama", "qwen2"):
        raise HFImportError(f"{p}: model_type {mt!r}; this importer reads 'llama' and 'qwen2'")

    def num(k, kind=int, default=None):
        v = c.get(k, default)
        if v is None:
            raise HFImportError(f"{p}: missing {k}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and
                                                                        not isinstance(v, int)):
            raise HFImportError(f"{p}: {k} is {v!r}, expected {kind.__name__}")
        return kind(v)

    C, L, NH = num("hidden_size"), num("num_hidden_layers"), num("num_attention_heads")
    KV = num("num_key_value_heads", int, NH)
    if NH < 1 or C % NH:
        raise HFImportError(f"{p}: num_attention_heads {NH} does not divide hidden_size {C}")
    if c.get("head_dim") not in (None, C // NH):
        raise HFImportError(f"{p}: head_dim {c['head_dim']} != hidden_size / heads {C // NH}")
    if c.get("hidden_act", "silu") != "silu":
        raise HFImportError(f"{p}: hidden_act {c.get('hidden_act')!r}, memr2 has SwiGLU (silu)")
    rs = c.get("rope_scaling")
    if rs is not None and not (isinstance(rs, dict) and rs.get("rope_type", rs.get("type")) in
                               ("default", None)):
        raise HFImportError(f"{p}: rope_scaling {rs!r} is not in memr2's RoPE (llama.h)")
    if c.get("mlp_bias"):
        raise HFImportError(f"{p}: mlp_bias is not supported")
    bias = True if mt == "qwen2" else bool(c.get("attention_bias", False))
    frac = num("partial_rotary_factor", float, 1.0)
    cfg = dict(V=num("vocab_size"), maxT=max_t, L=L, C=C, NH=NH, n_kv_heads=KV,
               ffn=num("intermediate_size"), rope_dim=int(C // NH * frac) // 2 * 2,
               rope_base=float(np.float32(num("rope_theta", float, 10000.0))),
               norm_eps=float(np.float32(num("rms_norm_eps", float, 1e-6))),
               tied=int(bool(c.get("tie_word_embeddings", False))), qkv_bias=int(bias),
               tokenizer_hash=0)
    memr2ckpt.check_config(cfg, p)
    mp = c.get("max_position_embeddings")
    if isinstance(mp, int) and max_t > mp:
        print(f"import_hf: warning: --max-t {max_t} exceeds max_position_embeddings {mp}",
              file=sys.stderr)
    return cfg


# ---- tensors ---------------------------------------------------------------------------------

def read_tensors(d, cfg):
    idx = index_folder(d)
    shapes = memr2ckpt.tensor_shapes(cfg)
    used = set()

    def get(name, shape):
        if name not in idx:
            raise HFImportError(f"{d}: missing tensor {name}")
        path, e = idx[name]
        if e[1] != tuple(shape):
            raise HFImportError(f"{path}: tensor {name} has shape {list(e[1])}, config.json "
                                f"implies {list(shape)}")
        used.add(name)
        try:
            return load_tensor(path, e)
        except HFImportError as err:
            raise HFImportError(f"{err} ({name})") from None

    V, C = cfg["V"], cfg["C"]
    out = {"wte": get("model.embed_tokens.weight", (V, C)),
           "norm_f": get("model.norm.weight", (C,))}
    if not cfg["tied"]:
        out["lm_head"] = get("lm_head.weight", (V, C))
    elif "lm_head.weight" in idx:
        used.add("lm_head.weight")  # some tied exports still carry a copy; the embedding rules
    per = {"attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
           "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
           "wo": "self_attn.o_proj.weight", "mlp_norm": "post_attention_layernorm.weight",
           "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight",
           "w_down": "mlp.down_proj.weight"}
    if cfg["qkv_bias"]:
        per.update(bq="self_attn.q_proj.bias", bk="self_attn.k_proj.bias",
                   bv="self_attn.v_proj.bias")
    for m, hf in per.items():
        out[m] = np.stack([get(f"model.layers.{l}.{hf}", shapes[m][1:])
                           for l in range(cfg["L"])])
    extra = sorted(n for n in set(idx) - used if not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise HFImportError(f"{d}: unexpected tensors {extra[:5]} (not a {cfg['L']}-layer "
                            "Llama/Qwen2 without extras?)")
    return out


def import_hf(d, out_bin, max_t=2048, out_tok=None):
    if not os.path.isdir(d):
        raise HFImportError(f"{d}: not a folder")
    cfg = read_config(d, max_t)
    tensors = read_tensors(d, cfg)
    tj = os.path.join(d, "tokenizer.json")
    if not os.path.exists(tj):
        raise HFImportError(f"{tj}: missing (the tokenizer is needed beside the weights)")
    out_tok = out_tok or os.path.splitext(out_bin)[0] + ".tok"
    import tokenizer_export  # dev/tokenizer_export.py (the tokenizer file format of bpe.h)
    try:
        cfg["tokenizer_hash"] = tokenizer_export.export_from_hf(tj, out_tok)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise HFImportError(f"{tj}: {e}") from None
    memr2ckpt.write_checkpoint(out_bin, cfg, tensors)
    return cfg


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="Hugging Face model folder")
    ap.add_argument("-o", "--out", required=True, help="checkpoint to write (NAME.bin)")
    ap.add_argument("--tok", help="tokenizer file to write (default: NAME.tok beside --out)")
    ap.add_argument("--max-t", type=int, default=2048, help="positions the checkpoint allows")
    a = ap.parse_args(argv[1:])
    try:
        cfg = import_hf(a.dir, a.out, a.max_t, a.tok)
    except (HFImportError, ValueError, OSError) as e:
        print(f"import_hf: {e}", file=sys.stderr)
        return 1
    print(f"import_hf: wrote {a.out} (V={cfg['V']} L={cfg['L']} C={cfg['C']} NH={cfg['NH']} "
          f"KV={cfg['n_kv_heads']} F={cfg['ffn']} tied={cfg['tied']} bias={cfg['qkv_bias']} "
          f"maxT={cfg['maxT']}) tokenizer hash {cfg['tokenizer_hash']:016x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
