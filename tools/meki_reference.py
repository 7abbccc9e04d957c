#!/usr/bin/env python3
"""Reference MeKi checkpoints and outputs for the converter tests (numpy only).

    python3 tools/meki_reference.py [--out tests/fixtures/meki]

Independent of the Rust code: it writes small random MeKi checkpoints in BOTH
official forms (MEKI.md) and the reference results of the TRAINING form:

  hf_demo/       HF-style dir: config.json, model.safetensors (f32), tokenizer.json,
                 tokenizer_config.json. Demo form, static + dynamic memory.
  hf_megatron_dynamic/  HF naming with the Megatron form (G's input RMSNorm stored as
                 word_emb_projection.norm.weight, as tools/train exports it),
                 dynamic memory only, 2 safetensors shards + index, bf16 weights.
  hf_static/     HF dir, demo form, static memory only.
  megatron/      Megatron-LM torch checkpoint (latest_checkpointed_iteration.txt,
                 iter_0000010/mp_rank_00/model_optim_rng.pt), written WITHOUT torch:
                 a zip of a protocol-2 pickle (_rebuild_tensor_v2, persistent-id
                 storages, OrderedDict, argparse.Namespace) plus raw storages, as
                 torch.save lays it out. Fused QKV (per KV group), fused fc1,
                 padded vocabulary (384 rows for 300 tokens), rotate-half rope, no
                 QK-norm, tied embeddings, the MeKi branch reading the residual.
  megatron_torch_bf16/  model_optim_rng.pt written by real torch.save (torch 2.11) from the
                 megatron/ checkpoint with bf16 weights (not regenerated here: needs torch);
                 only its reference outputs are written by this script.
  tokenizer/     the tokenizer alone (for --tokenizer with the Megatron checkpoint).

Each model dir gets reference.json (token ids, shapes) and
  expected_table.f32   folded tables, token-major [n_vocab, n_layer * d_mem], little-endian f32
  expected_logits.f32  logits [n_tokens, n_vocab] of the unfolded training form
  expected_logits_backbone.f32  the same without the MeKi branch (the backbone alone)
computed in float64. Tiny dims: 300 tokens, d = 64, 2 layers, d_mem = 32.
"""
import argparse
import io
import json
import os
import struct
import zipfile

import numpy as np

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
N_MERGES = 41  # 256 bytes + 41 merges + 3 specials = 300 tokens
TEXT = ("the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs there and then "
        "they meet at the river. memory tables hold the knowledge of the tokens in the model. ") * 3
IDS = [297, 10, 270, 33, 256, 84, 290, 3, 299, 150, 77, 280]  # fixed test sequence (< 300)


