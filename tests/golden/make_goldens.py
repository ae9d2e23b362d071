#!/usr/bin/env python3
"""Golden logits for tests/golden/test_golden_logits.cpp, computed by Hugging Face transformers.

This script is the reference oracle only: CI never runs it, it reads the committed fixtures under
tests/golden/fixtures/. Re-run it only to change the fixtures, and commit its output with it.

    # from the repository root; torch (CPU is enough), transformers, safetensors, gguf, numpy, accelerate
    scripts/fetch_models.sh                      # models/SmolLM2-135M-Instruct.Q4_1.gguf (for d)
    venv/bin/python tests/golden/make_goldens.py   # venv: pip install -r tests/golden/requirements.txt; [--only NAME ...] [--skip-smollm2]

Output (tests/golden/fixtures/):
  a) stories260k-hf/     Karpathy's stories260K (llama2.c, ../shared/models/stories260K) converted to a
                         HF Llama folder. llama2.c's RoPE rotates adjacent pairs (2i, 2i+1), HF's rotates
                         (i, i + D/2) ("rotate_half"), so wq/wk rows are permuted per head exactly as
                         transformers' convert_llama_weights_to_hf.py permute() does. The direction is
                         proven here: greedy decoding from BOS must reproduce the README's reference text.
  b) small random models (seeded; transformers' own init, matrices then scaled up so logits are O(1)):
       llama-gqa       GQA 4/2, untied head, intermediate not a power of two
       llama-tied      SmolLM2-like: tied head, GQA 6/2, rope_theta 1e5
       qwen2           q/k/v biases (non-zero), rope_theta 1e6, eps 1e-6
       llama3-rope     rope_scaling llama3 (factor 8, low 1, high 4, original 16), rope_theta 5e5, D=16
       mistral         rope_theta 1e6, sliding_window 4096 (longer than every prompt: no effect)
       mistral-swa     sliding_window 6 < prompt length: the window masks (transformers: a query
                       at position i sees keys i-5..i)
       llama-bf16      weights stored as bf16 (logits are those of the bf16 values upcast to f32)
       llama-headdim   head_dim 16 != hidden/heads = 8 (q_dim 64 > hidden 32)
       qwen3           Qwen3: per-head RMSNorm of q and k (q_norm, k_norm, random weights), no
                       biases, explicit head_dim 16 != hidden/heads = 8, rope_theta 1e6
       mixtral         Mixtral MoE: 4 experts (F 48), 2 per token, router and experts random;
                       output_router_logits on with router_aux_loss_coef 0.02 (the training
                       goldens' loss includes the load-balancing term)
       qwen3-moe       Qwen3-MoE: Qwen3 attention (q/k norms, head_dim 16), 3 layers of which
                       layer 1 is dense (mlp_only_layers [1], F 40) and layers 0, 2 sparse (4
                       experts of moe_intermediate_size 24, 2 per token, norm_topk_prob off: the
                       weights are the raw probabilities); aux loss on (coef 0.01)
     config.json spelling: transformers 5 writes `rope_parameters` (with rope_theta inside) and
     `dtype`; checkpoints on the Hub mostly carry the transformers 4 spelling (`rope_theta`,
     `rope_scaling`, `torch_dtype`). Both are covered: the fixtures listed in LEGACY_CONFIG are
     rewritten to the 4.x spelling (and reloaded to prove the rewrite is lossless); llama-tied,
     mistral and llama-headdim keep the 5.x spelling (their rope_theta is only in rope_parameters).
  c) <model>/golden_logits.safetensors: input_ids_<k> (int64, (T,)) and logits_<k> (float32, (T, V))
     from model.float(), eval(), attn_implementation="eager", the model reloaded from the folder.
     Prompts are redrawn until every position's top-1/top-2 logit gap is >= MIN_ARGMAX_GAP, so that
     comparing argmax is meaningful.
  d) smollm2-135m/golden_logits.safetensors: models/SmolLM2-135M-Instruct.Q4_1.gguf loaded by transformers
     (which dequantizes to f32 and un-permutes q/k). Per prompt: input_ids_<k>, logits_last_<k> (V),
     logits_cols16_<k> (T, ceil(V/16)) = logits[:, ::16], argmax_<k> (int64, (T,)) and top2_gap_<k>
     (float32, (T,)): the argmax is compared only where the gap exceeds the tolerance.
  versions.json: the versions of the packages that produced the goldens, seeds, fp64-vs-fp32 noise.

Deterministic: every model and prompt set comes from its own torch.manual_seed / torch.Generator.
"""
import argparse
import copy
import hashlib
import json
import os
import platform
import re
import struct
import sys
from pathlib import Path

