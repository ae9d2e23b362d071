#!/usr/bin/env python3
"""Training goldens for the parity tests of the training engine (tests/parity/test_train_*.cpp):
losses, logits, gradients and 10-step AdamW loss curves computed by PyTorch + transformers + PEFT
(+ bitsandbytes for the NF4 base weights of QLoRA).

This script is the reference oracle only: CI never runs it, the tests read the committed files it
writes. Re-run it only to change them, and commit its output with it (layout: README.md here).

    # from the repository root; venv: pip install -r tests/golden/requirements.txt
    venv/bin/python tests/parity/golden/make_train_goldens.py [--only llama-gqa|qwen2|qwen3|mixtral ...] [--check]

Base models: the committed tiny HF folders tests/golden/fixtures/llama-gqa (GQA 4/2, D 8, F 72,
V 128), tests/golden/fixtures/qwen2 (q/k/v biases, V 144) and tests/golden/fixtures/qwen3 (per-head
q/k RMSNorm, head_dim 16 != C/H, V 128), tests/golden/fixtures/mixtral (4 experts, 2 per
token, aux loss coef 0.02) and tests/golden/fixtures/qwen3-moe (Qwen3 attention, sparse layers 0
and 2 around dense layer 1, raw top-k weights, aux loss coef 0.01), loaded in f32 with
attn_implementation="eager" (MoE: experts_implementation="eager"). On the MoE fixtures LoRA
wraps nn.Linear projections only: attention (all of them on qwen3-moe, whose gate/up/down_proj
would name the experts too; all seven names on mixtral, whose MLP has none);
the loss includes router_aux_loss_coef x the load-balancing loss, as transformers computes it;
full_grads and the NF4 weights are stored under the checkpoint's per-expert names (transformers 5
stacks a layer's experts into gate_up_proj and down_proj), and QLoRA's NF4 base covers the
experts, quantized per expert and matrix as the engine does. Batch (B=2, T=24): seeded ids; seq 0 has its first 6 labels ignored
(a prompt), seq 1 its first 9, and seq 1 is right-padded over its last 5 positions (attention_mask 0,
labels -100, ids PAD_ID). transformers shifts the labels inside the model; the loss is the mean
cross-entropy over the non-ignored shifted targets (28 of them).

Cases, one safetensors file each under tests/parity/golden/<model>/:
  lora_grads         PEFT LoRA (r 4, alpha 8, all 7 projections) with every A and B seeded random
                     (B != 0, so dA != 0): loss, logits (B, T, V), every A/B and its gradient
  lora_rslora_grads  the same A/B with use_rslora=True (scale alpha/sqrt(r) = 4): loss, gradients
  full_grads         no PEFT, every model parameter trainable: loss, gradient of every parameter
  lora_curve         PEFT's own init (A kaiming-uniform from the seed, B = 0), then 10 steps of
                     AdamW(lr 5e-3, betas (0.9, 0.999), eps 1e-8, wd 0.01) with clip_grad_norm_(1.0)
                     on the same batch, constant LR: initial A/B, the 10 losses, the 10 pre-clip
                     grad norms and the final A/B
  qlora_grads        lora_grads on the NF4 base: every q/k/v/o/gate/up/down weight replaced by its
                     bitsandbytes NF4 round trip (blocksize 64, double quantization), which is the
                     weight a QLoRA forward/backward computes with; also the round-tripped weights.
                     Cross-checked on every run against real bnb Linear4bit layers
                     (BitsAndBytesConfig) + PEFT: bit-identical with bitsandbytes 0.50.2 on CPU
                     where its CPU dequantize follows the format (nf4_round_trip_weight)
  qlora_curve        lora_curve on the NF4 base (its NF4 weights are those saved in qlora_grads)
Every case is also run in float64 (same weights, A/B upcast) to measure the f32 rounding noise.
Settings, versions and the f32-vs-f64 discrepancies go into train_goldens.json (and each file's
safetensors __metadata__["settings"]).

Deterministic: seeded generators, one thread, torch.use_deterministic_algorithms(True), MKL CBWR.
--check regenerates everything in memory and compares it bit for bit with the files on disk.
"""
import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