# ----------------------------------------------------------------------------- tokenizer
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def make_tokenizer():
    bs, cs = bytes_to_unicode()
    b2u = dict(zip(bs, cs))
    vocab = {cs[i]: i for i in range(256)}  # byte symbols in GPT-2 order, like Qwen's vocab
    words = []
    for i, w in enumerate(TEXT.split(" ")):
        w = (" " if i else "") + w
        words.append([b2u[b] for b in w.encode()])
    merges = []
    while len(merges) < N_MERGES:
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        (a, b), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append([a, b])
        vocab[a + b] = len(vocab)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    n_bpe = len(vocab)
    added = [{"id": n_bpe + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    cfg = {
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "add_prefix_space": False,
        "chat_template": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}",
    }
    assert n_bpe + len(SPECIALS) == 300
    return tok, cfg


def write_tokenizer(d, tok, cfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=1)


# ----------------------------------------------------------------------------- model
class Cfg:
    def __init__(self, **kw):
        self.vocab = 300
        self.rows = 320
        self.d = 64
        self.ff = 96
        self.n_layer = 2
        self.nq = 4
        self.nkv = 2
        self.hd = 16
        self.d_mem = 32
        self.eps = 1e-6
        self.theta = 10000.0
        self.qk_norm = True
        self.form = "demo"
        self.variant = "both"
        self.__dict__.update(kw)


def make_params(c, seed):
    """Canonical (HF-like, unfused) float64 parameters."""
    rng = np.random.default_rng(seed)
    w = lambda *s, std=0.15: rng.normal(0, std, s)
    nw = lambda n: 1.0 + rng.normal(0, 0.1, n)
    p = {"embd": w(c.rows, c.d, std=0.5), "out_norm": nw(c.d)}
    for l in range(c.n_layer):
        L = {"attn_norm": nw(c.d), "q": w(c.nq * c.hd, c.d), "k": w(c.nkv * c.hd, c.d), "v": w(c.nkv * c.hd, c.d),
             "o": w(c.d, c.nq * c.hd), "ffn_norm": nw(c.d), "gate": w(c.ff, c.d), "up": w(c.ff, c.d),
             "down": w(c.d, c.ff),
             "mix": nw(c.d_mem), "alpha": 0.8 + 0.1 * l, "beta": 1.3 - 0.2 * l,
             "mgate": w(c.d_mem, c.d, std=0.3), "mout": w(c.d, c.d_mem, std=0.3), "post": nw(c.d)}
        if c.qk_norm:
            L["q_norm"], L["k_norm"] = nw(c.hd), nw(c.hd)
        if c.variant in ("both", "static"):
            L["M"] = w(c.rows, c.d_mem, std=1.0)
        if c.variant in ("both", "dynamic"):
            L["gg"], L["gu"], L["gd"] = w(c.d // 2, c.d, std=0.3), w(c.d // 2, c.d, std=0.3), w(c.d_mem, c.d // 2, std=0.3)
            if c.form == "megatron":
                L["gnorm"] = nw(c.d)
        p[l] = L
    return p


def round_bf16(a):
    """float64 -> values exactly representable in bf16 (round to nearest even)."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def map_params(p, fn):
    out = {}
    for k, v in p.items():
        out[k] = {kk: fn(vv) for kk, vv in v.items()} if isinstance(v, dict) else fn(v)
    return out


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def memory(c, L, emb_rows, ids):
    """Token-only part of the MeKi branch: what the fold turns into T[x]."""
    mem = np.zeros((len(ids), c.d_mem))
    if "M" in L:
        mem = mem + L["M"][ids]
    if "gd" in L:
        z = rms(emb_rows, L["gnorm"], c.eps) if c.form == "megatron" else emb_rows
        mem = mem + L["beta"] * ((silu(z @ L["gg"].T) * (z @ L["gu"].T)) @ L["gd"].T)
    return L["alpha"] * rms(mem, L["mix"], c.eps)


def rope(x, pos, theta):  # x: (T, heads, hd), rotate-half (NeoX)
    hd = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    f = np.outer(pos, inv)
    cos, sin = np.cos(np.concatenate([f, f], -1))[:, None], np.sin(np.concatenate([f, f], -1))[:, None]
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * cos + rot * sin


def forward(c, p, ids, meki=True):
    ids = np.asarray(ids)
    T = len(ids)
    emb = p["embd"][ids]
    x = emb
    for l in range(c.n_layer):
        L = p[l]
        h = rms(x, L["attn_norm"], c.eps)
        q = (h @ L["q"].T).reshape(T, c.nq, c.hd)
        k = (h @ L["k"].T).reshape(T, c.nkv, c.hd)
        v = (h @ L["v"].T).reshape(T, c.nkv, c.hd)
        if c.qk_norm:
            q, k = rms(q, L["q_norm"], c.eps), rms(k, L["k_norm"], c.eps)
        q, k = rope(q, np.arange(T), c.theta), rope(k, np.arange(T), c.theta)
        rep = c.nq // c.nkv
        o = np.zeros((T, c.nq, c.hd))
        mask = np.triu(np.ones((T, T), bool), 1)
        for hh in range(c.nq):
            s = q[:, hh] @ k[:, hh // rep].T / np.sqrt(c.hd)
            s[mask] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, hh // rep]
        a = x + o.reshape(T, -1) @ L["o"].T
        H = rms(a, L["ffn_norm"], c.eps)
        out = a + (silu(H @ L["gate"].T) * (H @ L["up"].T)) @ L["down"].T
        if meki:
            u = H if c.form == "demo" else a
            e = memory(c, L, emb, ids)
            g = 1 / (1 + np.exp(-(u @ L["mgate"].T)))
            out = out + rms((e + g) @ L["mout"].T, L["post"], c.eps)
        x = out
    x = rms(x, p["out_norm"], c.eps)
    return x @ p["embd"][:c.vocab].T  # tied head; padding rows dropped


def folded_tables(c, p):
    ids = np.arange(c.vocab)
    return np.concatenate([memory(c, p[l], p["embd"][ids], ids) for l in range(c.n_layer)], axis=1)


# ----------------------------------------------------------------------------- safetensors
def write_safetensors(path, tensors, dtype="F32"):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if dtype == "BF16":
            raw = (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = np.asarray(a, "<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def hf_state(c, p):
    sd = {"model.embed_tokens.weight": p["embd"], "model.norm.weight": p["out_norm"]}
    for l in range(c.n_layer):
        L, pre = p[l], f"model.layers.{l}."
        names = {"input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "q", "self_attn.k_proj.weight": "k",
                 "self_attn.v_proj.weight": "v", "self_attn.o_proj.weight": "o", "self_attn.q_norm.weight": "q_norm",
                 "self_attn.k_norm.weight": "k_norm", "post_attention_layernorm.weight": "ffn_norm",
                 "mlp.gate_proj.weight": "gate", "mlp.up_proj.weight": "up", "mlp.down_proj.weight": "down",
                 "meki_module.embeddings.weight": "M", "meki_module.word_emb_projection.gate_proj.weight": "gg",
                 "meki_module.word_emb_projection.up_proj.weight": "gu",
                 "meki_module.word_emb_projection.down_proj.weight": "gd",
                 "meki_module.word_emb_projection.norm.weight": "gnorm", "meki_module.mix_norm.weight": "mix",
                 "meki_module.gate_proj.weight": "mgate", "meki_module.out_proj.weight": "mout",
                 "meki_module.post_norm.weight": "post"}
        for hn, k in names.items():
            if k in L:
                sd[pre + hn] = L[k]
        sd[pre + "meki_module.alpha_scale"] = np.array(L["alpha"])
        sd[pre + "meki_module.beta_scale"] = np.array(L["beta"])
    return sd


def hf_config(c):
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": c.rows,
            "hidden_size": c.d, "intermediate_size": c.ff, "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.nq, "num_key_value_heads": c.nkv, "head_dim": c.hd, "rms_norm_eps": c.eps,
            "rope_theta": c.theta, "max_position_embeddings": 256, "tie_word_embeddings": True,
            "hidden_act": "silu", "attention_bias": False, "rope_scaling": None, "torch_dtype": "float32",
            "bos_token_id": 297, "eos_token_id": 297, "meki_dim": c.d_mem, "meki_form": c.form}


# ----------------------------------------------------------------------------- torch.save without torch
class Tensor:
    def __init__(self, a, storage=None, offset=0):
        self.a = np.asarray(a, "<f4")
        self.storage, self.offset = storage, offset


class Pickler:
    """Protocol-2 pickle as torch.save writes it (memo puts, batched SETITEMS)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0
        self.globals = {}
        self.storages = {}  # key -> bytes

    def put(self):
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)
        self.memo += 1

    def glob(self, mod, name):
        k = (mod, name)
        if k in self.globals:
            i = self.globals[k]
            self.out += b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)
            return
        self.out += b"c" + mod.encode() + b"\n" + name.encode() + b"\n"
        self.globals[k] = self.memo
        self.put()

    def save(self, o):
        out = self.out
        if o is None:
            out += b"N"
        elif o is True or o is False:
            out += b"\x88" if o else b"\x89"
        elif isinstance(o, int):
            if 0 <= o < 256:
                out += b"K" + bytes([o])
            elif 0 <= o < 65536:
                out += b"M" + struct.pack("<H", o)
            elif -2**31 <= o < 2**31:
                out += b"J" + struct.pack("<i", o)
            else:
                b = o.to_bytes(9, "little", signed=True).rstrip(b"\x00") or b"\x00"
                out += b"\x8a" + bytes([len(b)]) + b
        elif isinstance(o, float):
            out += b"G" + struct.pack(">d", o)
        elif isinstance(o, str):
            b = o.encode()
            out += b"X" + struct.pack("<I", len(b)) + b
            self.put()
        elif isinstance(o, tuple):
            if len(o) == 0:
                out += b")"
                return
            if len(o) <= 3:
                for x in o:
                    self.save(x)
                out += bytes([0x84 + len(o)])
            else:
                out += b"("
                for x in o:
                    self.save(x)
                out += b"t"
            self.put()
        elif isinstance(o, list):
            out += b"]"
            self.put()
            if o:
                out += b"("
                for x in o:
                    self.save(x)
                out += b"e"
        elif isinstance(o, dict):
            out += b"}"
            self.put()
            self.items(o)
        elif isinstance(o, OrderedDict):
            self.glob("collections", "OrderedDict")
            out += b")R"
            self.put()
            self.items(o.d)
        elif isinstance(o, Namespace):
            self.glob("argparse", "Namespace")
            out += b")\x81"
            self.put()
            self.save(dict(o.d))
            out += b"b"
        elif isinstance(o, Global):
            self.glob(o.mod, o.name)
        elif isinstance(o, BytesIO):
            self.glob("_io", "BytesIO")
            self.glob("_codecs", "encode")
            self.save((o.b.decode("latin1"), "latin1"))
            out += b"R"
            self.put()
            out += b"\x85R"
            self.put()
        elif isinstance(o, Tensor):
            self.tensor(o)
        else:
            raise TypeError(type(o))

    def items(self, d):
        items = list(d.items())
        for i in range(0, len(items), 1000):  # pickle's batch size
            self.out += b"("
            for k, v in items[i:i + 1000]:
                self.save(k)
                self.save(v)
            self.out += b"u"

    def tensor(self, t):
        key = t.storage if t.storage is not None else str(len(self.storages))
        if key not in self.storages:
            self.storages[key] = t.a.tobytes() if t.storage is None else None
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("
        # persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel)
        self.out += b"("
        self.save("storage")
        self.glob("torch", "FloatStorage")
        self.save(key)
        self.save("cpu")
        numel = len(self.storages[key]) // 4 if self.storages[key] is not None else t.numel_storage
        self.save(numel)
        self.out += b"t"
        self.put()
        self.out += b"Q"
        self.save(t.offset)
        shape = tuple(t.a.shape)
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        self.save(shape)
        self.save(stride)
        self.save(False)
        self.save(OrderedDict({}))
        self.out += b"t"
        self.put()
        self.out += b"R"
        self.put()


class OrderedDict:
    def __init__(self, d):
        self.d = d


class Namespace:
    def __init__(self, **d):
        self.d = d


class Global:
    def __init__(self, mod, name):
        self.mod, self.name = mod, name


class BytesIO:
    def __init__(self, b):
        self.b = b


def torch_save(path, obj, shared=None):
    """shared: {key: float32 array} storages that several tensors view with offsets."""
    pk = Pickler()
    for k, a in (shared or {}).items():
        pk.storages[k] = np.asarray(a, "<f4").tobytes()
    pk.save(obj)
    pk.out += b"."
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arc = "model_optim_rng"
    entry = lambda n: zipfile.ZipInfo(n, date_time=(2026, 1, 1, 0, 0, 0))  # reproducible bytes
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry(f"{arc}/data.pkl"), bytes(pk.out))
        z.writestr(entry(f"{arc}/byteorder"), "little")
        for k, b in pk.storages.items():
            z.writestr(entry(f"{arc}/data/{k}"), b)
        z.writestr(entry(f"{arc}/version"), "3\n")


