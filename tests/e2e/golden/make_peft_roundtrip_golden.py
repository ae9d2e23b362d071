"""Goldens for tests/e2e/test_peft_roundtrip.cpp: our adapters and exports judged by the PEFT
ecosystem itself.

Inputs, all written by OUR code (step 1), committed under peft_<fixture>/ (one per fixture:
llama-gqa; qwen3 with its per-head q/k norms and GGUF architecture qwen3; mixtral with LoRA on
its routers and experts, whose per-expert keys PEFT 0.21 converts to transformers 5's stacked
experts itself, and GGUF architecture llama with stacked ffn_*_exps; qwen3-moe with LoRA on
attention and routers, and no GGUF: llama.cpp cannot hold its dense layer 1):
  adapter/          the PEFT adapter 3 Trainer steps of LoRA on tests/golden/fixtures/<fixture> made
  merged/           that adapter merged into the fixture by merge_adapter + export_hf_folder (f32)
  merged_f16.gguf   the same merged model as export_gguf writes it (F16 matrices)
  merged_q8_0.gguf  and with Q8_0 matrices (F16 where rows are not a multiple of 32)
Outputs (step 2, this script; needs llama-cpp-python besides tests/golden/requirements.txt):
  golden_logits.safetensors
      peft_logits                 PeftModel.from_pretrained(base, adapter/) on the batch, unmerged
      peft_merged_logits          the same after merge_and_unload()
      transformers_on_our_merged  AutoModelForCausalLM.from_pretrained(merged/) on the batch
  golden.json   the batch (input_ids), the tensor list gguf-py's GGUFReader reads from
                merged_f16.gguf (name, type, shape innermost first) and some of its metadata,
                library versions, the max |diff| between peft's merged weights and ours, and
                whether every Q8_0 tensor of merged_q8_0.gguf is byte-identical to gguf-py's
                reference quantizer (gguf.quants, a port of llama.cpp's quantize_row_q8_0_ref)
                applied to our merged f32 weights, q/k rows permuted as convert_hf_to_gguf.py does
                (architecture llama only; qwen3 keeps HF's row order); and llama.cpp's logits
                on merged_f16.gguf (llama-cpp-python, the vocabulary declared absent) against
                transformers' on merged/.

Regenerate:
  1. QLORA_REGENERATE_PEFT_GOLDEN=1 build/tests/test_peft_roundtrip
     (=exports keeps the committed adapter and rewrites merged/ and the GGUFs from it)
  2. venv/bin/python tests/e2e/golden/make_peft_roundtrip_golden.py [FIXTURE ...]   (default: all)
"""
import importlib.metadata
import json
import os
import sys

import gguf
import numpy as np
import peft
import safetensors.torch
import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
FIXTURES = ["llama-gqa", "qwen3", "mixtral", "qwen3-moe"]
# GGUF metadata the C++ test compares with what our reader sees (ARCH.* under the file's architecture).
META_KEYS = [
    "general.architecture", "ARCH.block_count", "ARCH.context_length", "ARCH.embedding_length",
    "ARCH.feed_forward_length", "ARCH.attention.head_count", "ARCH.attention.head_count_kv",
    "ARCH.rope.freq_base", "ARCH.attention.layer_norm_rms_epsilon", "ARCH.rope.dimension_count",
    "ARCH.vocab_size", "general.file_type",
]
MOE_META_KEYS = ["ARCH.expert_count", "ARCH.expert_used_count"]


def load(path):
    config = json.load(open(os.path.join(path, "config.json")))
    # MoE: transformers 5's per-expert loop, not grouped_mm (which sums in another order).
    moe = {"experts_implementation": "eager"} if "num_experts_per_tok" in config else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **moe).eval()


def convert_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half rows -> llama.cpp pair order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# Mixtral's stacked experts: GGUF tensor -> the per-expert HF leaf it stacks.
EXPERT_STACKS = {"ffn_gate_exps.weight": "w1", "ffn_up_exps.weight": "w3", "ffn_down_exps.weight": "w2"}

GGUF_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight", "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
}


def q8_0_matches_reference(config, out, permute):
    """Each Q8_0 tensor in our file vs gguf.quants.quantize of our merged f32 weight."""
    weights = safetensors.torch.load_file(os.path.join(out, "merged", "model.safetensors"))
    reader = gguf.GGUFReader(os.path.join(out, "merged_q8_0.gguf"))
    ours = {t.name: t for t in reader.tensors}
    checked, identical = 0, 0
    # Stacked experts: (E, out, in) from the per-expert matrices, quantized as one array (row-wise).
    for gname, t in ours.items():
        stack = EXPERT_STACKS.get(gname.split(".", 2)[-1]) if gname.startswith("blk.") else None
        if stack is None:
            continue
        layer = gname.split(".")[1]
        x = np.stack([weights[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{stack}.weight"].float().numpy()
                      for e in range(config["num_local_experts"])])
        q8 = x.shape[-1] % 32 == 0
        ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0) if q8 else x.astype(np.float16)
        checked += 1
        identical += int(t.tensor_type.name == ("Q8_0" if q8 else "F16") and ref.tobytes() == t.data.tobytes())
    for name, w in weights.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        elif name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            if rest not in GGUF_NAMES:
                continue
            gname = f"blk.{layer}.{GGUF_NAMES[rest]}"
        else:
            continue
        x = w.float().numpy()
        if permute and rest_is(name, "q_proj"):
            x = convert_permute(x, config["num_attention_heads"])
        elif permute and rest_is(name, "k_proj"):
            x = convert_permute(x, config["num_key_value_heads"])
        # Rows that are not a multiple of 32 cannot be Q8_0; the exporter writes them F16 (as
        # llama.cpp's quantizer falls back), compared here with numpy's f16 rounding. The router
        # stays F32, as convert_hf_to_gguf.py keeps FFN_GATE_INP.
        q8 = x.shape[-1] % 32 == 0
        ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0) if q8 else x.astype(np.float16)
        want_type = "Q8_0" if q8 else "F16"
        if gname.endswith("ffn_gate_inp.weight"):
            ref, want_type = x, "F32"
        got = ours[gname].data
        checked += 1
        identical += int(ours[gname].tensor_type.name == want_type and ref.tobytes() == got.tobytes())
    return checked, identical


