#!/usr/bin/env python3
"""dev/tokenizer_fixture.py: makes the small tokenizer fixtures tests/test_bpe.c checks, so
`make test` needs no download.

    /usr/bin/python3 dev/tokenizer_fixture.py [OUT_DIR]     (default tests/fixtures)

For each pre-tokenizer memr2 supports (smollm, gpt2, llama-bpe, qwen2) it trains a byte-level BPE
with Hugging Face `tokenizers` on a small built-in text (256 byte tokens, 3 ChatML special tokens,
a few hundred merges), exports it through dev/tokenizer_export.py's export_from_hf (so that path
is tested too) to bpe_KIND.tok, and writes bpe_KIND.txt with what Hugging Face makes of the
corpus of dev/tokenizer_check.py (fixed strings + 60 random ones) and of its chat conversations:

    hash HEX                                  FNV-1a 64 of the .tok, computed here in Python
    text TAB hex(utf-8) TAB ids TAB hex(HF decode)   ids space-separated (may be empty)
    ordinary TAB hex(utf-8) TAB ids           bpe_encode_ordinary (HF encode_special_tokens)
    chat TAB gen TAB role TAB hex ... TAB = TAB hex(rendered) TAB ids
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_check as tc  # noqa: E402
import tokenizer_export as tx  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")

TRAIN_TEXT = """\
Caroline: I went to the LGBTQ support group yesterday and it was so powerful.
Melanie: That's awesome, Caroline! What happened at the group? I'd love to hear.
Caroline: They're all so kind; we've been meeting since 2019, every Tuesday at 7pm.
Melanie: You'll have to tell me more. I'm painting a sunrise, it's my 3rd one this year.
The memory agent writes facts: Caroline owns a cat named Milo. Melanie runs 5 km daily.
INSERT, UPDATE, DELETE and NOOP are the four operations of the memory manager.
café naïve résumé straße Привет мир 你好世界 こんにちは 😀 👍 🚀 ∑∫√∞
def f(a, b):
    return a ** b  # power
    if x == 1:
        print("hello, world")
Numbers: 1 12 123 1234 3.14159 1,000,000 2024-05-17 10:30am $100.00
"""


def train(kind, vocab_size=660):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=(kind == "llama-bpe")))
    bl = lambda use_regex: pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                     use_regex=use_regex)
    if kind == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), bl(True)])
    elif kind == "gpt2":
        tok.pre_tokenizer = bl(True)
    else:
        pat = tx.LLAMA3_SPLIT if kind == "llama-bpe" else tx.QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False), bl(False)])
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()  # as Qwen2.5's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT.splitlines() * 3, trainer=trainer)
    # an added token that is not special (like Qwen2.5's <tool_call>): ordinary encode keeps it
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    return tok


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..",
                                                         "tests", "fixtures")
    os.makedirs(out_dir, exist_ok=True)
    texts = tc.corpus(60, seed=5)
    for kind in tx.PRE_NAMES:
        tok = train(kind)
        with tempfile.TemporaryDirectory() as tmp:
            tj = os.path.join(tmp, "tokenizer.json")
            tok.save(tj)
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump({"chat_template": SMOLLM2_TEMPLATE, "bos_token": "<|im_start|>",
                           "eos_token": "<|im_end|>"}, f)
            tok_path = os.path.join(out_dir, f"bpe_{kind}.tok")
            h = tx.export_from_hf(tj, tok_path)
        lines = [f"hash {h:016x}"]
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            dec = tok.decode(ids, skip_special_tokens=False)  # NFC for qwen2
            lines.append(f"text\t{t.encode().hex()}\t{' '.join(map(str, ids))}\t"
                         f"{dec.encode().hex()}")
        tok.encode_special_tokens = True
        for t in texts:
            if "<|" in t or "<tool>" in t:
                ids = tok.encode(t, add_special_tokens=False).ids
                lines.append(f"ordinary\t{t.encode().hex()}\t{' '.join(map(str, ids))}")
        tok.encode_special_tokens = False
        for msgs in tc.CONVERSATIONS:
            for gen in (0, 1):
                ref = tc.render(SMOLLM2_TEMPLATE, msgs, bool(gen))
                ids = tok.encode(ref, add_special_tokens=False).ids
                f = [x for r, c in msgs for x in (r, c.encode().hex())]
                lines.append("\t".join(["chat", str(gen)] + f + ["=", ref.encode().hex(),
                                                                 " ".join(map(str, ids))]))
        with open(os.path.join(out_dir, f"bpe_{kind}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"tokenizer_fixture: {tok_path}: vocab {tok.get_vocab_size()}, "
              f"{len(texts)} strings, hash {h:016x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
