"""dev/llama_torch.py: a Llama / Qwen2 forward in PyTorch written from Hugging Face's equations
(transformers' modeling_llama.py / modeling_qwen2.py, without importing transformers), on
tensors named as in a Hugging Face checkpoint. The importers' tests and the SmolLM2 check use it
as the reference memr2's C model must reproduce; the 135M bench times it.

    hcfg = hf_config(...)         # plain dict: sizes, rope, eps, tied, bias
    W = {"model.embed_tokens.weight": ..., "model.layers.0.self_attn.q_proj.weight": ..., ...}
    logits, cache = forward(hcfg, W, tokens)                  # (B, T, V)
    logits, cache = forward(hcfg, W, next_tokens, cache)      # KV-cache continuation

memr2_to_hf() names a memr2 checkpoint's tensors (dev/memr2ckpt.py) the Hugging Face way, so the
same function runs on the weights the C model reads.
"""
import torch


def hf_config(V, L, C, NH, KV, F, rope_base, norm_eps, tied, qkv_bias, rope_dim=None):
    hs = C // NH
    return dict(V=V, L=L, C=C, NH=NH, KV=KV, F=F, hs=hs, rope_dim=hs if rope_dim is None else
                rope_dim, rope_base=rope_base, norm_eps=norm_eps, tied=tied, qkv_bias=qkv_bias)


def from_memr2_config(cfg):
    return hf_config(cfg["V"], cfg["L"], cfg["C"], cfg["NH"], cfg["n_kv_heads"], cfg["ffn"],
                     cfg["rope_base"], cfg["norm_eps"], bool(cfg["tied"]),
                     bool(cfg["qkv_bias"]), cfg["rope_dim"])


def memr2_to_hf(cfg, t, dtype=torch.float64):
    """memr2 tensors (name -> numpy, stacked over L) -> Hugging Face names -> torch dtype."""
    T = lambda a: torch.from_numpy(a.copy()).to(dtype)
    W = {"model.embed_tokens.weight": T(t["wte"]), "model.norm.weight": T(t["norm_f"])}
    if not cfg["tied"]:
        W["lm_head.weight"] = T(t["lm_head"])
    per = {"input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "wq",
           "self_attn.k_proj.weight": "wk", "self_attn.v_proj.weight": "wv",
           "self_attn.o_proj.weight": "wo", "post_attention_layernorm.weight": "mlp_norm",
           "mlp.gate_proj.weight": "w_gate", "mlp.up_proj.weight": "w_up",
           "mlp.down_proj.weight": "w_down"}
    if cfg["qkv_bias"]:
        per.update({"self_attn.q_proj.bias": "bq", "self_attn.k_proj.bias": "bk",
                    "self_attn.v_proj.bias": "bv"})
    for l in range(cfg["L"]):
        for hf, m in per.items():
            W[f"model.layers.{l}.{hf}"] = T(t[m][l])
    return W


def rmsnorm(x, w, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then the gain
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, rope_dim, base):
    """x (B, H, T, hs) at positions pos (T): rotate_half on the first rope_dim channels."""
    if rope_dim == 0:
        return x
    inv = 1.0 / (base ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim))
    fr = pos.to(torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([fr, fr], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    xr, xp = x[..., :rope_dim], x[..., rope_dim:]
    h = rope_dim // 2
    rot = torch.cat([-xr[..., h:], xr[..., :h]], dim=-1)
    return torch.cat([xr * cos + rot * sin, xp], dim=-1)


def forward(hc, W, tokens, cache=None, last_only=False):
    """tokens (B, T) long; cache: None or the list returned by a previous call (keys/values of
    the positions before these). Returns logits (B, T, V) (B, 1, V with last_only: the head
    on the last position only, as a sampler's prefill needs) and the extended cache."""
    B, T = tokens.shape
    NH, KV, hs, eps = hc["NH"], hc["KV"], hc["hs"], hc["norm_eps"]
    past = 0 if cache is None else cache[0][0].shape[2]
    pos = torch.arange(past, past + T)
    x = W["model.embed_tokens.weight"][tokens]
    mask = torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)
    new_cache = []
    for l in range(hc["L"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        proj = lambda n: h @ W[p + f"self_attn.{n}_proj.weight"].T + (
            W[p + f"self_attn.{n}_proj.bias"] if hc["qkv_bias"] else 0)
        q = proj("q").view(B, T, NH, hs).transpose(1, 2)
        k = proj("k").view(B, T, KV, hs).transpose(1, 2)
        v = proj("v").view(B, T, KV, hs).transpose(1, 2)
        q, k = rope(q, pos, hc["rope_dim"], hc["rope_base"]), rope(k, pos, hc["rope_dim"],
                                                                   hc["rope_base"])
        if cache is not None:
            k = torch.cat([cache[l][0], k], dim=2)
            v = torch.cat([cache[l][1], v], dim=2)
        new_cache.append((k, v))
        k = k.repeat_interleave(NH // KV, dim=1)  # repeat_kv: query head j reads j // (NH/KV)
        v = v.repeat_interleave(NH // KV, dim=1)
        att = (q @ k.transpose(-1, -2)) / (hs ** 0.5)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, NH * hs)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    if last_only:
        x = x[:, -1:]
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if hc["tied"] else W["lm_head.weight"]
    return x @ head.T, new_cache


def target_logp(hc, W, tokens):
    """log p(tokens[t+1] | tokens[..t]) for t < T-1: (B, T-1)."""
    logits, _ = forward(hc, W, tokens)
    lp = logits[:, :-1].log_softmax(-1)
    return lp.gather(-1, tokens[:, 1:, None])[..., 0]


def greedy(hc, W, prompt, n_new, stop=()):
    """Greedy continuation of one prompt (list of ids) with a KV cache; stops after a stop id.
    Returns (ids, margins): margins[i] = top-1 minus top-2 logit at step i (how close a tie
    was: a float32 model may only disagree where this is tiny)."""
    logits, cache = forward(hc, W, torch.tensor([prompt]))
    out, margins = [], []
    for _ in range(n_new):
        last = logits[0, -1]
        top = torch.topk(last, 2)
        nxt = int(top.indices[0])
        out.append(nxt)
        margins.append(float(top.values[0] - top.values[1]))
        if nxt in stop:
            break
        logits, cache = forward(hc, W, torch.tensor([[nxt]]), cache)
    return out, margins