# MKL may pick GEMM kernels by buffer alignment and thread count, changing fp32 sums in the last
# bit; its conditional-numerical-reproducibility mode (and one thread, see main) rules that out.
# Must be set before MKL loads, i.e. before importing torch.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig,
                          Qwen3MoeForCausalLM)  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "golden" / "fixtures"
STORIES_DIR = ROOT.parent / "shared" / "models" / "stories260K"
SMOLLM2_GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# Every golden position has top-1 minus top-2 logit >= this, so an implementation within the test's
# 1e-4 tolerance cannot flip an argmax.
MIN_ARGMAX_GAP = 1e-3
# Random models: transformers initialises matrices with std initializer_range = 0.02, which leaves
# logits ~0.05; scaled by this they reach std ~1-3, so an absolute tolerance means something.
WEIGHT_SCALE = 8.0
LEGACY_CONFIG = {"stories260k-hf", "llama-gqa", "qwen2", "llama3-rope", "llama-bf16", "mistral-swa"}


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# config.json spelling
# ---------------------------------------------------------------------------------------------
def write_legacy_config(folder: Path):
    """Rewrites a transformers-5 config.json in the transformers-4 spelling the Hub uses."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters", None) or {})
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# a) stories260K: llama2.c checkpoint -> HF folder
# ---------------------------------------------------------------------------------------------
def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama2.c/Meta interleaved q/k rows -> HF rotate_half rows (convert_llama_weights_to_hf.py)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def read_llama2c(path: Path):
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    data = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).copy())
    head = dim // n_heads
    kv_dim = head * n_kv_heads
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = data[pos:pos + n].view(*shape)
        pos += n
        return t

    w = {"tok": take(vocab, dim), "rms_att": take(n_layers, dim), "wq": take(n_layers, dim, dim),
         "wk": take(n_layers, kv_dim, dim), "wv": take(n_layers, kv_dim, dim), "wo": take(n_layers, dim, dim),
         "rms_ffn": take(n_layers, dim), "w1": take(n_layers, hidden, dim), "w2": take(n_layers, dim, hidden),
         "w3": take(n_layers, hidden, dim), "rms_final": take(dim)}
    take(seq_len, head // 2)  # freq_cos
    take(seq_len, head // 2)  # freq_sin
    if not shared:
        w["wcls"] = take(vocab, dim)
    assert pos == data.numel(), f"llama2.c layout: read {pos} floats of {data.numel()}"
    hp = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
              vocab=vocab, seq_len=seq_len, shared=shared)
    return hp, w


class Llama2cTokenizer:
    """llama2.c run.c's tokenizer (tok512.bin): greedy best-score BPE merges, byte fallback."""

    def __init__(self, path: Path, vocab_size: int):
        raw = path.read_bytes()
        off = 4
        self.pieces, self.scores = [], []
        for _ in range(vocab_size):
            score, n = struct.unpack_from("<fi", raw, off)
            off += 8
            self.pieces.append(raw[off:off + n])
            self.scores.append(score)
            off += n
        self.lookup = {}
        for i, p in enumerate(self.pieces):
            self.lookup.setdefault(p, i)

    def encode(self, text: str, bos: bool = True):
        ids = [1] if bos else []
        if text:
            ids.append(self.lookup[b" "])  # dummy prefix
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.lookup:
                ids.append(self.lookup[b])
            else:
                ids.extend(x + 3 for x in b)
        while True:
            best, best_id, best_i = -1e10, -1, -1
            for i in range(len(ids) - 1):
                j = self.lookup.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]], -1)
                if j != -1 and self.scores[j] > best:
                    best, best_id, best_i = self.scores[j], j, i
            if best_i == -1:
                return ids
            ids[best_i:best_i + 2] = [best_id]

    def decode(self, prev: int, tok: int) -> bytes:
        piece = self.pieces[tok]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        m = re.fullmatch(rb"<0x([0-9A-F]{2})>", piece)
        return bytes([int(m.group(1), 16)]) if m else piece


def reference_text() -> str:
    readme = (STORIES_DIR / "README.md").read_text()
    section = readme.split("## Reference output", 1)[1]
    return section.split("```", 2)[1].strip("\n")


