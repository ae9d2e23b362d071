#!/usr/bin/env python3
"""Goldens for tests/parity/test_optim_parity.cpp: optimizer trajectories, LR schedules and the 8-bit
dynamic maps, computed by torch, transformers and bitsandbytes.

CI never runs this script; it reads the committed output. Re-run it only to change the golden:

    venv/bin/python tests/parity/golden/make_optim_goldens.py   # from the repository root

Output: tests/parity/golden/optim_golden.safetensors (< 1 MB), all f32 unless noted:
  adamw/                torch.optim.AdamW(foreach=False), lr 1e-2, betas (0.9, 0.98), eps 1e-6, weight
                        decay 0.1 for p0 and p1, 0 for p2 (a second param group, as a bias would be).
    init.<p>            the parameters before the first step
    grad.<s>.<p>        the gradient fed to step s (s = 1..5)
    adamw.<s>.<p>       the parameters after step s
    adamw.state.<p>.exp_avg / .exp_avg_sq   torch's state after step 5
  bnb8/                 bitsandbytes.optim.AdamW8bit on CPU tensors with the same hyper-parameters and
                        grads (present only if bnb's 8-bit optimizer runs on CPU; metadata bnb8_cpu):
    bnb8.<s>.<p>        the parameters after step s. p0 (3x4099 = 12297 >= 4096 elements) has 8-bit
                        state; p1, p2 (< min_8bit_size) have f32 state.
    bnb8.step1.p0.state1 / state2 (u8), absmax1 / absmax2 (f32)   p0's quantized state after step 1
  quant/                bnb's CPU quantize_blockwise (block 256) of random data with both maps:
    quant.x             input (1000 values, 4 blocks, the last partial; includes exact zeros)
    quant.signed.q / .absmax, quant.unsigned.q / .absmax   (q: u8)
  dynamic_map.signed / dynamic_map.unsigned   create_dynamic_map(signed=True / False), 256 values
  sched.<kind>.w<W>.t<T>   (f64) transformers' get_<kind>_schedule_with_warmup multiplier times
                           PEAK_LR at steps SCHED_STEPS (i64 tensor sched.steps)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "optim_golden.safetensors")

SEED = 20261123
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.98), 1e-6, 0.1
N_STEPS = 5
SHAPES = {"p0": (3, 4099), "p1": (37, 11), "p2": (64,)}
PEAK_LR = 2e-4
SCHED_CONFIGS = [(10, 100), (0, 50), (5, 5), (3, 2)]  # (warmup, total); the last has total < warmup
SCHED_STEPS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 25, 49, 50, 51, 75, 99, 100, 101, 150]


def make_inputs():
    g = torch.Generator().manual_seed(SEED)
    init = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    grads = []
    for s in range(1, N_STEPS + 1):
        # Different scales per step (and one near-zero step for p1) so that m and v move around.
        scale = [1.0, 0.3, 2.0, 1e-3, 0.7][s - 1]
        grads.append({k: torch.randn(sh, generator=g) * scale for k, sh in SHAPES.items()})
    return init, grads


def run_torch(init, grads):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    opt = torch.optim.AdamW(
        [{"params": [params["p0"], params["p1"]], "weight_decay": WD}, {"params": [params["p2"]], "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS, foreach=False)
    out = {}
    for s, gs in enumerate(grads, start=1):
        for k, p in params.items():
            p.grad = gs[k].clone()
        opt.step()
        for k, p in params.items():
            out[f"adamw.{s}.{k}"] = p.detach().clone()
    for k, p in params.items():
        st = opt.state[p]
        out[f"adamw.state.{k}.exp_avg"] = st["exp_avg"].clone()
        out[f"adamw.state.{k}.exp_avg_sq"] = st["exp_avg_sq"].clone()
    return out


def run_bnb(init, grads):
    import bitsandbytes as bnb
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    opt = bnb.optim.AdamW8bit(
        [{"params": [params["p0"], params["p1"]], "weight_decay": WD}, {"params": [params["p2"]], "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS)
    out = {}
    for s, gs in enumerate(grads, start=1):
        for k, p in params.items():
            p.grad = gs[k].clone()
        opt.step()
        for k, p in params.items():
            out[f"bnb8.{s}.{k}"] = p.detach().clone()
        if s == 1:
            st = opt.state[params["p0"]]
            assert st["state1"].dtype == torch.uint8, "p0 should have 8-bit state"
            for key in ("state1", "state2", "absmax1", "absmax2"):
                out[f"bnb8.step1.p0.{key}"] = st[key].clone()
    return out, bnb.__version__


def run_quant():
    import bitsandbytes.functional as F
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(1000, generator=g) * torch.exp(torch.randn(1000, generator=g) * 3)
    x[::97] = 0.0
    out = {"quant.x": x}
    for name, signed, data in (("signed", True, x), ("unsigned", False, x * x)):
        code = F.create_dynamic_map(signed=signed)
        q, absmax = torch.ops.bitsandbytes.quantize_blockwise(data, code, 256)
        out[f"quant.{name}.q"] = q
        out[f"quant.{name}.absmax"] = absmax
    return out


def schedules():
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
    out = {"sched.steps": torch.tensor(SCHED_STEPS, dtype=torch.int64)}
    for warmup, total in SCHED_CONFIGS:
        for kind in ("constant", "linear", "cosine"):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK_LR)
            if kind == "constant":
                sched = get_constant_schedule_with_warmup(opt, warmup)
            elif kind == "linear":
                sched = get_linear_schedule_with_warmup(opt, warmup, total)
            else:
                sched = get_cosine_schedule_with_warmup(opt, warmup, total)
            lam = sched.lr_lambdas[0]
            out[f"sched.{kind}.w{warmup}.t{total}"] = torch.tensor([PEAK_LR * lam(s) for s in SCHED_STEPS],
                                                                   dtype=torch.float64)
    return out


def main():
    import bitsandbytes.functional as F
    init, grads = make_inputs()
    tensors = {}
    for k, v in init.items():
        tensors[f"init.{k}"] = v
    for s, gs in enumerate(grads, start=1):
        for k, v in gs.items():
            tensors[f"grad.{s}.{k}"] = v
    tensors.update(run_torch(init, grads))
    tensors["dynamic_map.signed"] = F.create_dynamic_map(signed=True)
    tensors["dynamic_map.unsigned"] = F.create_dynamic_map(signed=False)
    tensors.update(schedules())
    meta = {"seed": str(SEED), "torch": torch.__version__, "transformers": transformers.__version__,
            "hyper": json.dumps({"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WD})}
    try:
        bnb_out, bnb_version = run_bnb(init, grads)
        tensors.update(bnb_out)
        tensors.update(run_quant())
        meta["bitsandbytes"] = bnb_version
        meta["bnb8_cpu"] = "1"
    except Exception as e:  # bnb's 8-bit optimizer has no CPU kernel in this version
        print(f"bitsandbytes AdamW8bit on CPU failed: {e!r}", file=sys.stderr)
        meta["bnb8_cpu"] = "0"
        meta["bnb8_cpu_error"] = repr(e)[:500]
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, OUT, metadata=meta)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), bnb8_cpu={meta['bnb8_cpu']}")


if __name__ == "__main__":
    main()