def megatron_state(c, p):
    m = {"embedding.word_embeddings.weight": Tensor(p["embd"]),
         "decoder.final_layernorm.weight": Tensor(p["out_norm"])}
    shared = {}
    g = c.nq // c.nkv
    for l in range(c.n_layer):
        L, pre = p[l], f"decoder.layers.{l}."
        q = L["q"].reshape(c.nkv, g * c.hd, c.d)
        k = L["k"].reshape(c.nkv, c.hd, c.d)
        v = L["v"].reshape(c.nkv, c.hd, c.d)
        qkv = np.concatenate([q, k, v], axis=1).reshape(-1, c.d)  # per KV group: q heads, k, v
        m[pre + "self_attention.linear_qkv.layer_norm_weight"] = Tensor(L["attn_norm"])
        m[pre + "self_attention.linear_qkv.weight"] = Tensor(qkv)
        m[pre + "self_attention.linear_qkv._extra_state"] = BytesIO(b"te-fp8-meta")
        m[pre + "self_attention.linear_proj.weight"] = Tensor(L["o"])
        m[pre + "self_attention.linear_proj._extra_state"] = None
        m[pre + "mlp.linear_fc1.layer_norm_weight"] = Tensor(L["ffn_norm"])
        m[pre + "mlp.linear_fc1.weight"] = Tensor(np.concatenate([L["gate"], L["up"]]))
        m[pre + "mlp.linear_fc2.weight"] = Tensor(L["down"])
        mk = pre + "meki_module."
        if "M" in L:
            m[mk + "embeddings.weight"] = Tensor(L["M"])
        if "gd" in L:
            m[mk + "word_emb_projection.linear_fc1.layer_norm_weight"] = Tensor(L["gnorm"])
            m[mk + "word_emb_projection.linear_fc1.weight"] = Tensor(np.concatenate([L["gg"], L["gu"]]))
            m[mk + "word_emb_projection.linear_fc1._extra_state"] = BytesIO(b"")
            m[mk + "word_emb_projection.linear_fc2.weight"] = Tensor(L["gd"])
        m[mk + "mix_norm.weight"] = Tensor(L["mix"])
        # alpha and beta: 0-d views into one shared storage (offsets 0 and 1)
        key = f"ab{l}"
        shared[key] = np.array([L["alpha"], L["beta"]])
        ta, tb = Tensor(np.array(L["alpha"]), key, 0), Tensor(np.array(L["beta"]), key, 1)
        m[mk + "alpha_scale"], m[mk + "beta_scale"] = ta, tb
        m[mk + "gate_proj.weight"] = Tensor(L["mgate"])
        m[mk + "out_proj.weight"] = Tensor(L["mout"])
        m[mk + "post_norm.weight"] = Tensor(L["post"])
    return m, shared


