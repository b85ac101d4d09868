#!/usr/bin/env python3
"""dev/tokenizer_export.py: writes memr2's tokenizer file (.tok, format in bpe.h) from a GGUF
model or from a Hugging Face tokenizer.json.

    /usr/bin/python3 dev/tokenizer_export.py MODEL.gguf OUT.tok
    /usr/bin/python3 dev/tokenizer_export.py path/to/tokenizer.json OUT.tok   (or the model folder)

Model importers call export_from_gguf(reader_or_path, out_path) or
export_from_hf(tokenizer_json_path, out_path); both return the FNV-1a 64 hash of the written file
(what bpe_hash() reports in C).

Vocabulary entries are stored as the raw bytes they decode to: GPT-2's byte-to-unicode mapping is
undone here, so the C side never needs it. Special tokens (GGUF token types CONTROL and
USER_DEFINED; Hugging Face added_tokens) keep their literal text.
"""
import json
import os
import re
import struct
import sys

MAGIC = b"memr2tok"
VERSION = 1
NONE = 0xFFFFFFFF
FLAG_IGNORE_MERGES = 1
FLAG_NFC = 2
ADDED_PLAIN = 0x80000000  # an added token that is not special

# The split patterns of Hugging Face tokenizer.json files, by memr2 / llama.cpp pre-tokenizer name.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_NAMES = ("smollm", "gpt2", "llama-bpe", "qwen2")


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def byte_level_decode(s, where):
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{where}: token {s!r} has character {e.args[0]!r} outside GPT-2's "
                         "byte-level alphabet") from None


def chat_from_template(template):
    """(kind, default system message) from a Jinja chat template: memr2 renders ChatML only."""
    if not template or "<|im_start|>" not in template:
        return "", ""
    # The first literal system message: SmolLM2's GGUF template has a real newline after
    # "system", Qwen2.5's tokenizer_config.json a Jinja "\\n"; skip "' + messages[0]... + '".
    for m in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S):
        if "'" not in m.group(1) and '"' not in m.group(1) and "{" not in m.group(1):
            return "chatml", m.group(1)
    return "chatml", ""


def write_tok(out_path, vocab, merges, special, flags, bos, eos, pre, chat, system):
    """vocab: list of bytes (index = id); merges: list of (left, right, result) ids by rank;
    special: the added tokens' ids, | ADDED_PLAIN for those that are not special."""
    if pre not in PRE_NAMES:
        raise ValueError(f"pre-tokenizer {pre!r} is not supported (memr2 knows {PRE_NAMES})")
    index = {}
    for i, b in enumerate(vocab):
        index.setdefault(b, i)
    for r, (a, b, c) in enumerate(merges):
        if vocab[a] + vocab[b] != vocab[c]:
            raise ValueError(f"merge {r}: {vocab[a]!r} + {vocab[b]!r} != {vocab[c]!r}")
    u32 = lambda x: struct.pack("<I", x)
    blob = lambda b: u32(len(b)) + b
    parts = [MAGIC, u32(VERSION), u32(len(vocab)), u32(len(merges)), u32(len(special)), u32(flags),
             u32(NONE if bos is None else bos), u32(NONE if eos is None else eos),
             blob(pre.encode()), blob(chat.encode()), blob(system.encode())]
    parts += [blob(b) for b in vocab]
    parts += [struct.pack("<III", a, b, c) for a, b, c in merges]
    parts += [u32(i) for i in special]
    data = b"".join(parts)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_path)
    return fnv1a64(data)


def resolve_merges(pairs, str_to_id, where):
    """merges as strings (left, right) -> (left id, right id, result id)."""
    out = []
    for r, (a, b) in enumerate(pairs):
        ids = [str_to_id.get(s) for s in (a, b, a + b)]
        if None in ids:
            raise ValueError(f"{where}: merge {r} ({a!r} {b!r}) names a token not in the vocabulary")
        out.append(tuple(ids))
    return out


# ---- GGUF ------------------------------------------------------------------------------------

def _gguf_field(reader, key, where):
    import gguf
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [int(f.parts[i][0]) for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def export_from_gguf(gguf_reader_or_path, out_path):
    import gguf
    reader = gguf_reader_or_path
    where = getattr(reader, "path", "gguf")
    if isinstance(reader, (str, os.PathLike)):
        where = str(reader)
        try:
            reader = gguf.GGUFReader(reader)
        except (ValueError, IndexError, KeyError, struct.error) as e:
            raise ValueError(f"{where}: not a readable GGUF ({e})") from None
    get = lambda k: _gguf_field(reader, k, where)
    model = get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{where}: tokenizer.ggml.model is {model!r}, memr2 reads byte-level BPE "
                         "('gpt2') only")
    tokens, types, merges = (get("tokenizer.ggml." + k) for k in ("tokens", "token_type", "merges"))
    if tokens is None or merges is None:
        raise ValueError(f"{where}: no tokenizer.ggml.tokens / merges")
    types = types or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(f"{where}: {len(tokens)} tokens but {len(types)} token types")
    pre = get("tokenizer.ggml.pre")
    if pre is None:  # llama.cpp's "default" BPE pre-tokenizer is none of the HF ones
        raise ValueError(f"{where}: no tokenizer.ggml.pre")
    specials = {i for i, t in enumerate(types) if t in (3, 4)}  # CONTROL, USER_DEFINED
    special = [i | (ADDED_PLAIN if types[i] == 4 else 0) for i in sorted(specials)]
    vocab = [t.encode("utf-8") if i in specials else byte_level_decode(t, where)
             for i, t in enumerate(tokens)]
    str_to_id = {}
    for i, t in enumerate(tokens):
        str_to_id.setdefault(t, i)
    pairs = []
    for r, m in enumerate(merges):
        p = m.split(" ")
        if len(p) != 2:
            raise ValueError(f"{where}: merge {r} {m!r} is not two tokens")
        pairs.append(p)
    flags = FLAG_IGNORE_MERGES if pre == "llama-bpe" else 0  # llama.cpp: LLAMA3 ignores merges
    chat, system = chat_from_template(get("tokenizer.chat_template"))
    return write_tok(out_path, vocab, resolve_merges(pairs, str_to_id, where), special, flags,
                     get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id"),
                     pre, chat, system)