def make_stories(out: Path):
    hp, w = read_llama2c(STORIES_DIR / "stories260K.bin")
    log(f"[stories260k-hf] llama2.c header {hp}")
    cfg = LlamaConfig(vocab_size=hp["vocab"], hidden_size=hp["dim"], intermediate_size=hp["hidden"],
                      num_hidden_layers=hp["n_layers"], num_attention_heads=hp["n_heads"],
                      num_key_value_heads=hp["n_kv_heads"], max_position_embeddings=hp["seq_len"],
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=hp["shared"],
                      bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    model = LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": w["tok"], "model.norm.weight": w["rms_final"]}
    for i in range(hp["n_layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = permute_rotary(w["wq"][i], hp["n_heads"])
        sd[p + "self_attn.k_proj.weight"] = permute_rotary(w["wk"][i], hp["n_kv_heads"])
        sd[p + "self_attn.v_proj.weight"] = w["wv"][i]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][i]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][i]
        sd[p + "mlp.down_proj.weight"] = w["w2"][i]
        sd[p + "mlp.up_proj.weight"] = w["w3"][i]
        sd[p + "input_layernorm.weight"] = w["rms_att"][i]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn"][i]
    sd["lm_head.weight"] = w["tok"] if hp["shared"] else w["wcls"]
    missing, unexpected = model.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, sd["lm_head.weight"])
    model.save_pretrained(out, safe_serialization=True)
    write_legacy_config(out)

    # Proof of the permutation direction: greedy from BOS reproduces run.c's output
    # (run.c -n 256: 256 forward steps from BOS, each printing one token; stops if it samples BOS).
    tok = Llama2cTokenizer(STORIES_DIR / "tok512.bin", hp["vocab"])
    model = load_for_goldens(out)
    ids = [1]
    with torch.no_grad():
        past = None
        inp = torch.tensor([ids])
        for _ in range(256):
            o = model(inp, past_key_values=past, use_cache=True)
            past = o.past_key_values
            nxt = int(o.logits[0, -1].argmax())
            if nxt == 1:
                break
            ids.append(nxt)
            inp = torch.tensor([[nxt]])
    text = b"".join(tok.decode(a, b) for a, b in zip(ids[:-1], ids[1:])).decode("utf-8")
    want = reference_text()
    if text.strip() != want.strip():
        log("---- got ----\n" + text + "\n---- want ----\n" + want)
        raise SystemExit("[stories260k-hf] greedy generation does not reproduce the reference output: "
                         "the q/k permutation is wrong")
    log(f"[stories260k-hf] greedy generation from BOS reproduces the reference text ({len(ids)} tokens)")

    texts = ["Once upon a time, there was a little girl named Lily.",
             "The cat sat on the mat. It was happy and it purred.",
             # longer: positions up to ~60 exercise RoPE further out
             "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
             "She said, \"I want to play with your ball.\""]
    return model, [tok.encode(t) for t in texts]


# ---------------------------------------------------------------------------------------------
# b) small random models
# ---------------------------------------------------------------------------------------------
def common(**kw):
    base = dict(num_hidden_layers=2, bos_token_id=1, eos_token_id=2, max_position_embeddings=64,
                attn_implementation="eager")
    base.update(kw)
    return base


RANDOM_MODELS = {
    "llama-gqa": (LlamaForCausalLM, LlamaConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=72, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False), 1001),
    "llama-tied": (LlamaForCausalLM, LlamaConfig, common(
        vocab_size=128, hidden_size=48, intermediate_size=48, num_attention_heads=6, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True), 1002),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, common(
        vocab_size=144, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False), 1003),
    "llama3-rope": (LlamaForCausalLM, LlamaConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}), 1004),
    "mistral": (MistralForCausalLM, MistralConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=4096), 1005),
    "mistral-swa": (MistralForCausalLM, MistralConfig, common(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, sliding_window=6), 1006),
    "llama-bf16": (LlamaForCausalLM, LlamaConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False), 1007),
    "llama-headdim": (LlamaForCausalLM, LlamaConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False), 1008),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config, common(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        attention_bias=False, use_sliding_window=False), 1009),
    "mixtral": (MixtralForCausalLM, MixtralConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
        num_local_experts=4, num_experts_per_tok=2, output_router_logits=True, router_aux_loss_coef=0.02,
        experts_implementation="eager",
        rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None), 1010),
    "qwen3-moe": (Qwen3MoeForCausalLM, Qwen3MoeConfig, common(
        vocab_size=128, hidden_size=32, intermediate_size=40, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, num_hidden_layers=3, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
        norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], output_router_logits=True,
        router_aux_loss_coef=0.01, experts_implementation="eager", rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=False, use_sliding_window=False), 1011),
}


