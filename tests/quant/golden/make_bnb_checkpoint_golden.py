#!/usr/bin/env python3
"""Generates the bnb-4bit checkpoint goldens for tests/quant/test_bnb_checkpoint.cpp.

  /work/venv/bin/pip install torch transformers bitsandbytes   # 2.x / 5.23.0 / 0.50.2; CPU only
  python tests/quant/golden/make_bnb_checkpoint_golden.py
  python tests/quant/golden/make_bnb_checkpoint_golden.py --verify OUT_DIR [--source SRC_DIR]

Writes
  tiny-llama-bnb-nf4/  a tiny random LlamaForCausalLM (hidden 64, 2 layers, vocab 128) quantized by
                       transformers' BitsAndBytesConfig(load_in_4bit, nf4, double quant) on CPU and
                       saved with save_pretrained: config.json (with quantization_config) and
                       model.safetensors holding, per quantized linear X.weight,
                         X.weight (u8, (numel/2, 1)), X.weight.absmax (u8 codes),
                         X.weight.quant_map (f32, 16), X.weight.nested_absmax (f32),
                         X.weight.nested_quant_map (f32, 256),
                         X.weight.quant_state.bitsandbytes__nf4 (u8: JSON of quant_type, blocksize,
                         dtype, shape, nested_blocksize, nested_dtype, nested_offset).
  tiny_llama_bnb_ref.safetensors
    input_ids (i32, T); logits (f32, (T, V)): the f32 model whose linear weights are bitsandbytes'
    dequantization of the stored ones (reference path; the quantized model computed exactly);
    logits_bnb_forward: transformers' forward of the bnb-loaded model itself (bitsandbytes' CPU
    4-bit matmul, which is ~2e-3 off the exact f32 product on these logits of magnitude ~0.5);
    source.q_proj (f32, (64, 64)): layers.0.self_attn.q_proj before quantization;
    fp4.q_proj.weight (+ .absmax f32, .quant_map, .quant_state.bitsandbytes__fp4): the same weight
    as QuantState.as_dict(packed=True) serialises FP4 without double quantization.

--verify OUT_DIR checks a folder written by `qlora quantize` from SRC_DIR (default: the stories260K
HF fixture): transformers + bitsandbytes load it; for 4-bit with block 64, its keys equal, and its
packed codes and quant_state JSON bytes are identical to, what transformers writes
when it quantizes SRC_DIR itself; its logits stay close to the f32 source's (exit 1 on failure).
int8 (row-wise) folders load as LLM.int8 (Linear8bitLt) and run transformers' forward.
"""
import argparse
import json
import os
import sys

import torch
import bitsandbytes
import bitsandbytes.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

SEED = 20261123
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny-llama-bnb-nf4")
PROMPT = [1, 17, 42, 99, 5, 127, 64, 3, 88, 12]


def generate():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    src = os.path.join(OUT + "-src-tmp")
    model.save_pretrained(src)
    source_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone().float()

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    q = LlamaForCausalLM.from_pretrained(src, quantization_config=bnb, device_map="cpu", dtype=torch.float32)
    q.save_pretrained(OUT)
    for f in os.listdir(src):
        os.remove(os.path.join(src, f))
    os.rmdir(src)

    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits_bnb = q(ids).logits[0].float().contiguous()
    exact = dequantized_model(OUT, cfg)
    with torch.no_grad():
        logits = exact(ids).logits[0].float().contiguous()

    # What transformers stored is exactly bitsandbytes' quantize_4bit of the source weight.
    packed, state = F.quantize_4bit(source_q, blocksize=64, compress_statistics=True, quant_type="nf4")
    with safe_open(os.path.join(OUT, "model.safetensors"), "pt") as f:
        stored = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        assert torch.equal(stored, packed), "transformers' stored q_proj differs from quantize_4bit"
        assert torch.equal(f.get_tensor("model.layers.0.self_attn.q_proj.weight.absmax"), state.absmax)

    packed4, state4 = F.quantize_4bit(source_q, blocksize=64, compress_statistics=False, quant_type="fp4")
    ref = {"input_ids": ids[0].to(torch.int32), "logits": logits, "logits_bnb_forward": logits_bnb,
           "source.q_proj": source_q,
           "fp4.q_proj.weight": packed4}
    for k, v in state4.as_dict(packed=True).items():
        ref["fp4.q_proj.weight." + k] = v
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "bitsandbytes": bitsandbytes.__version__, "seed": str(SEED), "prompt": json.dumps(PROMPT)}
    save_file(ref, os.path.join(HERE, "tiny_llama_bnb_ref.safetensors"), metadata=meta)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes) and tiny_llama_bnb_ref.safetensors")


def dequantize(packed, st):
    # bitsandbytes' reference path (backends/default/ops.py, matches CUDA): its native CPU
    # dequantize is wrong when a block spans rows (block_size > shape[-1]; see make_quant_goldens.py).
    absmax = (F.dequantize_blockwise(st.absmax, st.state2) + st.offset) if st.nested else st.absmax
    return _dequantize_4bit_compute(packed.reshape(-1), absmax, st.code, st.blocksize, tuple(st.shape), st.dtype)