# ---- Hugging Face tokenizer.json -------------------------------------------------------------

def _hf_pre_name(pre, where):
    t = pre.get("type") if pre else None
    steps = pre.get("pretokenizers", []) if t == "Sequence" else ([pre] if pre else [])
    kinds = [s.get("type") for s in steps]

    def bytelevel_ok(s, use_regex):
        return (not s.get("add_prefix_space", False)) and s.get("use_regex", True) == use_regex

    if kinds == ["ByteLevel"] and bytelevel_ok(steps[0], True):
        return "gpt2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and bytelevel_ok(steps[1], True)):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and bytelevel_ok(steps[1], False):
        s = steps[0]
        pat = s.get("pattern", {}).get("Regex")
        if s.get("behavior") == "Isolated" and not s.get("invert", False):
            if pat == LLAMA3_SPLIT:
                return "llama-bpe"
            if pat == QWEN2_SPLIT:
                return "qwen2"
    raise ValueError(f"{where}: pre_tokenizer {json.dumps(pre)[:300]} is none of {PRE_NAMES}")


def export_from_hf(tokenizer_json_path, out_path):
    """tokenizer_json_path: a tokenizer.json, or the Hugging Face model folder holding it."""
    if os.path.isdir(tokenizer_json_path):
        tokenizer_json_path = os.path.join(tokenizer_json_path, "tokenizer.json")
    where = str(tokenizer_json_path)
    with open(tokenizer_json_path, encoding="utf-8") as f:
        try:
            tj = json.load(f)
        except ValueError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(tj, dict):
        raise ValueError(f"{where}: not a tokenizer.json (top level is not an object)")
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{where}: model type {model.get('type')!r}, memr2 reads BPE only")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or \
            model.get("end_of_word_suffix") or model.get("dropout"):
        raise ValueError(f"{where}: byte_fallback / subword prefix / suffix / dropout unsupported")
    flags = FLAG_IGNORE_MERGES if model.get("ignore_merges") else 0
    norm = tj.get("normalizer")
    if norm is not None:
        if norm.get("type") != "NFC":
            raise ValueError(f"{where}: normalizer {norm.get('type')!r} unsupported")
        flags |= FLAG_NFC
    pre = _hf_pre_name(tj.get("pre_tokenizer"), where)
    added = {a["id"]: a["content"] for a in tj.get("added_tokens", [])}
    plain = {a["id"] for a in tj.get("added_tokens", []) if not a.get("special", False)}
    for a in tj.get("added_tokens", []):
        if a.get("lstrip") or a.get("rstrip") or a.get("single_word"):
            raise ValueError(f"{where}: added token {a['content']!r} strips spaces or matches "
                             "single words only; memr2 matches added tokens literally")
    if not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{where}: model.vocab is missing or not an object")
    str_to_id = dict(model["vocab"])
    n = 1 + max(list(str_to_id.values()) + list(added))
    vocab = [None] * n
    for s, i in str_to_id.items():
        vocab[i] = s.encode("utf-8") if i in added else byte_level_decode(s, where)
    for i, s in added.items():
        vocab[i] = s.encode("utf-8")
        str_to_id.setdefault(s, i)
    missing = [i for i, v in enumerate(vocab) if v is None]
    if missing:
        raise ValueError(f"{where}: ids {missing[:5]} have no token")
    pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    for r, p in enumerate(pairs):
        if len(p) != 2:
            raise ValueError(f"{where}: merge {r} {p!r} is not two tokens")
    # bos / eos and the chat template live in tokenizer_config.json beside tokenizer.json.
    bos = eos = None
    chat, system = "", ""
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(where)), "tokenizer_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        tok_id = lambda k: str_to_id.get(cfg[k] if isinstance(cfg.get(k), str)
                                         else (cfg.get(k) or {}).get("content"))
        bos, eos = tok_id("bos_token"), tok_id("eos_token")
        tmpl = cfg.get("chat_template")
        chat, system = chat_from_template(tmpl if isinstance(tmpl, str) else None)
    return write_tok(out_path, vocab, resolve_merges(pairs, str_to_id, where),
                     [i | (ADDED_PLAIN if i in plain else 0) for i in sorted(added)],
                     flags, bos, eos, pre, chat, system)


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    src, out = argv[1], argv[2]
    try:
        if src.endswith(".gguf"):
            h = export_from_gguf(src, out)
        else:
            h = export_from_hf(src, out)
    except (OSError, ValueError, KeyError) as e:
        print(f"tokenizer_export: {e}", file=sys.stderr)
        return 1
    print(f"tokenizer_export: wrote {out} hash {h:016x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
