"""Qwen3-style decoder with the MeKi branch in TRAINING form (see /work/shared/MEKI.md).

Shared by train.py (training + export) and eval.py (loading an exported checkpoint).
Names of modules are chosen so that `hf_state_dict()` is a plain prefix mapping onto the
HF/demo checkpoint names (model.layers.N.meki_module.*).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 16384
    hidden_size: int = 384
    intermediate_size: int = 1152
    num_hidden_layers: int = 8
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    head_dim: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 512
    meki_dim: int = 0  # 0 = dense (no MeKi branch)
    meki_form: str = "demo"  # demo | megatron
    meki_variant: str = "dense"  # dense | meki | static | dynamic

    def to_hf(self, eos_id):
        d = asdict(self)
        d.update({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "tie_word_embeddings": True,
            "hidden_act": "silu", "attention_bias": False, "torch_dtype": "float32",
            "bos_token_id": eos_id, "eos_token_id": eos_id, "use_sliding_window": False,
            "rope_scaling": None,
        })
        if self.meki_variant == "dense":
            d["meki_dim"] = 0
        return d

    @staticmethod
    def from_hf(d):
        keys = Config.__dataclass_fields__.keys()
        c = Config(**{k: d[k] for k in keys if k in d})
        if d.get("meki_dim", 0) == 0:
            c.meki_variant = "dense"
        return c


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * x).to(dt)


def rope_cos_sin(seq, head_dim, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(seq, dtype=torch.float32, device=device)
    f = torch.outer(t, inv)
    emb = torch.cat([f, f], dim=-1)  # NeoX / rotate-half order
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.nh, self.nkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        d = c.hidden_size
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)
        self.q_norm = RMSNorm(self.hd, c.rms_norm_eps)
        self.k_norm = RMSNorm(self.hd, c.rms_norm_eps)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.nh, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.nkv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos[:t].to(q.dtype), sin[:t].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv  # query head h uses kv head h // rep (HF repeat_kv, ggml broadcast)
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # old torch (CPU tests)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            o = s.float().masked_fill(mask, float("-inf")).softmax(-1).to(v.dtype) @ v
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.nh * self.hd))


class SwiGLU(nn.Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.gate_proj = nn.Linear(d_in, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_in, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MeKi(nn.Module):
    """MeKi branch, training form:
    e = alpha * RMSNorm_mix(M[x] + beta * G(E[x])); y = RMSNorm_post(W_out (e + sigmoid(W_gate u)))."""

    def __init__(self, c: Config):
        super().__init__()
        d, m = c.hidden_size, c.meki_dim
        self.variant, self.form = c.meki_variant, c.meki_form
        if self.variant in ("meki", "static"):
            self.embeddings = nn.Embedding(c.vocab_size, m)
        if self.variant in ("meki", "dynamic"):
            self.word_emb_projection = SwiGLU(d, d // 2, m)
            if self.form == "megatron":  # G has its own input RMSNorm in the Megatron recipe
                self.word_emb_norm = RMSNorm(d, c.rms_norm_eps)
        self.mix_norm = RMSNorm(m, c.rms_norm_eps)
        self.alpha_scale = nn.Parameter(torch.tensor(1.0))
        self.beta_scale = nn.Parameter(torch.tensor(1.0))
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.out_proj = nn.Linear(m, d, bias=False)
        self.post_norm = RMSNorm(d, c.rms_norm_eps)
        self.mem_dropout = 0.0  # training only: dropout on the looked-up table row M[x] (set by train.py)

    def memory(self, ids, emb_rows):
        """The token-only part e(x): what the fold turns into the table T[x]."""
        mem = 0
        if self.variant in ("meki", "static"):
            mem = self.embeddings(ids)
            if self.training and self.mem_dropout > 0:  # identity at eval/export: the fold is unchanged
                mem = F.dropout(mem, self.mem_dropout)
        if self.variant in ("meki", "dynamic"):
            z = self.word_emb_norm(emb_rows) if self.form == "megatron" else emb_rows
            mem = mem + self.beta_scale * self.word_emb_projection(z)
        return self.alpha_scale * self.mix_norm(mem)

    def forward(self, u, ids, emb_rows):
        e = self.memory(ids, emb_rows)
        g = torch.sigmoid(self.gate_proj(u))
        return self.post_norm(self.out_proj(e.to(g.dtype) + g))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = SwiGLU(c.hidden_size, c.intermediate_size, c.hidden_size)
        self.meki_module = MeKi(c) if c.meki_variant != "dense" else None
        self.form = c.meki_form
        self.dropout = 0.0  # training only: residual dropout on each branch output (set by train.py)

    def _drop(self, y):
        return F.dropout(y, self.dropout) if self.training and self.dropout > 0 else y

    def forward(self, x, cos, sin, ids, emb_rows):
        a = x + self._drop(self.self_attn(self.input_layernorm(x), cos, sin))  # A
        h = self.post_attention_layernorm(a)  # H
        out = a + self._drop(self.mlp(h))
        if self.meki_module is not None:
            u = h if self.form == "demo" else a
            out = out + self._drop(self.meki_module(u, ids, emb_rows))
        return out


class Model(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        cos, sin = rope_cos_sin(c.max_position_embeddings, c.head_dim, c.rope_theta, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self, seed, paired=True, branch_init=1.0):
        """N(0, 0.02) matrices, scaled residual projections, norms 1.0.
        paired: the MeKi parameters come from a second generator, so the backbone of a MeKi model
        starts exactly as its dense twin with the same seed (legacy: one generator for all, in
        parameter order, which interleaves backbone and MeKi draws).
        branch_init: initial value of each MeKi post_norm weight (the branch's output scale)."""
        g = torch.Generator().manual_seed(seed)
        g_meki = torch.Generator().manual_seed(seed + 1_000_003) if paired else g
        n_resid = 2 * self.config.num_hidden_layers
        for name, p in self.named_parameters():
            if name.endswith("meki_module.post_norm.weight"):
                with torch.no_grad():
                    p.fill_(branch_init)
                continue
            if p.dim() < 2:
                continue  # norms and alpha/beta keep their 1.0 init
            std = 0.02
            if name.endswith(("o_proj.weight", "mlp.down_proj.weight")):
                std = 0.02 / math.sqrt(n_resid)  # GPT-2 style scaled residual projections
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g_meki if ".meki_module." in name else g) * std)

    def forward(self, ids):
        emb = self.embed_tokens(ids)
        x = emb
        for layer in self.layers:
            x = layer(x, self.rope_cos, self.rope_sin, ids, emb)
        x = self.norm(x)
        return F.linear(x, self.embed_tokens.weight)  # tied output head

    # ------------------------------------------------------------------ parameter accounting
    def param_counts(self):
        c = self.config
        total = sum(p.numel() for p in self.parameters())
        table = c.num_hidden_layers * c.vocab_size * c.meki_dim if c.meki_variant != "dense" else 0
        fold_only = 0  # params that the fold removes (M, G, mix_norm, alpha, beta)
        for layer in self.layers:
            m = layer.meki_module
            if m is None:
                continue
            for n, p in m.named_parameters():
                if n.startswith(("embeddings", "word_emb_projection", "word_emb_norm", "mix_norm", "alpha", "beta")):
                    fold_only += p.numel()
        return {"params_total_training": total, "params_ram": total - fold_only,
                "table_params_rom": table, "params_removed_by_fold": fold_only}

    # ------------------------------------------------------------------ HF names
    def hf_state_dict(self):
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("rope_"):
                continue
            k2 = k.replace(".word_emb_norm.weight", ".word_emb_projection.norm.weight")
            out["model." + k2] = v
        return out

    def load_hf_state_dict(self, sd):
        mine = {}
        for k, v in sd.items():
            if k == "lm_head.weight":
                continue  # tied
            assert k.startswith("model."), k
            mine[k[len("model."):].replace(".word_emb_projection.norm.weight", ".word_emb_norm.weight")] = v
        missing, unexpected = self.load_state_dict(mine, strict=False)
        missing = [m for m in missing if not m.startswith("rope_")]
        if missing or unexpected:
            raise KeyError(f"checkpoint mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, tokens, ctx, device, batch=16, autocast_dtype=None):
    """Validation NLL on non-overlapping chunks of `ctx` tokens (the trailing partial chunk is
    dropped, as llama-perplexity does). Returns both scorings:
      full: every position of each chunk predicts its next token (ctx-1 predictions per chunk);
      half: llama-perplexity style, only logits at positions ctx/2 .. ctx-2 are scored
            (ctx - 1 - ctx//2 predictions per chunk)."""
    model.eval()
    t = torch.as_tensor(tokens.astype("int64"))
    n = t.numel() // ctx
    chunks = t[: n * ctx].view(n, ctx)
    first = ctx // 2
    s_full = s_half = 0.0
    c_full = c_half = 0
    for i in range(0, n, batch):
        x = chunks[i:i + batch].to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            logits = model(x)
        nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              reduction="none").view(x.shape[0], ctx - 1)
        s_full += nll.double().sum().item()
        c_full += nll.numel()
        s_half += nll[:, first:].double().sum().item()
        c_half += nll[:, first:].numel()
    model.train()
    lf, lh = s_full / c_full, s_half / c_half
    return {"chunks": n, "ctx": ctx, "val_loss": lf, "val_ppl": math.exp(lf), "val_tokens_scored": c_full,
            "val_loss_half": lh, "val_ppl_half": math.exp(lh), "val_tokens_scored_half": c_half}