def megatron_args(c):
    return Namespace(num_layers=c.n_layer, hidden_size=c.d, ffn_hidden_size=c.ff, num_attention_heads=c.nq,
                     group_query_attention=True, num_query_groups=c.nkv, kv_channels=c.hd, norm_epsilon=c.eps,
                     rotary_base=int(c.theta), padded_vocab_size=c.rows, vocab_size=c.vocab, qk_layernorm=False,
                     max_position_embeddings=256, seq_length=256, untie_embeddings_and_output_weights=False,
                     normalization="RMSNorm", swiglu=True, add_bias_linear=False, add_qkv_bias=False,
                     position_embedding_type="rope", rotary_percent=1.0, rotary_interleaved=False,
                     apply_layernorm_1p=False, transformer_impl="transformer_engine",
                     params_dtype=Global("torch", "float32"), meki_dim=c.d_mem, lr=3e-4,
                     train_iters=10, tokenizer_type="HuggingFaceTokenizer", data_path=["corpus_text_document"])


# ----------------------------------------------------------------------------- main
def write_reference(d, c, p):
    os.makedirs(d, exist_ok=True)
    logits = forward(c, p, IDS)
    table = folded_tables(c, p)
    np.asarray(logits, "<f4").tofile(os.path.join(d, "expected_logits.f32"))
    # the backbone alone (MeKi branch removed): what the --split-tables main file computes
    np.asarray(forward(c, p, IDS, meki=False), "<f4").tofile(os.path.join(d, "expected_logits_backbone.f32"))
    np.asarray(table, "<f4").tofile(os.path.join(d, "expected_table.f32"))
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"ids": IDS, "n_vocab": c.vocab, "n_layer": c.n_layer, "d_mem": c.d_mem, "form": c.form,
                   "variant": c.variant, "embedding_rows": c.rows}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/meki")
    a = ap.parse_args()
    tok, tcfg = make_tokenizer()
    write_tokenizer(os.path.join(a.out, "tokenizer"), tok, tcfg)

    # HF demo form, both memories, f32
    f32 = lambda x: np.asarray(x, np.float32).astype(np.float64)  # the reference uses the stored values
    c = Cfg()
    p = map_params(make_params(c, 1), f32)
    d = os.path.join(a.out, "hf_demo")
    write_tokenizer(d, tok, tcfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(c), f, indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), hf_state(c, p))
    write_reference(d, c, p)

    # HF naming, Megatron form, dynamic only, bf16 in two shards
    c = Cfg(form="megatron", variant="dynamic")
    p = map_params(make_params(c, 2), round_bf16)
    d = os.path.join(a.out, "hf_megatron_dynamic")
    write_tokenizer(d, tok, tcfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(c), f, indent=1)
    sd = hf_state(c, p)
    names = sorted(sd)
    shards = [names[:len(names) // 2], names[len(names) // 2:]]
    wmap = {}
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(d, fn), {k: sd[k] for k in sh}, "BF16")
        wmap.update({k: fn for k in sh})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wmap}, f, indent=1)
    write_reference(d, c, p)

    # HF demo form, static only
    c = Cfg(variant="static", d_mem=32)
    p = map_params(make_params(c, 3), f32)
    d = os.path.join(a.out, "hf_static")
    write_tokenizer(d, tok, tcfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(c), f, indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), hf_state(c, p))
    write_reference(d, c, p)

    # Megatron torch checkpoint: both memories, no QK-norm, rope base 500000, padded vocabulary
    c = Cfg(form="megatron", qk_norm=False, theta=500000.0, rows=384)
    p = map_params(make_params(c, 4), f32)
    d = os.path.join(a.out, "megatron")
    model, shared = megatron_state(c, p)
    ckpt = {"args": megatron_args(c), "checkpoint_version": 3.0, "iteration": 10, "model": OrderedDict(model),
            "rng_state": [{"random_rng_state": (3, tuple(range(5)), None), "np_rng_state": ("MT19937", 1, 2)}],
            "num_floating_point_operations_so_far": 123456789012}
    torch_save(os.path.join(d, "iter_0000010", "mp_rank_00", "model_optim_rng.pt"), ckpt, shared)
    with open(os.path.join(d, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("10")
    write_reference(d, c, p)
    # The same checkpoint re-saved by REAL torch with bf16 weights (committed .pt, made once with
    # torch 2.11: m = torch.load(megatron .pt, weights_only=False); weights .bfloat16(); torch.save):
    # its reference uses the same parameters rounded to bf16 (torch rounds to nearest even).
    write_reference(os.path.join(a.out, "megatron_torch_bf16"), c, map_params(p, round_bf16))


if __name__ == "__main__":
    main()
