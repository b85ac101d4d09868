#!/usr/bin/env python3
"""dev/tokenizer_check.py: memr2's C tokenizer against Hugging Face `tokenizers`, on the full
vocabulary of a real model.

    make build/rel/dev/bpe_ids
    /usr/bin/python3 dev/tokenizer_check.py MODEL.gguf          # e.g. SmolLM2 after make smollm2
    /usr/bin/python3 dev/tokenizer_check.py path/to/tokenizer.json [--n 3000] [--seed 1]

It exports the tokenizer to memr2's format (dev/tokenizer_export.py), builds the Hugging Face
tokenizer from the same vocabulary and merges (from a GGUF: BPE + the pre-tokenizer its
`tokenizer.ggml.pre` names, exactly as the model's tokenizer.json declares it; from a
tokenizer.json: that file itself), runs the C program build/rel/dev/bpe_ids on a corpus (fixed
strings with Unicode, emoji, digits, contractions, whitespace runs, tabs, newlines, special
tokens, plus seeded random mixes of the same) and on chat conversations rendered by the model's
own Jinja template, and prints the strings and tokens compared and every mismatch. Exit 1 on any
mismatch.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_export as tx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BPE_IDS = os.path.join(HERE, "..", "build", "rel", "dev", "bpe_ids")

FIXED = [
    "", " ", "  ", "\n", "\t", "a", "Hello world!", "Hello, World! HELLO world.",
    "I'm sure it's fine; they're here, we've won, you'll see, he'd go, don't.",
    "I'M SURE IT'S FINE THEY'RE WE'VE YOU'LL HE'D DON'T", "'s 't 're 've 'm 'll 'd",
    "rock'n'roll 'quoted' ''double''", "1 12 123 1234 12345 3.14159 1,000,000 -42 +7 0x1F 1e-5",
    "Call 555-0199 on 2024-05-17 at 10:30am.", "a  b   c    d\t\te\n\nf \n g\r\nh",
    "trailing spaces   ", "   leading spaces", "\n\n\n", " \n \n ", "\t\t\tindent",
    "café naïve résumé Ångström straße ÆØÅ œuvre", "Ünïcödé ÀÉÎÕÜ", "e\u0301 combining acute",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "你好，世界！今天天气很好。", "日本語のテキスト、カタカナ",
    "한국어 텍스트", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "ภาษาไทย",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ✨🚀", "🤖🤖🤖 robots", "math ∑∫√∞ ≤≥≠ ½¾ ²³ ①②",
    "no\u00a0break\u2009thin\u3000ideographic\u200bzero\u2028line\u2029para\u0085nel",
    "\u00a0\u00a0 nbsp run", "new in Unicode 16: \U00011de0\U00011de1 \U000105c0\U000105c1 \U00010d40 "
    "\U00016ff4", "'\u017f 'ſ IT'S it'ſ", "tab\tthen\u000bvt\u000cff\u001cfs", "odd spaces:\x0b\x0c\x1c\x1d\x1e\x1f\u1680\u180e\u2000\u200a\u2060"
    "\ufeff\u202f\u205f\u00ad|", "a\x0bb \x0c c\x1c d\u180e e\ufeff f\u202f g", "mixed\u00a0 \u00a0spaces", "code: if (x == 1) { return y[i] * 2; }",
    "def f(a, b):\n    return a ** b  # power\n", "<html><body class=\"x\">&amp;</body></html>",
    "https://example.com/path?q=1&r=two#frag", "user@example.org", "$100.00 €50 £30 ¥2000",
    "!!! ??? ... --- *** ___ ~~~", "(parenthesised) [bracketed] {braced}",
    "<|im_start|>user\nhi<|im_end|>\n", "<|im_start|><|im_end|><|endoftext|>", "<|im_start",
    "<|im_end||>", "x<|endoftext|>y", "<tool>call</tool> <tool><|im_end|>", "<|im_start|>system\n<|im_start|>assistant\n",
    "ab\x04cd \x06\x13 ctrl\x1d", "\x00nul\x7fdel", "𝒜𝓁𝓅𝒽𝒶 math letters", "\U000F0041 private",
    "ﬁ ligature Ⅻ roman ℃ ™", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    " " * 40 + "x", "9" * 50, "Mr. Smith's dog—the one I'd seen—barked.",
    "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
    "Melanie: That's awesome, Caroline! What happened at the group?",
]

PIECES = (["the", "The", "THE", "memory", "agent", "Caroline", "Melanie", "run", "ing", "é", "ß",
           "naïve", "Привет", "мир", "你好", "世界", "こんにちは", "🙂", "👍🏽", "🇩🇪", "👩‍💻", "∞",
           "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "0", "7", "42", "2024",
           "3.5", ",", ".", "!", "?", ":", ";", "-", "(", ")", "\"", "'", "`", "#", "@", "%", "&",
           "<", ">", "|", "/", "\\", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n",
           "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c", "\x1c", "\u180e", "\ufeff", "\u202f",
           "\u1680", "\u200b", "\u0085", "\u2028", "e\u0301", "A\u030a", "\u1100\u1161", "\u212b",
           "\u0301", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_",
           "|>", "<tool>", "\x04", "\x7f"])


def random_char(rng):
    """Any code point (not a surrogate): classes where PCRE2 and HF's Unicode tables differ."""
    top = rng.choice([0x80, 0x800, 0x10000, 0x30000, 0x110000])
    c = rng.randrange(top)
    return chr(c) if not 0xD800 <= c < 0xE000 else "?"


