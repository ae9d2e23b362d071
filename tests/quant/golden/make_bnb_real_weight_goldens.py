#!/usr/bin/env python3
"""Generates bnb_real_weights.safetensors and bnb_cuda_thresholds.json for
tests/quant/test_bnb_real_weights.cpp: what bitsandbytes makes of real trained weights and of inputs
built to sit on its rounding boundaries.

  venv/bin/pip install torch bitsandbytes==0.50.2 gguf safetensors   # CPU is enough
  bash scripts/fetch_models.sh                                        # models/SmolLM2-135M-Instruct.Q4_1.gguf
  venv/bin/python tests/quant/golden/make_bnb_real_weight_goldens.py

Real weights: four matrices of SmolLM2-135M-Instruct (the README's default model), dense as
transformers' GGUF loader gives them (gguf-py's dequantize, q/k rows permuted back to HF order),
cut to their first rows. The inputs are not stored (the test reads them from the same GGUF); their
FNV-1a 64 hash over the f32 bytes is, so the test knows it quantizes the same values. For each of
NF4 / FP4, with and without double quantization, block sizes 64 and 128:
bitsandbytes.functional.quantize_4bit on the CPU, i.e. torch.bucketize for the 4-bit codes and the
native lookup-table kernel for the 8-bit absmax codes.

Near-ties: "tie4.<type>": blocks whose values are f32 midpoints (and the kernel thresholds) times
an absmax of 1, 3 and 0.7, and 2 ulp either side; "tie8": values on the dynamic map's f32 midpoints
and on the cell edges of bitsandbytes' CPU lookup table, 1 ulp either side, through
quantize_blockwise (blocksize 256).

CUDA: bnb_cuda_thresholds.json holds the float immediates that the shipped CUDA library
(libbitsandbytes_cuda*.so, sm_90 code) compares with in kQuantizeBlockwise<float, 128, NF4/FP4>,
read with cuobjdump (from the CUDA toolkit, or the copy triton ships), and whether the kernel's
1 / absmax is the hardware's approximate reciprocal (MUFU.RCP): the facts a CPU emulation of the
GPU's bytes rests on.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# (GGUF name, HF name, heads for the q/k permutation or 0, rows kept)
MATRICES = [
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 9, 32),
    ("blk.7.attn_k.weight", "model.layers.7.self_attn.k_proj.weight", 3, 32),
    ("blk.15.ffn_gate.weight", "model.layers.15.mlp.gate_proj.weight", 0, 32),
    ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight", 0, 12),
]
CONFIGS = [(qt, bs, dq) for qt in ("nf4", "fp4") for bs in (64, 128) for dq in (False, True)]


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def reverse_permute(w, n_head):
    # llama.cpp's converter interleaves the rotary halves of each head's rows; undo it (as
    # transformers' GGUF loader does) to get the Hugging Face row order.
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def real_inputs():
    reader = GGUFReader(MODEL)
    tensors = {t.name: t for t in reader.tensors}
    out = []
    for gguf_name, hf_name, heads, rows in MATRICES:
        t = tensors[gguf_name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(int(t.shape[1]), int(t.shape[0]))
        if heads:
            w = reverse_permute(w, heads)
        out.append((hf_name, np.ascontiguousarray(w[:rows])))
    return out


def f32_neighbours(v, k):
    t = torch.tensor([v], dtype=torch.float32)
    vals, up, down = [t.item()], t.clone(), t.clone()
    for _ in range(k):
        up = torch.nextafter(up, torch.tensor([4.0]))
        down = torch.nextafter(down, torch.tensor([-4.0]))
        vals += [up.item(), down.item()]
    return vals


def tie4_input(qt, cuda_thresholds):
    # Each row is one block of 64 whose first value is the absmax; the rest sit on a boundary
    # (f32 midpoint or kernel threshold) times that absmax, and 2 ulp either side.
    code = torch.sort(F.get_4bit_type(qt, device="cpu"))[0]
    bounds = ((code[:-1] + code[1:]) / 2).tolist() + cuda_thresholds
    if qt == "fp4":
        bounds += [-b for b in cuda_thresholds]
    rows, per_row = [], 63
    for am in (1.0, 3.0, 0.7):
        values = []
        for b in bounds:
            values += f32_neighbours(float(np.float32(b) * np.float32(am)), 2)
        for k in range(0, len(values), per_row):
            chunk = values[k:k + per_row]
            rows.append(torch.tensor([am] + chunk + [0.0] * (per_row - len(chunk)), dtype=torch.float32))
    return torch.stack(rows)


def tie8_input():
    code = F.create_dynamic_map(signed=True).float()
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    # Cell edges of the CPU lookup table: index = (v + 1) * 0.5 * 65535 + 0.5 truncated, so the
    # edges are where (v + 1) * 0.5 * 65535 = k + 0.5; take those next to each midpoint.
    edges = []
    for m in mids:
        k = round((m + 1.0) * 0.5 * 65535)
        for kk in (k - 1, k):
            edges.append(((kk + 0.5) / 65535.0) * 2.0 - 1.0)
    values = []
    for v in mids + edges:
        values += f32_neighbours(v, 1)
    values = [max(-1.0, min(1.0, v)) for v in values]
    # Blocks of 256 led by 1.0 so that absmax = 1 and v / absmax = v exactly.
    out = []
    for i in range(0, len(values), 255):
        c = values[i:i + 255]
        out += [1.0] + c + [0.0] * (255 - len(c))
    return torch.tensor(out, dtype=torch.float32)


def cuda_thresholds():
    lib = sorted(glob.glob(os.path.join(os.path.dirname(bnb.__file__), "libbitsandbytes_cuda*.so")))[-1]
    tool = shutil.which("cuobjdump")
    if tool is None:
        import triton
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    work = os.path.join("/tmp", "bnb_sass")
    os.makedirs(work, exist_ok=True)
    listing = subprocess.run([tool, "-lelf", lib], capture_output=True, text=True, check=True).stdout
    cubin = next(l.split(": ")[1].strip() for l in listing.splitlines() if "sm_90" in l)
    subprocess.run([tool, "-xelf", cubin, lib], cwd=work, capture_output=True, check=True)
    sass = subprocess.run([tool, "-sass", os.path.join(work, cubin)], capture_output=True, text=True,
                          check=True).stdout
    result = {"library": os.path.basename(lib), "arch": "sm_90", "bitsandbytes": bnb.__version__}
    for name, data_type in (("nf4", 2), ("fp4", 1)):
        fn = f"_Z18kQuantizeBlockwiseIfLi128ELi2ELi0ELi{data_type}EEv"
        body = sass.split(f"Function : {fn}")[1].split("Function : ")[0]
        hexes = []
        for line in body.splitlines():
            m = re.search(r"FSETP\.GT\.FTZ\.AND P\d, PT, \|?R\d+\|?(?:\.reuse)?, ([-0-9.e+]+), PT ;\s*/\* 0x([0-9a-f]{8})", line)
            if m:
                hexes.append(m.group(2))
        # Each nibble of a byte runs the same tree: keep the distinct thresholds, sorted by value.
        distinct = sorted(set(hexes), key=lambda h: np.frombuffer(bytes.fromhex(h)[::-1], np.float32)[0])
        result[name] = {
            "thresholds_f32_hex": distinct,
            "compares_magnitude": "|R" in body.split("FSETP.GT.FTZ")[1].split(";")[0],
            "reciprocal_is_mufu_rcp": "MUFU.RCP" in body,
            "flush_to_zero": "FMUL.FTZ" in body,
        }
    return result


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} missing: run scripts/fetch_models.sh")
    torch.manual_seed(0)
    cuda = cuda_thresholds()
    with open(os.path.join(HERE, "bnb_cuda_thresholds.json"), "w") as f:
        json.dump(cuda, f, indent=1)
        f.write("\n")
    as_float = lambda h: float(np.frombuffer(bytes.fromhex(h)[::-1], np.float32)[0])

    out, meta = {}, {"bitsandbytes": bnb.__version__, "torch": torch.__version__, "model": os.path.basename(MODEL)}
    cases = []
    inputs = [(name, torch.from_numpy(w)) for name, w in real_inputs()]
    for qt in ("nf4", "fp4"):
        x = tie4_input(qt, [as_float(h) for h in cuda[qt]["thresholds_f32_hex"]])
        out[f"input.tie4.{qt}"] = x
        inputs.append((f"tie4.{qt}", x))
    for name, x in inputs:
        meta[f"fnv1a64.{name}"] = fnv1a64(x.numpy().tobytes())
        meta[f"shape.{name}"] = list(x.shape)
        for qt, bs, dq in CONFIGS:
            if name.startswith("tie4.") and not name.endswith(qt):
                continue
            key = f"{name}.{qt}.b{bs}.{'dq' if dq else 'nodq'}"
            packed, st = F.quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=dq)
            out[key + ".packed"] = packed.reshape(-1).contiguous()
            if dq:
                out[key + ".absmax_codes"] = st.absmax.reshape(-1).contiguous()
                out[key + ".nested_absmax"] = st.state2.absmax.reshape(-1).contiguous()
                out[key + ".offset"] = st.offset.reshape(1).float()
            else:
                out[key + ".absmax"] = st.absmax.reshape(-1).float().contiguous()
            cases.append(key)
    x8 = tie8_input()
    q8, st8 = F.quantize_blockwise(x8, blocksize=256)
    out["input.tie8"] = x8
    out["tie8.codes"] = q8.contiguous()
    out["tie8.absmax"] = st8.absmax.float().contiguous()
    meta["cases"] = cases
    save_file(out, os.path.join(HERE, "bnb_real_weights.safetensors"),
              metadata={"json": json.dumps(meta)})
    size = os.path.getsize(os.path.join(HERE, "bnb_real_weights.safetensors"))
    print(f"{len(cases)} cases, {size / 1024:.0f} KiB; cuda thresholds from {cuda['library']}")


if __name__ == "__main__":
    main()
