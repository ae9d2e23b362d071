"""Golden values for the GGML dequantization kernels (src/io/ggml_dequant.cpp), with gguf-py's
`gguf.quants.dequantize` as the oracle. Writes gguf_dequant.gguf: for each type T of Q5_0, Q5_1,
Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K a tensor "T" of shape (2, 512) stored as T, and "T.expected",
the same values as gguf-py dequantizes them, in F32.

Blocks: Q5_0, Q5_1 and Q8_0 come from gguf-py's own quantizers on normal values. gguf-py has no
quantizer for the k-quants, so their blocks are random bytes with the f16 super-block scales
(d, dmin) set to finite values of realistic size: every byte of a k-quant block other than those
scales is a free bit field (sub-block scales, mins, 2- to 6-bit codes), so random bytes are valid
blocks and exercise every bit of the layout. Seeded; rerun to regenerate:

    venv/bin/python tests/quant/golden/make_gguf_dequant_golden.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS = 2, 512

# Byte offsets of the f16 super-block scales within each k-quant block (ggml-common.h).
KQUANT_SCALES = {
    T.Q2_K: [80, 82],   # d, dmin after scales[16] and qs[64]
    T.Q3_K: [108],      # d after hmask[32], qs[64], scales[12]
    T.Q4_K: [0, 2],     # d, dmin first
    T.Q5_K: [0, 2],
    T.Q6_K: [208],      # d after ql[128], qh[64], scales[16]
}


def random_kquant_blocks(rng, qtype):
    elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = ROWS * COLS // elems
    raw = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    for off in KQUANT_SCALES[qtype]:
        # Mostly positive scales of 1e-4 .. 1e-2, a few negative (Q6_K's d may be), one zero.
        d = (rng.uniform(1e-4, 1e-2, size=blocks) * rng.choice([1, 1, 1, -1], size=blocks)).astype(np.float16)
        d[0] = 0
        raw[:, off:off + 2] = d.view(np.uint8).reshape(blocks, 2)
    return raw.reshape(ROWS, COLS // elems * block_bytes)


def main():
    rng = np.random.default_rng(20261202)
    w = gguf.GGUFWriter(os.path.join(HERE, "gguf_dequant.gguf"), "qlora-test")
    w.add_string("qlora.golden", "ggml dequantization: gguf-py " + getattr(gguf, "__version__", "?"))
    for qtype in [T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        if qtype in KQUANT_SCALES:
            raw = random_kquant_blocks(rng, qtype)
        else:
            raw = quantize(rng.standard_normal((ROWS, COLS)).astype(np.float32) * 0.05, qtype)
        expected = dequantize(raw, qtype)
        assert expected.shape == (ROWS, COLS) and np.isfinite(expected).all()
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", expected.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