# MKL may pick GEMM kernels by alignment and thread count, changing f32 sums in the last bit; its
# conditional-numerical-reproducibility mode (and one thread, see main) rules that out. Must be set
# before MKL loads, i.e. before importing torch.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import bitsandbytes  # noqa: E402
import bitsandbytes.functional as bnbf  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "golden" / "fixtures"
OUT = Path(__file__).resolve().parent

# fixture folder -> seed of everything drawn for it
MODELS = {"llama-gqa": 2001, "qwen2": 2002, "qwen3": 2003, "llama-headdim": 2004, "mixtral": 2005, "qwen3-moe": 2006}
B, T = 2, 24
PROMPT_LEN = (6, 9)   # labels -100 on these prefixes (seq 0, seq 1)
PAD_LEN = (0, 5)      # right padding (attention_mask 0, labels -100)
PAD_ID = 0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, bias="none")
RANDOM_AB_STD = 0.1   # std of the seeded random A and B of the *_grads cases
STEPS = 10
ADAMW = dict(lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
MAX_GRAD_NORM = 1.0
NF4 = dict(blocksize=64, quant_type="nf4", compress_statistics=True)


def log(*args):
    print(*args, flush=True)


# MoE fixtures (mixtral, qwen3-moe). transformers 5 holds a layer's experts as two stacked
# parameters, mlp.experts.gate_up_proj (E, 2F, C: gate rows, then up rows) and down_proj (E, C, F),
# and its router as mlp.gate; the checkpoint (and the engine) names one matrix per expert and part.
EXPERT_PARTS = {"mixtral": ("w1", "w3", "w2"), "qwen3_moe": ("gate_proj", "up_proj", "down_proj")}
EXPERT_PREFIX = {"mixtral": "block_sparse_moe.experts", "qwen3_moe": "mlp.experts"}
ROUTER = {"mixtral": "block_sparse_moe.gate", "qwen3_moe": "mlp.gate"}


# On an MoE model PEFT (0.21, transformers 5) rewrites target_modules as if they were transformers
# 4 names: any gate/up/down_proj it matches, even qwen3-moe's dense layer-1 MLP, also targets the
# stacked experts (target_parameters). These goldens put LoRA on the nn.Linear projections only
# (attention, and that dense MLP), so for MoE fixtures the rewrite is switched off while PEFT wraps
# the model (no_v4_target_rewrite).
@contextlib.contextmanager
def no_v4_target_rewrite():
    import peft.utils.transformers_weight_conversion as conversion
    saved = conversion.convert_peft_config_for_transformers
    conversion.convert_peft_config_for_transformers = lambda *args, **kwargs: None
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = saved


def is_moe(cfg) -> bool:
    return cfg.model_type in EXPERT_PARTS


def expert_matrices(cfg, layer_prefix: str, gate_up: torch.Tensor, down: torch.Tensor):
    """(checkpoint name, matrix view) of every expert's gate, up and down below layer_prefix
    ("model.layers.0.")."""
    F = down.shape[-1]
    for e in range(down.shape[0]):
        parts = (gate_up[e, :F], gate_up[e, F:], down[e])
        for name, m in zip(EXPERT_PARTS[cfg.model_type], parts):
            yield f"{layer_prefix}{EXPERT_PREFIX[cfg.model_type]}.{e}.{name}.weight", m


def checkpoint_named(cfg, tensors: dict) -> dict:
    """transformers-5 parameter names (and stacked experts) -> the checkpoint's per-expert names."""
    if not is_moe(cfg):
        return tensors
    out = {}
    for name, t in tensors.items():
        if name.endswith("mlp.experts.down_proj"):
            continue
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("mlp.experts.gate_up_proj")]
            out.update({k: m.contiguous() for k, m in
                        expert_matrices(cfg, prefix, t, tensors[prefix + "mlp.experts.down_proj"])})
        elif name.endswith("mlp.gate.weight"):
            out[name[: -len("mlp.gate.weight")] + ROUTER[cfg.model_type] + ".weight"] = t
        else:
            out[name] = t
    return out