def llama_cpp_logits(path, input_ids):
    """llama.cpp (llama-cpp-python) running our GGUF on the batch, one sequence at a time. The
    fixtures have no tokenizer, so the vocabulary is declared absent (tokenizer.ggml.model
    no_vocab, as a KV override): llama.cpp then runs token ids as given."""
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=64, n_threads=1, logits_all=True, verbose=False,
                kv_overrides={"tokenizer.ggml.model": "no_vocab"})
    out = []
    for row in input_ids.tolist():
        llm.reset()
        llm.eval(row)
        out.append(torch.tensor(np.array(llm.scores[:len(row)]), dtype=torch.float32))
    return torch.stack(out)


def rest_is(name, module):
    return f".self_attn.{module}." in name


def gguf_facts(config, arch, out, input_ids, ours_logits):
    """What gguf-py and llama.cpp make of our GGUF exports (see the module docstring)."""
    reader = gguf.GGUFReader(os.path.join(out, "merged_f16.gguf"))
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape]} for t in reader.tensors
    ]
    metadata = {}
    for key in (k.replace("ARCH", arch) for k in META_KEYS + MOE_META_KEYS):
        if key not in reader.fields and any(key.endswith(m[4:]) for m in MOE_META_KEYS):
            continue  # a dense model has no expert keys
        value = reader.fields[key].contents()
        metadata[key] = float(value) if isinstance(value, float) else value

    q8_checked, q8_identical = q8_0_matches_reference(config, out, permute=arch == "llama")
    # llama.cpp on our F16 export vs transformers on our f32 merged folder: F16 weights.
    llama_cpp = llama_cpp_logits(os.path.join(out, "merged_f16.gguf"), input_ids)

    return {
        "gguf_tensors": tensors,
        "gguf_metadata": metadata,
        "max_logit_diff_llama_cpp_f16_gguf_vs_transformers_on_our_merged": (llama_cpp - ours_logits).abs().max().item(),
        "q8_0_tensors_checked": q8_checked,
        "q8_0_tensors_identical_to_gguf_py": q8_identical,
    }


def make(fixture_name):
    fixture = os.path.join(ROOT, "tests", "golden", "fixtures", fixture_name)
    out = os.path.join(HERE, "peft_" + fixture_name.replace("-", "_"))
    torch.manual_seed(0)
    config = json.load(open(os.path.join(fixture, "config.json")))
    arch = config["model_type"] if config["model_type"] in ("qwen2", "qwen3") else "llama"  # qwen3-moe: no GGUF
    gen = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(0, config["vocab_size"], (2, 10), generator=gen)

    with torch.no_grad():
        model = PeftModel.from_pretrained(load(fixture), os.path.join(out, "adapter")).eval()
        peft_logits = model(input_ids).logits.float().contiguous()
        merged = model.merge_and_unload()
        peft_merged_logits = merged(input_ids).logits.float().contiguous()
        peft_state = merged.state_dict()

        ours = load(os.path.join(out, "merged"))
        ours_logits = ours(input_ids).logits.float().contiguous()
        weight_diff = max(
            (peft_state[k] - v).abs().max().item() for k, v in ours.state_dict().items() if k in peft_state
        )

    gguf_golden = {}
    if os.path.exists(os.path.join(out, "merged_f16.gguf")):
        gguf_golden = gguf_facts(config, arch, out, input_ids, ours_logits)
    safetensors.torch.save_file(
        {
            "peft_logits": peft_logits,
            "peft_merged_logits": peft_merged_logits,
            "transformers_on_our_merged": ours_logits,
        },
        os.path.join(out, "golden_logits.safetensors"),
    )
    golden = {
        "input_ids": input_ids.tolist(),
        **gguf_golden,
        "max_weight_diff_ours_vs_peft_merge": weight_diff,
        "max_logit_diff_peft_unmerged_vs_merged": (peft_logits - peft_merged_logits).abs().max().item(),
        "max_logit_diff_ours_merged_vs_peft_merged": (ours_logits - peft_merged_logits).abs().max().item(),
        "max_abs_logit": ours_logits.abs().max().item(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "gguf": getattr(gguf, "__version__", "0.19.0"),
            "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        },
    }
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(fixture_name, json.dumps({k: v for k, v in golden.items() if k.startswith(("max", "q8"))}, indent=1))


def main():
    for name in sys.argv[1:] or FIXTURES:
        make(name)


if __name__ == "__main__":
    main()