def corpus(n, seed):
    rng = random.Random(seed)
    out = list(FIXED)
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(PIECES) if rng.random() < 0.85 else random_char(rng)
                           for _ in range(k)))
    return out


CONVERSATIONS = [
    [("user", "What is the capital of France?")],
    [("system", "You are a memory manager."), ("user", "Caroline: I adopted a cat named Milo!")],
    [("user", "hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke 😀")],
    [("user", "Line one\nLine two\n\nThree  spaces\tand tab")],
    [],
]


def hf_from_gguf(path):
    """The Hugging Face tokenizer of a GGUF's vocabulary, merges and pre-tokenizer."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, Regex
    r = gguf.GGUFReader(path)
    get = lambda k: tx._gguf_field(r, k, path)
    tokens, types = get("tokenizer.ggml.tokens"), get("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in get("tokenizer.ggml.merges")]
    pre = get("tokenizer.ggml.pre") or "gpt2"
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                               byte_fallback=False, ignore_merges=(pre == "llama-bpe")))
    bl = lambda use_regex: pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                     use_regex=use_regex)
    if pre == "smollm":  # SmolLM2's tokenizer.json: Sequence[Digits(individual), ByteLevel]
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), bl(True)])
    elif pre == "gpt2":
        tok.pre_tokenizer = bl(True)
    elif pre in ("llama-bpe", "qwen2"):
        pat = tx.LLAMA3_SPLIT if pre == "llama-bpe" else tx.QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False), bl(False)])
    else:
        raise ValueError(f"{path}: pre-tokenizer {pre!r} unsupported")
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t in (3, 4)])
    return tok, get("tokenizer.chat_template")


def hf_from_json(path):
    import json
    from tokenizers import Tokenizer
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
    tmpl = None
    if os.path.exists(cfg):
        with open(cfg, encoding="utf-8") as f:
            tmpl = json.load(f).get("chat_template")
    return Tokenizer.from_file(path), tmpl


def render(template, msgs, gen):
    import jinja2
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    return env.from_string(template).render(
        messages=[{"role": r, "content": c} for r, c in msgs], add_generation_prompt=gen,
        bos_token="", eos_token="")


def run_c(tok_path, lines, mode=None):
    args = [BPE_IDS, tok_path] + ([mode] if mode else [])
    p = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{BPE_IDS} failed ({p.returncode}): {p.stderr.strip()}")
    out = p.stdout.rstrip("\n").split("\n")
    res = []
    for line in out[1:]:
        ids, hx = line.split("\t")
        res.append(([int(x) for x in ids.split()], bytes.fromhex(hx)))
    return out[0], res


def bench(source, files):
    import time
    hf, _ = hf_from_gguf(source) if source.endswith(".gguf") else hf_from_json(source)
    one = b"".join(open(f, "rb").read() for f in files)
    text = (one * -(-(4 << 20) // len(one))).decode("utf-8")
    best = 1e30
    for _ in range(3):
        t0 = time.perf_counter()
        ids = hf.encode(text, add_special_tokens=False).ids
        best = min(best, time.perf_counter() - t0)
    n = len(text.encode("utf-8"))
    print(f"bench hf_tokens {len(ids)}")
    print(f"bench hf_encode_mb_s {n / best / 1e6:.2f}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a .gguf or a tokenizer.json")
    ap.add_argument("--n", type=int, default=2000, help="random strings besides the fixed ones")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tok", help="where to write the .tok (default: a temporary file)")
    ap.add_argument("--bench", nargs="+", metavar="FILE",
                    help="only time HF encode on these files repeated to 4 MB (as dev/bench_bpe.c)")
    a = ap.parse_args()
    if a.bench:
        return bench(a.source, a.bench)
    if not os.path.exists(BPE_IDS):
        sys.exit(f"tokenizer_check: {BPE_IDS} missing: make build/rel/dev/bpe_ids")
    gguf_src = a.source.endswith(".gguf")
    hf, template = hf_from_gguf(a.source) if gguf_src else hf_from_json(a.source)
    with tempfile.TemporaryDirectory() as tmp:
        tok_path = a.tok or os.path.join(tmp, "t.tok")
        h = (tx.export_from_gguf if gguf_src else tx.export_from_hf)(a.source, tok_path)
        texts = corpus(a.n, a.seed)
        header, got = run_c(tok_path, [t.encode("utf-8").hex() for t in texts])
        chat_lines, chat_ref = [], []
        if template and "<|im_start|>" in template:
            for msgs in CONVERSATIONS:
                for gen in (False, True):
                    f = [x for r, c in msgs for x in (r, c.encode("utf-8").hex())]
                    chat_lines.append("\t".join(f + (["+"] if gen else [])))
                    chat_ref.append(render(template, msgs, gen))
            _, chat_got = run_c(tok_path, chat_lines, "--chat")
        _, ord_got = run_c(tok_path, [t.encode("utf-8").hex() for t in texts], "--ordinary")
    print(f"tokenizer_check: {a.source}: C says '{header}', python hash {h:016x}")
    bad = 0
    n_tok = 0
    for text, (ids, dec) in zip(texts, got):
        want = hf.encode(text, add_special_tokens=False).ids
        n_tok += len(want)
        hf_dec = hf.decode(ids, skip_special_tokens=False)
        if ids != want or dec.decode("utf-8", "replace") != hf_dec:
            bad += 1
            if bad <= 10:
                print(f"MISMATCH {text!r}\n  C  {ids}\n  HF {want}\n  C decode {dec!r}\n"
                      f"  HF decode {hf_dec!r}")
    hf.encode_special_tokens = True  # special tokens in the text encoded as ordinary text
    n_ord_tok = ord_bad = 0
    for text, (ids, dec) in zip(texts, ord_got):
        want = hf.encode(text, add_special_tokens=False).ids
        n_ord_tok += len(want)
        if ids != want:
            ord_bad += 1
            if ord_bad <= 5:
                print(f"ORDINARY MISMATCH {text!r}\n  C  {ids}\n  HF {want}")
    hf.encode_special_tokens = False
    n_chat_tok = chat_bad = 0
    for i, ref in enumerate(chat_ref):
        ids, rendered = chat_got[i]
        want = hf.encode(ref, add_special_tokens=False).ids
        n_chat_tok += len(want)
        if rendered.decode("utf-8") != ref or ids != want:
            chat_bad += 1
            print(f"CHAT MISMATCH {chat_lines[i]!r}\n  C  {rendered!r} {ids}\n  HF {ref!r} {want}")
    print(f"tokenizer_check: encode+decode: {len(texts)} strings, {n_tok} tokens, "
          f"{bad} mismatching strings")
    print(f"tokenizer_check: ordinary encode (HF encode_special_tokens): {len(texts)} strings, "
          f"{n_ord_tok} tokens, {ord_bad} mismatching strings")
    print(f"tokenizer_check: chat template: {len(chat_ref)} conversations, {n_chat_tok} tokens, "
          f"{chat_bad} mismatches")
    return 1 if bad or chat_bad or ord_bad or not got else 0


if __name__ == "__main__":
    sys.exit(main())