def make_batch(vocab: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=gen, dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.int64)
    labels = ids.clone()
    for b in range(B):
        labels[b, :PROMPT_LEN[b]] = -100
        if PAD_LEN[b]:
            ids[b, T - PAD_LEN[b]:] = PAD_ID
            mask[b, T - PAD_LEN[b]:] = 0
            labels[b, T - PAD_LEN[b]:] = -100
    return ids, labels, mask


def nf4_round_trip_weight(packed, state) -> torch.Tensor:
    """The weight bnb's NF4 format encodes: codes and absmax over flat blocks of the row-major
    tensor, as bnb's quantize_4bit writes them and its CUDA and pure-torch ("default") kernels read
    them. Not bnbf.dequantize_4bit on CPU: bnb 0.50.2's native CPU kernel (the AVX-512 build)
    applies the wrong absmax when a row is shorter than the block (in_features 32 < 64 here: every
    row takes block 0's scale), see cpu_short_row_dequant_bug()."""
    absmax = state.absmax
    if state.nested:  # double quantization: the 8-bit absmax codes back to f32, plus the offset
        absmax = bnbf.dequantize_blockwise(absmax, state.state2) + state.offset
    flat = packed.reshape(-1)
    codes = torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1).long()  # high nibble first
    n, block = state.shape.numel(), state.blocksize
    values = state.code.float()[codes][:n]
    padded = torch.nn.functional.pad(values, (0, -n % block)).view(-1, block)
    return (padded * absmax.float().view(-1, 1)).reshape(-1)[:n].reshape(state.shape)


def cpu_short_row_dequant_bug() -> bool:
    """Whether this bitsandbytes' CPU dequantize_4bit disagrees with its own format on rows shorter
    than the block (seen with bnb 0.50.2 on an AVX-512 Xeon; real models' rows are >= 64)."""
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    packed, state = bnbf.quantize_4bit(w, **NF4)
    return not torch.equal(bnbf.dequantize_4bit(packed, state).float(), nf4_round_trip_weight(packed, state))


def experts_kwargs(name: str) -> dict:
    # transformers 5's per-expert loop: its grouped_mm experts take no float64.
    return {"experts_implementation": "eager"} if "num_experts_per_tok" in (FIXTURES / name / "config.json").read_text() else {}


def load_base(name: str, dtype: torch.dtype, nf4: bool):
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, attn_implementation="eager",
                                                 dtype=torch.float32, **experts_kwargs(name))
    nf4_weights = {}
    if nf4:
        # QLoRA's frozen base: bnb stores NF4 codes and computes with dequantize_4bit(codes) (in the
        # compute dtype); the round trip in f32 is exactly that weight.
        with torch.no_grad():
            for mname, module in model.named_modules():
                if mname.split(".")[-1] in TARGETS:
                    packed, state = bnbf.quantize_4bit(module.weight.data.contiguous(), **NF4)
                    w = nf4_round_trip_weight(packed, state)
                    assert w.shape == module.weight.shape
                    module.weight.data.copy_(w)
                    nf4_weights[mname + ".weight"] = w.clone()
                elif mname.endswith("mlp.experts"):
                    # The engine quantizes each expert's gate, up and down as a matrix of its own
                    # (the checkpoint's), so the double-quantization statistics are per matrix too.
                    prefix = mname[: -len("mlp.experts")]
                    for key, m in expert_matrices(model.config, prefix, module.gate_up_proj.data, module.down_proj.data):
                        packed, state = bnbf.quantize_4bit(m.contiguous(), **NF4)
                        w = nf4_round_trip_weight(packed, state)
                        m.copy_(w)
                        nf4_weights[key] = w.clone()
    return model.to(dtype), nf4_weights


