"""The two models of bench/moe_vs_dense.sh, as Hugging Face folders with seeded random weights
(transformers' own initialisation): a small Mixtral (8 experts of F 512, 2 per token) and the dense
Llama with the same active parameters per token (F = 2 x 512), everything else equal (C 256,
4 layers, 8 heads of 32, 4 KV heads, vocab 4096). Not models anyone should run; the shapes are
what matter.

    venv/bin/python bench/make_moe_bench_models.py OUT_DIR   (writes OUT_DIR/mixtral, OUT_DIR/dense)
"""
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

COMMON = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=4, head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-5,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
EXPERT_F, EXPERTS, PER_TOKEN = 512, 8, 2


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    moe = MixtralForCausalLM(MixtralConfig(intermediate_size=EXPERT_F, num_local_experts=EXPERTS,
                                           num_experts_per_tok=PER_TOKEN, sliding_window=None,
                                           router_aux_loss_coef=0.001, output_router_logits=False, **COMMON))
    dense = LlamaForCausalLM(LlamaConfig(intermediate_size=EXPERT_F * PER_TOKEN, **COMMON))
    for name, model in (("mixtral", moe), ("dense", dense)):
        model.save_pretrained(os.path.join(out, name), safe_serialization=True)
        total = sum(p.numel() for p in model.parameters())
        print(f"{name}: {total:,} parameters -> {os.path.join(out, name)}")


if __name__ == "__main__":
    main()