def make_random(name: str, out: Path):
    model_cls, config_cls, kw, seed = RANDOM_MODELS[name]
    torch.manual_seed(seed)
    cfg = config_cls(**kw)
    model = model_cls(cfg).float().eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim >= 2:  # matrices, and the (E, out, in) stacks of transformers 5's MoE experts
                p.mul_(WEIGHT_SCALE)
            elif pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # not all ones: the norm weight must matter
            elif pname.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))  # transformers initialises biases to zero
            else:
                raise AssertionError(f"unexpected parameter {pname}")
        if name == "llama-bf16":  # the f32 reference holds the bf16 values exactly
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    # (a bf16 copy for saving: casting `model` itself would also round its RoPE inv_freq buffer)
    to_save = copy.deepcopy(model).to(torch.bfloat16) if name == "llama-bf16" else model
    to_save.save_pretrained(out, safe_serialization=True)
    if name in LEGACY_CONFIG:
        write_legacy_config(out)
    reloaded = load_for_goldens(out)
    # The saved folder (and a rewritten config) must mean exactly the model we built.
    probe = torch.arange(20).remainder(cfg.vocab_size).unsqueeze(0)
    with torch.no_grad():
        a = model(probe).logits
        b = reloaded(probe).logits
    assert torch.equal(a, b), f"[{name}] reloaded folder differs from the built model: {(a - b).abs().max()}"
    return reloaded


# ---------------------------------------------------------------------------------------------
# c) goldens
# ---------------------------------------------------------------------------------------------
def load_for_goldens(folder: Path):
    # Eager experts (transformers 5's per-expert loop): its grouped_mm kernels take no float64.
    extra = {"experts_implementation": "eager"} if "num_experts_per_tok" in (folder / "config.json").read_text() else {}
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32,
                                                **extra).float().eval()


def golden_metadata(**fields) -> dict:
    """safetensors __metadata__ as ONE key holding sorted JSON: safetensors writes several keys in
    hash-map order, which would make the files differ from run to run."""
    fields["producer"] = "tests/golden/make_goldens.py"
    return {"golden": json.dumps(fields, sort_keys=True)}


def top2_gap(logits: torch.Tensor) -> torch.Tensor:  # (T, V) -> (T,)
    top = logits.topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def random_prompts(vocab: int, seed: int, lengths, model, prefix=()):
    """Random ids after `prefix`, redrawn (same generator) until every position has a clear argmax."""
    gen = torch.Generator().manual_seed(seed)
    prompts = []
    for n in lengths:
        for _ in range(100):
            ids = list(prefix) + torch.randint(0, vocab, (n - len(prefix),), generator=gen).tolist()
            with torch.no_grad():
                if top2_gap(model(torch.tensor([ids])).logits[0]).min() >= MIN_ARGMAX_GAP:
                    break
        else:
            raise SystemExit(f"no prompt of length {n} with argmax gaps >= {MIN_ARGMAX_GAP}")
        prompts.append(ids)
    return prompts


def write_goldens(name: str, model, prompts, out: Path, info: dict):
    tensors, worst64, max_abs = {}, 0.0, 0.0
    model64 = None
    for k, ids in enumerate(prompts):
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float().contiguous()
            if model64 is None:  # fp64 twin: measures the fp32 summation-order noise
                model64 = copy.deepcopy(model).double()
            logits64 = model64(x).logits[0]
        gap = float(top2_gap(logits).min())
        if gap < MIN_ARGMAX_GAP:
            raise SystemExit(f"[{name}] prompt {k}: argmax gap {gap:.2e} < {MIN_ARGMAX_GAP}; pick another prompt")
        worst64 = max(worst64, float((logits.double() - logits64).abs().max()))
        max_abs = max(max_abs, float(logits.abs().max()))
        tensors[f"input_ids_{k}"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"logits_{k}"] = logits
    save_file(tensors, str(out / "golden_logits.safetensors"), metadata=golden_metadata(prompts=len(prompts)))
    size = sum(f.stat().st_size for f in out.iterdir())
    info[name] = {"prompts": [len(p) for p in prompts], "max_abs_logit": round(max_abs, 4),
                  "fp32_vs_fp64_max_abs": float(f"{worst64:.3g}"), "folder_bytes": size}
    log(f"[{name}] prompts {[len(p) for p in prompts]}, max |logit| {max_abs:.3f}, "
        f"fp32 vs fp64 {worst64:.2e}, folder {size / 1024:.1f} KiB")