def peft_key(param_name: str) -> str:
    """Named-parameter name -> get_peft_model_state_dict key (the adapter name dropped)."""
    return param_name.replace(".default.", ".")


def lora_model(base, use_rslora: bool, seed: int):
    # qwen3-moe: attention only (its gate/up/down_proj would name the experts too, in PEFT and in
    # the engine alike, and PEFT's stacked-expert LoRA is not the per-expert one).
    targets = TARGETS[:4] if base.config.model_type == "qwen3_moe" else TARGETS
    # The projections PEFT wraps: every nn.Linear named in TARGETS (an MoE layer has no dense
    # gate/up/down; its experts are stacked parameters, the router is not one of the names).
    wrapped = sum(1 for n, m in base.named_modules() if n.split(".")[-1] in targets and isinstance(m, torch.nn.Linear))
    torch.manual_seed(seed)  # PEFT draws A (kaiming-uniform) from the global generator
    cfg = LoraConfig(target_modules=targets, use_rslora=use_rslora, task_type="CAUSAL_LM", **LORA)
    with no_v4_target_rewrite() if is_moe(base.config) else contextlib.nullcontext():
        model = get_peft_model(base, cfg)
    params = {peft_key(n): p for n, p in model.named_parameters() if p.requires_grad}
    assert set(params) == set(get_peft_model_state_dict(model)), "PEFT key naming changed"
    assert len(params) == 2 * wrapped
    # PEFT keeps a bf16 base's adapters in f32 (autocast_adapter_dtype), as a bf16 user trains them.
    adapter_dtype = torch.float32 if base.dtype == torch.bfloat16 else base.dtype
    assert all(p.dtype == adapter_dtype for p in params.values()), "adapter dtype changed"
    return model, params


def set_random_ab(params, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in sorted(params):
            p = params[key]
            p.copy_((torch.randn(p.shape, generator=gen, dtype=torch.float32) * RANDOM_AB_STD).to(p.dtype))


def forward_loss(model, ids, labels, mask):
    out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    # The convention the engine follows: target of row (b, t) = labels[b, t + 1], mean over targets;
    # an MoE model with output_router_logits adds router_aux_loss_coef x its load-balancing loss.
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].detach().double().flatten(0, 1),
                                               labels[:, 1:].flatten(), ignore_index=-100)
    if getattr(out, "aux_loss", None) is not None:
        manual = manual + model.config.router_aux_loss_coef * out.aux_loss.detach().double()
    assert abs(float(manual) - out.loss.item()) < 1e-5, (float(manual), out.loss.item())
    return out.loss, out.logits


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous().clone()


def grads_case(name, seed, dtype, ids, labels, mask, kind):
    """kind: lora | rslora | full | qlora. Returns (tensors, loss, logits, grads by key)."""
    base, nf4_weights = load_base(name, dtype, nf4=(kind == "qlora"))
    if kind == "full":
        model = base
        params = dict(model.named_parameters())
    else:
        model, params = lora_model(base, use_rslora=(kind == "rslora"), seed=seed)
        set_random_ab(params, seed + 1)
    model.train()
    loss, logits = forward_loss(model, ids, labels, mask)
    loss.backward()
    tensors = {}
    if kind != "full":
        tensors.update({k: f32(p) for k, p in params.items()})
    grads_named = checkpoint_named(base.config, {k: p.grad for k, p in params.items()}) if kind == "full" else \
        {k: p.grad for k, p in params.items()}
    tensors.update({k + ".grad": f32(g) for k, g in grads_named.items()})
    if kind in ("lora", "qlora"):
        tensors["logits"] = f32(logits)
    tensors.update({k + ".nf4_dequant": f32(w) for k, w in nf4_weights.items()})
    grads = {k: p.grad.detach().clone() for k, p in params.items()}
    return tensors, loss.detach(), logits.detach(), grads


