#!/usr/bin/env python3
"""dev/import_check.py: fixtures and float64 references for tests/test_import.c.

    /usr/bin/python3 dev/import_check.py DIR

Writes into DIR (an empty temporary folder made by the test):
  * tiny random models, each with a reference: hf_llama/ (Llama, tied, no bias, one BF16 +
    F32 safetensors file), hf_qwen2/ (Qwen2, untied, q/k/v biases, F16, sharded with an index),
    tiny.gguf (llama GGUF the way llama.cpp writes it: q/k rows permuted, Q8_0 embedding, Q4_1 /
    Q4_0 / F16 / BF16 matrices, F32 norms). Each is imported (dev/import_hf.py,
    dev/import_gguf.py) to NAME.bin + NAME.tok, and NAME.ref holds what the C test compares:
        cfg V L C NH KV F tied qkv_bias rope_dim rope_base norm_eps
        B T
        B*T token ids
        B*(T-1) log p(token[t+1] | tokens[..t]) from dev/llama_torch.py in float64 on the
        source tensors (Hugging Face names and orientation; for the GGUF, the values the
        `gguf` package's own dequantiser gives)
  * broken inputs bad_*/ and bad_*.gguf, listed in DIR/bad.txt as "KIND PATH EXPECTED" lines:
    the test runs the importer on each and wants a non-zero exit and a message naming PATH and
    containing EXPECTED.
The tokenizer is a tiny byte-level BPE written here (256 byte tokens, a few merges, ChatML
special tokens), in tokenizer.json form and as GGUF tokenizer.ggml.* fields.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import import_gguf  # noqa: E402
import import_hf  # noqa: E402
import llama_torch as lt  # noqa: E402
import tokenizer_export  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
            "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
B, T = 2, 12


def tokenizer_vocab():
    """ids: specials, then the 256 byte tokens (GPT-2 byte-to-unicode strings), then merges."""
    toks = SPECIALS + [tokenizer_export.bytes_to_unicode()[b] for b in range(256)]
    toks += [a + b for a, b in MERGES]
    return toks


def write_hf_tokenizer(d):
    toks = tokenizer_vocab()
    vocab = {t: i for i, t in enumerate(toks) if i >= len(SPECIALS)}
    tj = {"version": "1.0", "normalizer": None,
          "added_tokens": [{"id": i, "content": s, "special": True, "single_word": False,
                            "lstrip": False, "rstrip": False, "normalized": False}
                           for i, s in enumerate(SPECIALS)],
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                    "merges": [f"{a} {b}" for a, b in MERGES]}}
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                   "chat_template": TEMPLATE}, f)


def random_hf(rng, V, L, C, NH, KV, F, bias, tied):
    """Hugging Face named float64 tensors of a random model (norm gains near 1)."""
    hs = C // NH
    r = lambda *s: rng.normal(0, 0.5 / np.sqrt(s[-1]), s) if len(s) > 1 else \
        1 + 0.1 * rng.normal(size=s)
    W = {"model.embed_tokens.weight": rng.normal(0, 1.0, (V, C)), "model.norm.weight": r(C)}
    if not tied:
        W["lm_head.weight"] = r(V, C)
    for l in range(L):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = r(C)
        W[p + "self_attn.q_proj.weight"] = r(NH * hs, C)
        W[p + "self_attn.k_proj.weight"] = r(KV * hs, C)
        W[p + "self_attn.v_proj.weight"] = r(KV * hs, C)
        if bias:
            for n, m in (("q", NH), ("k", KV), ("v", KV)):
                W[p + f"self_attn.{n}_proj.bias"] = 0.3 * rng.normal(size=m * hs)
        W[p + "self_attn.o_proj.weight"] = r(C, NH * hs)
        W[p + "post_attention_layernorm.weight"] = r(C)
        W[p + "mlp.gate_proj.weight"] = r(F, C)
        W[p + "mlp.up_proj.weight"] = r(F, C)
        W[p + "mlp.down_proj.weight"] = r(C, F)
    return W


# ---- safetensors writing (the format dev/import_hf.py reads) ---------------------------------

def st_encode(a, dt):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dt == "F32":
        return a.astype("<f4"), a
    if dt == "F16":
        h = a.astype("<f2")
        return h, h.astype(np.float64)
    # BF16: round to nearest even on the top 16 bits
    u = a.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
    return u, (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_safetensors(path, tensors, dtypes):
    """tensors: name -> float64 array; dtypes: name -> F32/F16/BF16. Returns the values as
    stored (float64), which the reference must use."""
    hdr, blobs, stored, off = {"__metadata__": {"format": "pt"}}, [], {}, 0
    for name, a in tensors.items():
        raw, back = st_encode(a, dtypes(name))
        b = raw.tobytes()
        hdr[name] = {"dtype": dtypes(name), "shape": list(a.shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        stored[name] = back.reshape(a.shape)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return stored


def write_hf(d, W, cfg, dtypes, shards=1):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    write_hf_tokenizer(d)
    names = list(W)
    if shards == 1:
        return write_safetensors(os.path.join(d, "model.safetensors"), W, dtypes)
    stored, wm = {}, {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: W[n] for n in names[s::shards]}
        stored.update(write_safetensors(os.path.join(d, fn), part, dtypes))
        wm.update({n: fn for n in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)
    return stored


# ---- GGUF writing (llama.cpp's conventions) --------------------------------------------------

def write_gguf(path, W, hc, qtypes, drop=()):
    """Returns the dequantised values in Hugging Face orientation (the reference's weights)."""
    import gguf
    Q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(hc["L"])
    w.add_context_length(256)
    w.add_embedding_length(hc["C"])
    w.add_feed_forward_length(hc["F"])
    w.add_head_count(hc["NH"])
    w.add_head_count_kv(hc["KV"])
    w.add_rope_freq_base(hc["rope_base"])
    w.add_layer_norm_rms_eps(hc["norm_eps"])
    w.add_rope_dimension_count(hc["hs"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    toks = tokenizer_vocab()
    w.add_token_list(toks)
    w.add_token_types([3 if i < len(SPECIALS) else 1 for i in range(len(toks))])
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(TEMPLATE)
    names = {"model.embed_tokens.weight": "token_embd.weight",
             "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
           "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
           "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    stored = {}
    for hf, a in W.items():
        if hf.startswith("model.layers."):
            l, rest = hf[len("model.layers."):].split(".", 1)
            g = f"blk.{l}.{per[rest.rsplit('.', 1)[0]]}.weight"
        else:
            g = names[hf]
        a32 = a.astype(np.float32)
        if g.endswith("attn_q.weight"):
            a32 = import_gguf.permute_rope(a32, hc["NH"])
        elif g.endswith("attn_k.weight"):
            a32 = import_gguf.permute_rope(a32, hc["KV"])
        qt = qtypes(g) if a.ndim == 2 else Q.F32
        data = gguf.quants.quantize(a32, qt) if qt != Q.F32 else a32
        back = gguf.quants.dequantize(data, qt).reshape(a.shape).astype(np.float64)
        if g.endswith("attn_q.weight"):
            back = import_gguf.unpermute_rope(back, hc["NH"])
        elif g.endswith("attn_k.weight"):
            back = import_gguf.unpermute_rope(back, hc["KV"])
        stored[hf] = back
        if g not in drop:
            w.add_tensor(g, data, raw_dtype=qt if qt != Q.F32 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


# ---- references ------------------------------------------------------------------------------

def write_ref(path, hc, stored, tokens):
    W = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in stored.items()}
    lp = lt.target_logp(hc, W, torch.from_numpy(tokens)).numpy()
    with open(path, "w") as f:
        f.write(f"cfg {hc['V']} {hc['L']} {hc['C']} {hc['NH']} {hc['KV']} {hc['F']} "
                f"{int(hc['tied'])} {int(hc['qkv_bias'])} {hc['rope_dim']} "
                f"{hc['rope_base']!r} {hc['norm_eps']!r}\n{B} {T}\n")
        f.write(" ".join(str(int(t)) for t in tokens.reshape(-1)) + "\n")
        f.write(" ".join(f"{x:.17g}" for x in lp.reshape(-1)) + "\n")


def hf_config_json(mt, V, L, C, NH, KV, F, tied, base, eps, bias=None):
    c = {"model_type": mt, "architectures": ["LlamaForCausalLM" if mt == "llama" else
                                             "Qwen2ForCausalLM"],
         "vocab_size": V, "hidden_size": C, "num_hidden_layers": L, "num_attention_heads": NH,
         "num_key_value_heads": KV, "intermediate_size": F, "rope_theta": base,
         "rms_norm_eps": eps, "tie_word_embeddings": tied, "hidden_act": "silu",
         "max_position_embeddings": 256, "rope_scaling": None}
    if bias is not None:
        c["attention_bias"] = bias
    return c


def make_good(d, rng):
    V, L, C, NH, KV, F = 272, 2, 32, 4, 2, 64
    toks = rng.integers(0, V, size=(B, T))
    # (1) Llama, tied, no bias; BF16 matrices, F32 norms, one file
    W = random_hf(rng, V, L, C, NH, KV, F, bias=False, tied=True)
    base, eps = 10000.0, 1e-5
    cj = hf_config_json("llama", V, L, C, NH, KV, F, True, base, eps, bias=False)
    stored = write_hf(os.path.join(d, "hf_llama"), W, cj,
                      lambda n: "BF16" if n.endswith("proj.weight") else "F32")
    hc = lt.hf_config(V, L, C, NH, KV, F, float(np.float32(base)), float(np.float32(eps)),
                      True, False)
    import_hf.import_hf(os.path.join(d, "hf_llama"), os.path.join(d, "hf_llama.bin"), 64)
    write_ref(os.path.join(d, "hf_llama.ref"), hc, stored, toks)
    # (2) Qwen2, untied, q/k/v biases, F16, two shards + index; 4 heads on 1 KV head
    W = random_hf(rng, V, L, C, NH, 1, F, bias=True, tied=False)
    base, eps = 1000000.0, 1e-6
    cj = hf_config_json("qwen2", V, L, C, NH, 1, F, False, base, eps)
    stored = write_hf(os.path.join(d, "hf_qwen2"), W, cj, lambda n: "F16", shards=2)
    hc = lt.hf_config(V, L, C, NH, 1, F, float(np.float32(base)), float(np.float32(eps)),
                      False, True)
    import_hf.import_hf(os.path.join(d, "hf_qwen2"), os.path.join(d, "hf_qwen2.bin"), 64)
    write_ref(os.path.join(d, "hf_qwen2.ref"), hc, stored, toks)
    # (3) GGUF, tied, llama.cpp conventions
    import gguf
    Q = gguf.GGMLQuantizationType
    kinds = {"token_embd": Q.Q8_0, "attn_q": Q.F32, "attn_k": Q.F16, "attn_v": Q.Q4_0,
             "attn_output": Q.BF16, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q8_0, "ffn_down": Q.Q4_1}
    qtypes = lambda g: kinds[g.split(".")[-2]]
    W = random_hf(rng, V, L, C, NH, KV, F, bias=False, tied=True)
    hc = lt.hf_config(V, L, C, NH, KV, F, 100000.0, float(np.float32(1e-5)), True, False)
    stored = write_gguf(os.path.join(d, "tiny.gguf"), W, hc, qtypes)
    import_gguf.import_gguf(os.path.join(d, "tiny.gguf"), os.path.join(d, "tiny.bin"), 64)
    write_ref(os.path.join(d, "tiny.ref"), hc, stored, toks)
    return W, hc, qtypes


def make_bad(d, W_gguf, hc, qtypes):
    """Broken copies of the good inputs; returns (kind, path, expected text) rows."""
    rows = []
    good = os.path.join(d, "hf_llama")

    def copy(name):
        p = os.path.join(d, name)
        shutil.copytree(good, p)
        return p

    p = copy("bad_trunc")
    st = os.path.join(p, "model.safetensors")
    with open(st, "r+b") as f:
        f.truncate(os.path.getsize(st) - 100)
    rows.append(("hf", p, st, "truncated"))
    p = copy("bad_hdrlen")
    st = os.path.join(p, "model.safetensors")
    with open(st, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))
    rows.append(("hf", p, st, "header length"))
    p = copy("bad_hdrjson")
    st = os.path.join(p, "model.safetensors")
    with open(st, "r+b") as f:
        f.seek(8)
        f.write(b"{\"x\":")
    rows.append(("hf", p, st, "JSON"))
    p = copy("bad_config")
    with open(os.path.join(p, "config.json"), "w") as f:
        f.write('{"model_type": "llama", "hidden_size": 32,')
    rows.append(("hf", p, os.path.join(p, "config.json"), "not valid JSON"))
    p = copy("bad_shape")
    cj = json.load(open(os.path.join(good, "config.json")))
    cj["intermediate_size"] = 48
    json.dump(cj, open(os.path.join(p, "config.json"), "w"))
    rows.append(("hf", p, "mlp.gate_proj.weight", "shape"))
    p = copy("bad_missing")
    cj["intermediate_size"] = 64
    cj["num_hidden_layers"] = 3
    json.dump(cj, open(os.path.join(p, "config.json"), "w"))
    rows.append(("hf", p, p, "missing tensor model.layers.2.input_layernorm.weight"))
    p = copy("bad_arch")
    cj["num_hidden_layers"] = 2
    cj["model_type"] = "gpt2"
    json.dump(cj, open(os.path.join(p, "config.json"), "w"))
    rows.append(("hf", p, os.path.join(p, "config.json"), "model_type"))
    # GGUF: truncated, bad magic, a missing tensor
    src = os.path.join(d, "tiny.gguf")
    p = os.path.join(d, "bad_trunc.gguf")
    shutil.copy(src, p)
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 1000)
    rows.append(("gguf", p, p, "truncated"))
    p = os.path.join(d, "bad_head.gguf")
    shutil.copy(src, p)
    with open(p, "r+b") as f:
        f.truncate(100)
    rows.append(("gguf", p, p, "truncated"))
    p = os.path.join(d, "bad_magic.gguf")
    shutil.copy(src, p)
    with open(p, "r+b") as f:
        f.write(b"GGML")
    rows.append(("gguf", p, p, "not a GGUF"))
    p = os.path.join(d, "bad_missing.gguf")
    write_gguf(p, W_gguf, hc, qtypes, drop=("blk.1.ffn_up.weight",))
    rows.append(("gguf", p, p, "missing tensor blk.1.ffn_up.weight"))
    return rows


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    d = argv[1]
    rng = np.random.default_rng(20261202)
    W, hc, qtypes = make_good(d, rng)
    rows = make_bad(d, W, hc, qtypes)
    with open(os.path.join(d, "bad.txt"), "w") as f:
        for kind, path, name, expect in rows:
            f.write(f"{kind}\t{path}\t{name}\t{expect}\n")
    print(f"import_check: wrote 3 models and {len(rows)} broken inputs into {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
