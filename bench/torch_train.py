"""Reference for the training benchmark: the same fine-tuning steps with transformers + PEFT (+
bitsandbytes for QLoRA) on torch CPU. Prints one JSON line like the qlora.cpp side does.

    venv/bin/python bench/torch_train.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--method full|lora|qlora] [--seq 256] [--batch 1] [--steps 3] [--warmup 1] [--threads N]
        [--rank 8] [--alpha 16] [--checkpointing] [--dtype f32|bf16] [--qlora-base linear4bit|roundtrip]
        [--targets q_proj,k_proj,...]

Model: an HF folder, or a GGUF file loaded with transformers' gguf_file= (dequantized to f32, as
bench/torch_forward.py does). Methods:
  full   every parameter trainable
  lora   PEFT LoRA on q/k/v/o/gate/up/down_proj (dropout 0; --targets to choose), base frozen
  qlora  the base's linears as bitsandbytes Linear4bit (NF4, block 64, double quant, compute dtype
         f32 or bf16) + PEFT LoRA: BitsAndBytesConfig for an HF folder; for a GGUF file (which
         transformers will not combine with quantization_config) the dense load's linears are
         converted to Linear4bit. If 4-bit layers do not run (bnb without CPU 4-bit support),
         falls back to replacing each linear's weight by its NF4 round trip
         (bnb.functional.quantize_4bit/dequantize_4bit: the same math, dense memory) and reports
         "fallback" in the JSON line. --qlora-base roundtrip asks for that variant directly
         (bnb's CPU 4-bit matmul is much slower than a dense one, so both are worth reporting).
One step = forward + backward on a random batch (seeded, labels = ids, loss = mean next-token
cross-entropy), clip_grad_norm_(max_norm) and AdamW(lr 1e-4, wd 0) — the trainer's defaults.
`warmup` steps run first, untimed. step_s is the mean of the timed steps, tokens_per_s =
batch * seq / step_s, step_s_min the fastest timed step; cpu_s_per_step is the process CPU time
(all threads) per timed step, less sensitive to other load on a shared machine. peak_rss_mb is the
process's peak resident set (ru_maxrss), loading included; train_peak_rss_mb the peak over the
training steps alone (the high-water mark is reset after loading).
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def from_pretrained(path, dtype, **kwargs):
    from transformers import AutoModelForCausalLM
    if path.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                    gguf_file=os.path.basename(path), dtype=dtype, **kwargs)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)


def nf4_round_trip(model):
    """Every target linear's weight -> dequantize_4bit(quantize_4bit(W)): what QLoRA computes with."""
    import bitsandbytes.functional as F
    n = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.split(".")[-1] in TARGETS and isinstance(module, torch.nn.Linear):
                w = module.weight.data
                packed, state = F.quantize_4bit(w.float().contiguous(), blocksize=64, quant_type="nf4",
                                                compress_statistics=True)
                module.weight.data = F.dequantize_4bit(packed, state).to(w.dtype)
                n += 1
    return n


def to_linear4bit(model, dtype):
    """Every target nn.Linear -> bnb.nn.Linear4bit (NF4, block 64, double quant) quantized from its
    dense weight: what BitsAndBytesConfig does at load time, for sources it refuses (GGUF)."""
    import bitsandbytes as bnb
    n = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in TARGETS and isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="cpu")
                q.weight = bnb.nn.Params4bit(child.weight.data.float().contiguous(), requires_grad=False,
                                             compress_statistics=True, quant_type="nf4", blocksize=64)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                setattr(module, child_name, q.to("cpu"))  # .to() quantizes
                n += 1
    return n