def curve_case(name, seed, dtype, ids, labels, mask, nf4, init=None):
    """init: starting A/B by key (the f64 run starts from the f32 run's PEFT init, upcast)."""
    base, _ = load_base(name, dtype, nf4=nf4)  # the NF4 weights are saved once, in qlora_grads
    model, params = lora_model(base, use_rslora=False, seed=seed)
    if init is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(init[k].to(dtype))
    model.train()
    tensors = {k: f32(p) for k, p in params.items()}
    assert all(float(p.detach().abs().max()) == 0 for k, p in params.items() if ".lora_B." in k), "PEFT B init != 0"
    order = list(params.values())
    opt = torch.optim.AdamW(order, foreach=False, **ADAMW)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss, _ = forward_loss(model, ids, labels, mask)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(order, max_norm=MAX_GRAD_NORM, foreach=False)
        opt.step()
        losses.append(loss.detach().item())
        norms.append(norm.detach().item())
    tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
    tensors["grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    tensors.update({k + ".final": f32(p) for k, p in params.items()})
    final = {k: p.detach().clone() for k, p in params.items()}
    return tensors, losses, norms, final


def bnb_linear4bit_diff(name, seed, ids, labels, mask, loss, grads):
    """Cross-check of the NF4 round trip: the same qlora_grads case through transformers'
    BitsAndBytesConfig (real bnb Linear4bit layers, NF4 + double quant, f32 compute) + PEFT.
    Returns (|loss diff|, max |grad diff|); bnb 0.50 on CPU gives 0, 0 where its CPU dequantize
    follows the format (rows of in_features >= the block, or no short-row bug), else None and why:
    the layers would compute with mis-scaled weights (cpu_short_row_dequant_bug), or an MoE model's
    experts would stay dense."""
    if is_moe(transformers.AutoConfig.from_pretrained(FIXTURES / name)):
        return None, "transformers' bitsandbytes path leaves the stacked expert parameters unquantized"
    if cpu_short_row_dequant_bug() and min(json.loads((FIXTURES / name / "config.json").read_text())[k]
                                           for k in ("hidden_size", "intermediate_size")) < NF4["blocksize"]:
        return None, "bitsandbytes' CPU dequantize_4bit mis-scales rows shorter than the block"
    from transformers import BitsAndBytesConfig
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(FIXTURES / name, attn_implementation="eager", dtype=torch.float32,
                                                quantization_config=qcfg, device_map="cpu")
    model, params = lora_model(base, use_rslora=False, seed=seed)
    set_random_ab(params, seed + 1)
    model.train()
    loss4, _ = forward_loss(model, ids, labels, mask)
    loss4.backward()
    return (abs(loss4.item() - loss.item()),
            max(float((params[k].grad - grads[k]).abs().max()) for k in grads))


def max_rel(a: dict, b: dict):
    """max over tensors of max|a - b| / max|b| (0/0 -> 0), the max absolute difference, and the
    max over tensors of the relative Frobenius error ||a - b|| / ||b||."""
    rel, absd, fro = 0.0, 0.0, 0.0
    for k in b:
        diff = a[k].double() - b[k].double()
        d, s = float(diff.abs().max()), float(b[k].double().abs().max())
        absd = max(absd, d)
        rel = max(rel, d / s if s > 0 else (0.0 if d == 0 else float("inf")))
        n = float(b[k].double().norm())
        fro = max(fro, float(diff.norm()) / n if n > 0 else (0.0 if d == 0 else float("inf")))
    return rel, absd, fro


def sci(x: float) -> float:
    return float(f"{x:.3g}")


def make_model(name: str, seed: int, settings: dict):
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    ids, labels, mask = make_batch(cfg["vocab_size"], seed)
    common = {"input_ids": ids.clone(), "labels": labels.clone(), "attention_mask": mask.clone()}
    # Versions per model: a run with --only regenerates some models and leaves the others' files.
    files, report = {}, {"seed": seed, "target_count": int((labels[:, 1:] != -100).sum()),
                         "versions": settings["versions"]}
    f32_runs = {}  # kind -> (loss, logits, grads) of the f32 case, the bf16 cases' reference

    for case, kind in (("lora_grads", "lora"), ("lora_rslora_grads", "rslora"), ("full_grads", "full"),
                       ("qlora_grads", "qlora")):
        tensors, loss, logits, grads = grads_case(name, seed, torch.float32, ids, labels, mask, kind)
        _, loss64, logits64, grads64 = grads_case(name, seed, torch.float64, ids, labels, mask, kind)
        rel, absd, fro = max_rel(grads, grads64)
        valid = mask.bool()
        disc = {"loss": float(loss), "loss_abs_diff": sci(abs(float(loss) - float(loss64))),
                "grad_max_abs_diff": sci(absd), "grad_max_rel_diff": sci(rel), "grad_max_rel_fro": sci(fro),
                "logits_max_abs_diff": sci(float((logits.double() - logits64)[valid].abs().max()))}
        log(f"[{name}/{case}] loss {float(loss):.6f}  f32-vs-f64: loss {disc['loss_abs_diff']:.3g}, "
            f"grads max abs {absd:.3g} max rel (to tensor max) {rel:.3g} rel Frobenius {fro:.3g}, logits {disc['logits_max_abs_diff']:.3g}")
        if kind == "qlora":
            dl, dg = bnb_linear4bit_diff(name, seed, ids, labels, mask, loss, grads)
            if dl is None:
                disc["bnb_linear4bit_skipped"] = dg
                log(f"[{name}/{case}] vs real bnb Linear4bit: skipped, {dg}")
            else:
                disc["bnb_linear4bit_loss_abs_diff"], disc["bnb_linear4bit_grad_max_abs_diff"] = dl, dg
                log(f"[{name}/{case}] vs real bnb Linear4bit + PEFT: loss diff {dl:.3g}, grads max abs diff {dg:.3g}")
        tensors["loss"] = torch.tensor([float(loss)], dtype=torch.float32)
        files[case] = {**common, **tensors}
        report[case] = disc
        f32_runs[kind] = (loss, logits, grads)

    # bf16 compute as a CPU user runs it: the base loaded in bfloat16, PEFT's adapters in f32
    # (PEFT's autocast_adapter_dtype), the loss on the bf16 logits upcast to f32. The spread to
    # the f32 case is the bf16 rounding noise the engine's tolerance is measured against.
    for case, kind in (("lora_bf16_grads", "lora"),):
        tensors, loss, logits, grads = grads_case(name, seed, torch.bfloat16, ids, labels, mask, kind)
        loss32, logits32, grads32 = f32_runs[kind]
        rel, absd, fro = max_rel(grads, grads32)
        valid = mask.bool()
        disc = {"loss": float(loss), "bf16_vs_f32_loss_abs_diff": sci(abs(float(loss) - float(loss32))),
                "bf16_vs_f32_grad_max_rel_diff": sci(rel), "bf16_vs_f32_grad_max_rel_fro": sci(fro),
                "bf16_vs_f32_logits_max_abs_diff": sci(float((logits.double() - logits32.double())[valid].abs().max()))}
        log(f"[{name}/{case}] loss {float(loss):.6f}  bf16-vs-f32: loss {disc['bf16_vs_f32_loss_abs_diff']:.3g}, "
            f"grads max rel {rel:.3g} rel Frobenius {fro:.3g}, logits {disc['bf16_vs_f32_logits_max_abs_diff']:.3g}")
        tensors["loss"] = torch.tensor([float(loss)], dtype=torch.float32)
        files[case] = {**common, **tensors}
        report[case] = disc

    for case, nf4 in (("lora_curve", False), ("qlora_curve", True)):
        tensors, losses, norms, final = curve_case(name, seed, torch.float32, ids, labels, mask, nf4)
        init = {k: tensors[k] for k in final}
        _, losses64, norms64, final64 = curve_case(name, seed, torch.float64, ids, labels, mask, nf4, init)
        rel, absd, fro = max_rel(final, final64)
        disc = {"losses": [round(x, 7) for x in losses], "grad_norms": [round(x, 7) for x in norms],
                "loss_max_abs_diff": sci(max(abs(a - b) for a, b in zip(losses, losses64))),
                "grad_norm_max_abs_diff": sci(max(abs(a - b) for a, b in zip(norms, norms64))),
                "final_max_abs_diff": sci(absd), "final_max_rel_diff": sci(rel), "final_max_rel_fro": sci(fro)}
        log(f"[{name}/{case}] losses {losses[0]:.6f} -> {losses[-1]:.6f}, norms {norms[0]:.4f} -> {norms[-1]:.4f}; "
            f"f32-vs-f64: losses {disc['loss_max_abs_diff']:.3g}, norms {disc['grad_norm_max_abs_diff']:.3g}, "
            f"final A/B max abs {absd:.3g} max rel {rel:.3g} rel Frobenius {fro:.3g}")
        files[case] = {**common, **tensors}
        report[case] = disc

    case = "lora_bf16_curve"
    tensors, losses, norms, final = curve_case(name, seed, torch.bfloat16, ids, labels, mask, False)
    losses32 = report["lora_curve"]["losses"]
    disc = {"losses": [round(x, 7) for x in losses], "grad_norms": [round(x, 7) for x in norms],
            "bf16_vs_f32_loss_max_abs_diff": sci(max(abs(a - b) for a, b in zip(losses, losses32)))}
    log(f"[{name}/{case}] losses {losses[0]:.6f} -> {losses[-1]:.6f}; bf16-vs-f32 losses "
        f"{disc['bf16_vs_f32_loss_max_abs_diff']:.3g}")
    files[case] = {**common, **tensors}
    report[case] = disc

    meta = {"settings": json.dumps(settings, sort_keys=True), "model": name, "seed": str(seed)}
    return files, meta, report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS))
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    settings = {"batch": B, "seq": T, "prompt_len": list(PROMPT_LEN), "pad_len": list(PAD_LEN), "pad_id": PAD_ID,
                "lora": {**LORA, "target_modules": TARGETS}, "rslora_scale": LORA["lora_alpha"] / LORA["r"] ** 0.5,
                "lora_scale": LORA["lora_alpha"] / LORA["r"], "random_ab_std": RANDOM_AB_STD,
                "steps": STEPS, "adamw": {**ADAMW, "betas": list(ADAMW["betas"]), "foreach": False},
                "max_grad_norm": MAX_GRAD_NORM, "schedule": "constant", "nf4": NF4,
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "transformers": transformers.__version__, "peft": peft.__version__,
                             "bitsandbytes": bitsandbytes.__version__, "safetensors": safetensors.__version__}}
    manifest_path = OUT / "train_goldens.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({k: v for k, v in settings.items()})
    manifest.setdefault("models", {})
    mismatches = 0
    for name in args.only or sorted(MODELS):
        files, meta, report = make_model(name, MODELS[name], settings)
        folder = OUT / name
        folder.mkdir(exist_ok=True)
        report["files"] = {}
        for case, tensors in files.items():
            path = folder / f"{case}.safetensors"
            if args.check:
                old = load_file(path)
                same = old.keys() == tensors.keys() and all(torch.equal(old[k], tensors[k]) for k in old)
                log(f"  check {path.relative_to(ROOT)}: {'identical' if same else 'DIFFERENT'}")
                mismatches += not same
                continue
            save_file(tensors, str(path), metadata={**meta, "case": case})
            data = path.read_bytes()
            report["files"][case] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            log(f"  wrote {path.relative_to(ROOT)} ({len(data)} bytes, {len(tensors)} tensors)")
        manifest["models"][name] = report
    if args.check:
        sys.exit(1 if mismatches else 0)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum((OUT / m / f"{c}.safetensors").stat().st_size for m in MODELS for c in
                manifest["models"].get(m, {}).get("files", {}))
    log(f"wrote {manifest_path.relative_to(ROOT)}; goldens total {total} bytes")


if __name__ == "__main__":
    main()