def dequantized_model(folder, cfg):
    """The f32 model whose linear weights are bitsandbytes' dequantization of the stored ones."""
    model = LlamaForCausalLM(cfg).float()
    state = {}
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        bases = [k.split(".quant_state.")[0] for k in keys if ".quant_state." in k]
        for base in bases:
            comps = {k[len(base) + 1:]: f.get_tensor(k) for k in keys if k.startswith(base + ".")}
            state[base] = dequantize(f.get_tensor(base), F.QuantState.from_dict(comps, torch.device("cpu")))
        for k in keys:
            if k not in state and not any(k.startswith(b + ".") for b in bases):
                state[k] = f.get_tensor(k)
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model


def verify(out_dir, src_dir):
    import tempfile
    ok = True
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes", qc
    # 1. transformers loads our folder as a bnb-4bit (or LLM.int8) model.
    q = LlamaForCausalLM.from_pretrained(out_dir, device_map="cpu")
    ids = torch.tensor([[p % cfg["vocab_size"] for p in PROMPT]])
    ref = LlamaForCausalLM.from_pretrained(src_dir, device_map="cpu", dtype=torch.float32)
    if qc["load_in_8bit"]:  # int8 row-wise: weight i8 + SCB
        n8 = sum(1 for m in q.modules() if isinstance(m, bitsandbytes.nn.Linear8bitLt))
        with torch.no_grad():
            a, b = q(ids).logits.float(), ref(ids).logits.float()
        rel = ((a - b).norm() / b.norm()).item()
        ok = n8 == 7 * cfg["num_hidden_layers"] and bool(torch.isfinite(a).all()) and rel < 0.05
        print(f"{n8} Linear8bitLt modules; logits (bnb int8 forward) rel. error vs f32 {rel:.4f}")
        print("verify:", "OK" if ok else "FAILED")
        return ok
    n4 = sum(1 for m in q.modules() if isinstance(m, bitsandbytes.nn.Linear4bit))
    # 2. transformers' own quantization of the source: same keys, identical packed 4-bit codes and
    #    quant_state JSON bytes (nested_offset included). The u8 absmax codes may differ by one step
    #    in a few places: bitsandbytes' CPU lookup-table rounding vs our nearest-code rounding (on
    #    stories260K 5 of 35 tensors differ in 1 code each).
    ours = safe_open(os.path.join(out_dir, "model.safetensors"), "pt")
    qs_keys = [k for k in ours.keys() if ".quant_state.bitsandbytes__" in k]
    block64 = all(json.loads(bytes(ours.get_tensor(k).tolist()))["blocksize"] == 64 for k in qs_keys)
    if not block64:
        print("blocksize != 64: transformers cannot be asked for it; skipping the comparison with its own")
    if block64:
        with tempfile.TemporaryDirectory() as tmp:
            bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qc["bnb_4bit_quant_type"],
                                     bnb_4bit_use_double_quant=qc["bnb_4bit_use_double_quant"],
                                     bnb_4bit_compute_dtype=torch.float32)
            LlamaForCausalLM.from_pretrained(src_dir, quantization_config=bnb, device_map="cpu",
                                             dtype="auto").save_pretrained(tmp)
            with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as theirs:
                if sorted(theirs.keys()) != sorted(ours.keys()):
                    print("FAIL key sets differ:", sorted(set(theirs.keys()) ^ set(ours.keys())))
                    ok = False
                for k in qs_keys:
                    base = k.split(".quant_state.")[0]
                    if not torch.equal(theirs.get_tensor(base), ours.get_tensor(base)):
                        print(f"FAIL {base}: packed codes differ from transformers'")
                        ok = False
                    a, b = bytes(theirs.get_tensor(k).tolist()), bytes(ours.get_tensor(k).tolist())
                    if a != b:
                        print(f"FAIL {k}: {a} != {b}")
                        ok = False
    # 3. Logits: transformers' bnb forward where bitsandbytes' CPU kernel takes the shape (it needs
    #    out_features divisible by its block_n), else the exactly dequantized f32 model; vs the source.
    with torch.no_grad():
        try:
            a, how = q(ids).logits.float(), "bnb forward"
        except (AssertionError, RuntimeError) as e:  # bitsandbytes' CPU kernel: shape limits
            conf = {k: v for k, v in cfg.items() if k != "quantization_config"}
            a, how = dequantized_model(out_dir, LlamaConfig(**conf))(ids).logits.float(), f"dequantized ({e})"
        b = ref(ids).logits.float()
    rel = ((a - b).norm() / b.norm()).item()
    print(f"{len(qs_keys)} quantized tensors, {n4} Linear4bit modules; logits ({how}) rel. error vs f32 {rel:.4f}")
    if n4 != len(qs_keys) or not torch.isfinite(a).all() or rel > 0.25:
        ok = False
    print("verify:", "OK" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify")
    ap.add_argument("--source", default=os.path.join(HERE, "..", "..", "golden", "fixtures", "stories260k-hf"))
    args = ap.parse_args()
    if args.verify:
        sys.exit(0 if verify(args.verify, args.source) else 1)
    generate()