# ---------------------------------------------------------------------------------------------
# d) SmolLM2-135M-Instruct (Q4_1 GGUF)
# ---------------------------------------------------------------------------------------------
SMOLLM2_PROMPTS = ["The capital of France is",
                   "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"]
SMOLLM2_STRIDE = 16


def make_smollm2(out: Path, info: dict):
    d, f = str(SMOLLM2_GGUF.parent), SMOLLM2_GGUF.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    # transformers dequantizes every GGUF tensor to f32 (and un-permutes q/k): .float() is refused.
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    assert model.dtype == torch.float32
    tensors, max_abs = {}, 0.0
    for k, text in enumerate(SMOLLM2_PROMPTS):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        max_abs = max(max_abs, float(logits.abs().max()))
        tensors[f"input_ids_{k}"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"logits_last_{k}"] = logits[-1].contiguous()
        tensors[f"logits_cols16_{k}"] = logits[:, ::SMOLLM2_STRIDE].contiguous()
        tensors[f"argmax_{k}"] = logits.argmax(-1).to(torch.int64)
        tensors[f"top2_gap_{k}"] = top2_gap(logits).contiguous()
        log(f"[smollm2-135m] prompt {k}: {len(ids)} ids {ids}; greedy next: {tok.decode([int(logits[-1].argmax())])!r}")
    sha = hashlib.sha256(SMOLLM2_GGUF.read_bytes()).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "golden_logits.safetensors"),
              metadata=golden_metadata(prompts=len(SMOLLM2_PROMPTS), gguf_file=f, gguf_sha256=sha,
                                       column_stride=SMOLLM2_STRIDE))
    size = (out / "golden_logits.safetensors").stat().st_size
    info["smollm2-135m"] = {"gguf_file": f, "gguf_sha256": sha, "prompts": SMOLLM2_PROMPTS,
                            "max_abs_logit": round(max_abs, 4), "folder_bytes": size}
    log(f"[smollm2-135m] golden {size / 1024:.1f} KiB")


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="fixture names to regenerate (default: all)")
    ap.add_argument("--skip-smollm2", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # see MKL_CBWR above
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    wanted = lambda n: not args.only or n in args.only  # noqa: E731

    versions_path = FIXTURES / "versions.json"
    versions = json.loads(versions_path.read_text()) if versions_path.exists() else {}
    info = versions.get("fixtures", {})

    if wanted("stories260k-hf"):
        out = FIXTURES / "stories260k-hf"
        out.mkdir(parents=True, exist_ok=True)
        model, prompts = make_stories(out)
        prompts = random_prompts(512, 2000, [12], model, prefix=[1]) + prompts  # BOS first, like real input
        write_goldens("stories260k-hf", model, prompts, out, info)
    for name, (_, _, kw, seed) in RANDOM_MODELS.items():
        if not wanted(name):
            continue
        out = FIXTURES / name
        out.mkdir(parents=True, exist_ok=True)
        model = make_random(name, out)
        lengths = [5, 13, 24] if name != "mistral-swa" else [9, 17, 24]
        write_goldens(name, model, random_prompts(kw["vocab_size"], seed + 10000, lengths, model), out, info)
        info[name]["seed"] = seed
    if wanted("smollm2-135m") and not args.skip_smollm2:
        if not SMOLLM2_GGUF.exists():
            raise SystemExit(f"{SMOLLM2_GGUF} missing: run scripts/fetch_models.sh")
        make_smollm2(FIXTURES / "smollm2-135m", info)

    import gguf  # noqa: F401 (version record only)
    from importlib.metadata import version
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "safetensors": version("safetensors"),
                "gguf": version("gguf"), "numpy": np.__version__, "accelerate": version("accelerate"),
                "min_argmax_gap": MIN_ARGMAX_GAP, "weight_scale": WEIGHT_SCALE,
                "fixtures": dict(sorted(info.items()))}
    versions_path.write_text(json.dumps(versions, indent=2) + "\n")
    log(f"wrote {versions_path}")


if __name__ == "__main__":
    sys.exit(main())
