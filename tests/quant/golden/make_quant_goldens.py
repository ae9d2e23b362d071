#!/usr/bin/env python3
"""Generates quant_goldens.safetensors: inputs, and what bitsandbytes makes of them, for the
byte-for-byte tests in tests/quant/test_bnb_golden.cpp.

  /work/venv/bin/pip install bitsandbytes   # 0.50.2 was used; runs on CPU (no GPU needed)
  python tests/quant/golden/make_quant_goldens.py

For each case "<input>.<type>.b<block>.<dq|nodq>" the file holds:
  .packed (u8, numel/2 rounded up: high nibble first), and either .absmax (f32) or
  .absmax_codes (u8) + .nested_absmax (f32) + .offset (f32, 1 element) with compress_statistics;
  .dequant (f32, or bf16 for the larger inputs) from bitsandbytes.functional.dequantize_4bit.
bitsandbytes 0.50.2's native CPU dequantize (AVX512 path) takes one absmax per row slice, so it is
wrong when a block spans rows (block_size > shape[-1]); there it disagrees with bitsandbytes' own
reference path (backends/default/ops.py _dequantize_4bit_compute, which it uses for odd shapes and
blocks >= 2048, and which matches CUDA). For those cases the reference path's output is stored and
the case is listed in the metadata key "native_cpu_dequant_wrong".
int8.input (8, 40) with int8.rowwise (i8) and int8.row_absmax (f32) from int8_vectorwise_quant:
round(x * (127 / absmax_row)), the LLM.int8() absmax quantization, one block per row.
Codebooks: code.nf4, code.fp4 (get_4bit_type), code.dynamic (create_dynamic_map(signed=True)).
Metadata records the cases, the versions and the seed.
"""
import json
import os
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

SEED = 1234
HERE = os.path.dirname(os.path.abspath(__file__))


def midpoint_block():
    # One block (64) per code type whose absmax is 1.0 and whose other values sit exactly on the
    # f32 midpoints between sorted code values and one ulp either side: pins down the tie rule.
    rows = []
    for qt in ("nf4", "fp4"):
        code = torch.sort(F.get_4bit_type(qt, device="cpu"))[0]
        mids = (code[:-1] + code[1:]) / 2
        vals = [1.0]
        for m in mids.tolist():
            t = torch.tensor([m], dtype=torch.float32)
            vals += [t.item(), torch.nextafter(t, torch.tensor([2.0])).item(),
                     torch.nextafter(t, torch.tensor([-2.0])).item()]
        vals += [0.0, -0.0] + [0.0] * (64 - len(vals) - 2)
        rows.append(torch.tensor(vals[:64], dtype=torch.float32))
    return torch.stack(rows)  # (2, 64)


def safe_open_real():
    from safetensors import safe_open
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "golden", "fixtures")
    with safe_open(os.path.join(root, "stories260k-hf", "model.safetensors"), "pt") as f:
        return f.get_tensor("model.layers.0.mlp.down_proj.weight").float().contiguous()


def main():
    g = torch.Generator().manual_seed(SEED)
    inputs = {
        # (48, 64): a weight-like matrix, N(0, 0.02) with a few outliers.
        "a": torch.randn(48, 64, generator=g) * 0.02,
        # (33, 47): odd numel (1551) and an odd last dim; the first 64 values are zero (zero block).
        "b": torch.randn(33, 47, generator=g),
        # (65, 260): 16900 values = 264 blocks of 64 + 4, so 2 nested blocks of 256 absmax.
        "c": torch.randn(65, 260, generator=g) * 0.05,
        "d": midpoint_block(),
        # (64, 172): a real trained weight, stories260K's layer-0 down_proj (from the golden HF fixture).
        "e": safe_open_real(),
    }
    inputs["a"][3, 7] = 0.3
    inputs["a"][40, 1] = -0.25
    inputs["b"].view(-1)[:64] = 0.0
    cases = [
        ("a", "nf4", 64, False), ("a", "nf4", 64, True), ("a", "fp4", 64, False),
        ("a", "fp4", 128, True), ("a", "nf4", 4096, False),
        ("b", "nf4", 64, False), ("b", "fp4", 64, True), ("b", "nf4", 128, True),
        ("c", "nf4", 64, True), ("c", "fp4", 64, True), ("c", "nf4", 4096, True), ("c", "nf4", 128, False),
        ("d", "nf4", 64, False), ("d", "fp4", 64, False),
        ("e", "nf4", 64, True), ("e", "fp4", 64, False), ("e", "nf4", 128, False),
    ]
    out = {f"input.{k}": v.contiguous() for k, v in inputs.items()}
    out["code.nf4"] = F.get_4bit_type("nf4", device="cpu")
    out["code.fp4"] = F.get_4bit_type("fp4", device="cpu")
    out["code.dynamic"] = F.create_dynamic_map(signed=True)
    names = []
    native_wrong = []
    for inp, qt, bs, dq in cases:
        x = inputs[inp]
        name = f"{inp}.{qt}.b{bs}.{'dq' if dq else 'nodq'}"
        names.append(name)
        packed, st = F.quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=dq)
        out[f"{name}.packed"] = packed.reshape(-1).contiguous()
        if dq:
            out[f"{name}.absmax_codes"] = st.absmax.contiguous()
            out[f"{name}.nested_absmax"] = st.state2.absmax.contiguous()
            out[f"{name}.offset"] = st.offset.reshape(1).float().contiguous()
            assert st.state2.blocksize == 256
        else:
            out[f"{name}.absmax"] = st.absmax.contiguous()
        big = x.numel() > 8192
        if big and name != "c.nf4.b64.dq":
            continue
        # bf16 for the large input keeps the file small and tests the bf16 path.
        dtype = torch.bfloat16 if big else torch.float32
        st.dtype = dtype
        deq = F.dequantize_4bit(packed, st, quant_type=qt)
        absmax = (F.dequantize_blockwise(st.absmax, st.state2) + st.offset) if dq else st.absmax
        ref = _dequantize_4bit_compute(packed.reshape(-1), absmax, F.get_4bit_type(qt, device="cpu"), bs,
                                       tuple(x.shape), dtype)
        if not torch.equal(deq.view(-1), ref.view(-1)):
            print(f"{name}: native CPU dequantize disagrees with the reference path; storing the latter",
                  file=sys.stderr)
            native_wrong.append(name)
            deq = ref
        out[f"{name}.dequant"] = deq.contiguous()
    x8 = torch.randn(8, 40, generator=g) * 3.0
    q8, stats8, _ = F.int8_vectorwise_quant(x8.clone())
    out["int8.input"] = x8.contiguous()
    out["int8.rowwise"] = q8.contiguous()
    out["int8.row_absmax"] = stats8.float().contiguous()
    meta = {
        "cases": json.dumps(names),
        "native_cpu_dequant_wrong": json.dumps(native_wrong),
        "seed": str(SEED),
        "bitsandbytes": bnb.__version__,
        "torch": torch.__version__,
        "generator": "tests/quant/golden/make_quant_goldens.py",
    }
    path = os.path.join(HERE, "quant_goldens.safetensors")
    save_file(out, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes), {len(names)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