def load(args, dtype):
    """Returns (model, how the 4-bit base was made or None, fallback note or None)."""
    if args.method != "qlora":
        return from_pretrained(args.model, dtype), None, None
    import bitsandbytes as bnb
    if args.qlora_base == "roundtrip":
        model = from_pretrained(args.model, dtype)
        n = nf4_round_trip(model)
        log(f"[torch_train] qlora: replaced {n} linear weights by their NF4 round trip (--qlora-base roundtrip)")
        return model, "NF4 round trip (dense)", None
    try:
        if args.model.endswith(".gguf"):
            # transformers refuses quantization_config with gguf_file ("You cannot combine
            # Quantization and loading a model from a GGUF file"): load dense, then convert.
            model = from_pretrained(args.model, dtype)
            n4 = to_linear4bit(model, dtype)
            how = "bnb Linear4bit converted after the GGUF load"
        else:
            from transformers import BitsAndBytesConfig
            qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=dtype)
            model = from_pretrained(args.model, dtype, quantization_config=qcfg, device_map="cpu")
            n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
            how = "BitsAndBytesConfig"
        if n4 == 0:
            raise RuntimeError("no Linear4bit layers")
        # One forward to make sure bnb's CPU 4-bit kernels actually run in this build.
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=False)
        log(f"[torch_train] qlora: {n4} bnb Linear4bit layers (NF4, double quant) via {how}")
        return model, how, None
    except Exception as e:  # noqa: BLE001 - any failure of the 4-bit path means: use the fallback
        note = f"NF4 round trip on dense weights (4-bit layers failed: {type(e).__name__}: {e})"
        log(f"[torch_train] qlora fallback: {note}")
        model = from_pretrained(args.model, dtype)
        n = nf4_round_trip(model)
        log(f"[torch_train] replaced {n} linear weights by their NF4 round trip")
        return model, "NF4 round trip (dense)", note[:300]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--method", choices=["full", "lora", "qlora"], default="lora")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0: no clipping")
    ap.add_argument("--checkpointing", action="store_true", help="model.gradient_checkpointing_enable()")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--qlora-base", choices=["linear4bit", "roundtrip"], default="linear4bit",
                    help="qlora: bnb Linear4bit layers, or dense weights holding the NF4 round trip "
                         "(same numbers; dense speed and memory)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--targets", default=",".join(TARGETS), help="LoRA target_modules, comma-separated")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t_load = time.perf_counter()
    model, qlora_base, fallback = load(args, dtype)
    model.config.use_cache = False
    if args.checkpointing:
        # use_reentrant=False: the reentrant variant needs an input that requires grad, which a
        # frozen embedding (LoRA) does not give.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=args.targets.split(","),
                         bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    load_s = time.perf_counter() - t_load
    peak_rss_mb_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    log(f"[torch_train] {args.method} {args.dtype}: {n_trainable} trainable params, loaded in {load_s:.1f} s")

    # Peak RSS of the training steps alone: clear_refs "5" resets the high-water mark (Linux >= 4.0)
    # that ru_maxrss reports, so the dense load (GGUF -> f32, or before 4-bit conversion) drops out.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        train_rss_reset = True
    except OSError:
        train_rss_reset = False
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    losses, times, cpu_times = [], [], []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        losses.append(loss.item())
        if step >= args.warmup:
            times.append(dt)
            cpu_times.append(dc)
        log(f"[torch_train] step {step + 1}{' (warmup)' if step < args.warmup else ''}: "
            f"loss {losses[-1]:.4f}, {dt:.2f} s (cpu {dc:.2f} s)")

    step_s = sum(times) / len(times)
    train_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    peak_rss_mb = max(peak_rss_mb_load, train_peak_rss_mb)
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "method": args.method, "dtype": args.dtype,
                      "model": os.path.basename(os.path.normpath(args.model)), "seq": args.seq,
                      "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                      "rank": args.rank if args.method != "full" else None, "checkpointing": args.checkpointing,
                      "trainable_params": n_trainable, "tokens_per_s": args.batch * args.seq / step_s,
                      "step_s": step_s, "step_s_min": min(times),
                      "cpu_s_per_step": sum(cpu_times) / len(cpu_times), "peak_rss_mb": round(peak_rss_mb, 1),
                      "train_peak_rss_mb": round(train_peak_rss_mb, 1) if train_rss_reset else None,
                      "qlora_base": qlora_base, "targets": args.targets,
                      "experts_implementation": getattr(model.config, "experts_implementation", None),
                      "loss_first": losses[0],
                      "loss_last": losses[-1], "load_s": round(load_s, 2), "fallback": fallback}), flush=True)


if __name__ == "__main__":
    main()
