#!/usr/bin/env python3
"""Writes the fuzz seed corpora, tests/fuzz/corpus/<target>/: a few tiny, valid (or nearly valid)
inputs per target, so libFuzzer starts from files that reach deep into each reader. Deterministic;
each seed is a few KB at most. Run with the project venv (gguf, safetensors, numpy):
    venv/bin/python tests/fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct
import tempfile

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType
from safetensors.numpy import save as st_save

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")  # /work/shared beside the checkout
rng = np.random.default_rng(14)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- safetensors ----
put("safetensors", "two_tensors.safetensors",
    st_save({"w": f32(2, 3), "b": f32(3).astype(np.float16)}, metadata={"format": "pt"}))
put("safetensors", "dtypes.safetensors",
    st_save({"i8": np.arange(4, dtype=np.int8), "u8": np.arange(3, dtype=np.uint8),
             "i64": np.arange(2, dtype=np.int64), "f64": np.ones((1, 2)), "empty": np.zeros((0, 4), np.float32),
             "bool": np.array([True, False])}))


# ---- GGUF (generic file, model, vocab) ----
def gguf_bytes(build, version=3):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.gguf")
        w = GGUFWriter(p, "llama")
        build(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        b = open(p, "rb").read()
    if version != 3:
        b = b[:4] + struct.pack("<I", version) + b[8:]
    return b


def tiny_model(w):
    # A tiny Llama: C=8, F=16, L=1, H=2, Hkv=1, V=12, with every metadata value type.
    w.add_context_length(16)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_uint8("test.u8", 7)
    w.add_int16("test.i16", -3)
    w.add_uint64("test.u64", 1 << 40)
    w.add_float64("test.f64", 0.25)
    w.add_bool("test.bool", True)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_tensor("token_embd.weight", f32(12, 8))
    w.add_tensor("blk.0.attn_norm.weight", f32(8))
    w.add_tensor("blk.0.attn_q.weight", f32(8, 8))
    w.add_tensor("blk.0.attn_k.weight", f32(4, 8))
    w.add_tensor("blk.0.attn_v.weight", f32(4, 8))
    w.add_tensor("blk.0.attn_output.weight", f32(8, 8))
    w.add_tensor("blk.0.ffn_norm.weight", f32(8))
    w.add_tensor("blk.0.ffn_gate.weight", f32(16, 8).astype(np.float16))
    w.add_tensor("blk.0.ffn_up.weight", f32(16, 8))
    w.add_tensor("blk.0.ffn_down.weight", f32(8, 16))
    w.add_tensor("output_norm.weight", f32(8))


def quant_tensors(w):
    # Raw blocks of a few GGML types (Q8_0: 34 bytes per 32 values; Q4_0: 18; Q4_K: 144 per 256).
    w.add_uint32("general.alignment", 64)
    for name, qtype, nbytes, elems in [("q8", GGMLQuantizationType.Q8_0, 34, 32), ("q4", GGMLQuantizationType.Q4_0, 18, 32),
                                      ("q4k", GGMLQuantizationType.Q4_K, 144, 256),
                                      ("q6k", GGMLQuantizationType.Q6_K, 210, 256)]:
        raw = rng.integers(0, 256, nbytes, dtype=np.uint8)
        raw[0:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
        w.add_tensor(name, raw, raw_shape=(1, nbytes), raw_dtype=qtype)


put("gguf", "tiny_llama_v3.gguf", gguf_bytes(tiny_model))
put("gguf", "quant_blocks_v3.gguf", gguf_bytes(quant_tensors))
put("gguf", "no_tensors_v2.gguf", gguf_bytes(lambda w: w.add_string("general.name", "x"), version=2))

SPM_TOKENS = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "<0xFF>", "\u2581", "\u2581H", "ello", "\u2581Hello", "\u2581w",
              "orld", "\u2581world", "l", "o", "e", "H", "<|im_start|>"]


def spm_vocab(w, types=True, specials=True, tokens=SPM_TOKENS):
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([float(-i) for i in range(len(tokens))])
    if types:
        w.add_token_types([2, 3, 3, 6, 6, 6] + [1] * (len(SPM_TOKENS) - 7) + [4])
    if specials:
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    w.add_add_bos_token(True)


BPE_TOKENS = ["!", "H", "e", "l", "o", "\u0120", "w", "r", "d", "He", "ll", "llo", "Hello", "\u0120w", "or", "\u0120wor",
              "ld", "\u0120world", "<|endoftext|>"]


def bpe_vocab(w):
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(BPE_TOKENS)
    w.add_token_types([1] * (len(BPE_TOKENS) - 1) + [3])
    w.add_token_merges(["H e", "l l", "ll o", "He llo", "\u0120 w", "o r", "\u0120w or", "l d", "\u0120wor ld"])
    w.add_eos_token_id(len(BPE_TOKENS) - 1)


put("gguf_vocab", "spm.gguf", gguf_bytes(spm_vocab))
put("gguf_vocab", "spm_no_types.gguf", gguf_bytes(lambda w: spm_vocab(w, types=False, specials=False)))
put("gguf_vocab", "bpe.gguf", gguf_bytes(bpe_vocab))

# Reproducers of the two vocabulary bugs fixed in dfcc3a2 (issue 14): a 2-token SPM vocab without
# token types or special ids took the default BOS/EOS ids 1 and 2 and wrote tokens[2] (a heap
# overflow); a Byte-typed "<0xZZ>" made decode_token throw std::stoi's own exception.
REG = os.path.join(HERE, "regressions")


def put_regression(target, name, data):
    d = os.path.join(REG, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


put_regression("gguf_vocab", "default_eos_past_two_token_vocab.gguf",
               gguf_bytes(lambda w: spm_vocab(w, types=False, specials=False, tokens=["<unk>", "a"])))
bad_byte = ["<unk>", "<s>", "</s>", "<0xZZ>", "a"]


def bad_byte_vocab(w):
    spm_vocab(w, types=False, tokens=bad_byte)
    w.add_token_types([2, 3, 3, 6, 1])


put_regression("gguf_vocab", "byte_token_not_hex.gguf", gguf_bytes(bad_byte_vocab))


# ---- llama2.c checkpoint: C=8, F=16, L=1, H=2, Hkv=1, V=10 (negative: untied), seq_len=4 ----
def llama2c(vocab):
    C, F, L, H, Hkv, V, T = 8, 16, 1, 2, 1, abs(vocab), 4
    D = C // H
    n = V * C + L * C + L * C * C + 2 * L * Hkv * D * C + L * C * C + L * C + 3 * L * F * C + C + 2 * T * (D // 2)
    if vocab < 0:
        n += V * C
    return struct.pack("<7i", C, F, L, H, Hkv, vocab, T) + f32(n).tobytes()


put("llama2c", "tied.bin", llama2c(10))
put("llama2c", "untied.bin", llama2c(-10))


# ---- PEFT adapter: adapter_config.json, NUL, adapter_model.safetensors ----
def peft(r, targets, dtype=np.float32):
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.05,
           "target_modules": targets, "bias": "none", "use_rslora": False, "base_model_name_or_path": "tiny"}
    tensors = {}
    for t in targets:
        mod = "self_attn" if t.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
        key = f"base_model.model.model.layers.0.{mod}.{t}"
        tensors[key + ".lora_A.weight"] = f32(r, 8).astype(dtype)
        tensors[key + ".lora_B.weight"] = f32(8, r).astype(dtype)
    return json.dumps(cfg).encode() + b"\0" + st_save(tensors, metadata={"format": "pt"})


put("peft_adapter", "qv_r2.bin", peft(2, ["q_proj", "v_proj"]))
put("peft_adapter", "mlp_r1_f16.bin", peft(1, ["gate_proj", "down_proj"], np.float16))


# ---- config.json ----
base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}
put("config_json", "llama2_7b.json", json.dumps(base, indent=1))
put("config_json", "llama3_rope.json", json.dumps(dict(base, vocab_size=128256, num_key_value_heads=8,
    rope_theta=500000.0, eos_token_id=[128001, 128009], rope_scaling={"rope_type": "llama3", "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})))
put("config_json", "qwen2_swa.json", json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864.0, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 4096,
    "tie_word_embeddings": True, "head_dim": 64, "dtype": "bfloat16"}))
put("config_json", "mistral_params.json", json.dumps({"model_type": "mistral", "vocab_size": 32, "hidden_size": 16,
    "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "sliding_window": None,
    "rope_parameters": {"rope_theta": 1e6, "rope_type": "linear", "factor": 2.0}}))


# ---- train YAML (leading "--key value" lines are overrides) ----
train = """base_model: /nonexistent/model.gguf
method: qlora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.1
lora_target_modules: [q_proj, v_proj]
datasets:
  - path: /nonexistent/train.jsonl
    type: alpaca
    fields: instruction=question,output=answer
    weight: 1.5
chat_template: chatml
sequence_len: 128
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 4
learning_rate: 1.0e-3
memory_budget: 6GiB
output_dir: /tmp/run
"""
put("train_yaml", "tiny.yaml", train)
put("train_yaml", "overrides.yaml", "--lora_r 16\n--datasets.0.path x.jsonl\n--datasets.1.weight 2\n" + train)
put("train_yaml", "scalar_dataset.yaml", "base_model: m\ndatasets: data.jsonl\nnum_epochs: 0.5\nthreads: 2\n")

# ---- tokenizer.json ----
bpe_json = {"version": "1.0", "added_tokens": [{"id": 19, "content": "<|endoftext|>", "special": True}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(BPE_TOKENS[:-1])},
                      "merges": ["H e", "l l", ["ll", "o"], "He llo", "\u0120 w", "o r", "\u0120w or", "l d", "\u0120wor ld"]}}
put("tokenizer_json", "byte_level.json", json.dumps(bpe_json))
spm_json = {"version": "1.0", "added_tokens": [{"id": 1, "content": "<s>", "special": True},
                                               {"id": 17, "content": "<|im_start|>", "special": False}],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                               {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            "pre_tokenizer": None,
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                         {"Sequence": {"id": "A", "type_id": 0}}]},
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                         {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                      "vocab": {t: i for i, t in enumerate(SPM_TOKENS)},
                      "merges": ["\u2581 H", "e l", "\u2581H ello", "\u2581 w", "o r"]}}
put("tokenizer_json", "spm_style.json", json.dumps(spm_json))


# ---- tokenizer.model (SentencePiece ModelProto, hand-encoded protobuf) ----
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def spm_model(pieces):
    out = b""
    for text, score, typ in pieces:
        p = field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(typ))
        out += field(1, 2, p)
    trainer = field(3, 0, varint(2)) + field(40, 0, varint(0)) + field(41, 0, varint(1)) + field(42, 0, varint(2)) + \
        field(43, 0, varint((1 << 64) - 1))  # pad_id -1 as protobuf writes an int32 -1
    normalizer = field(1, 2, b"identity") + field(3, 0, varint(1)) + field(4, 0, varint(0))
    return out + field(2, 2, trainer) + field(3, 2, normalizer)


types = [2, 3, 3, 6, 6, 6] + [1] * (len(SPM_TOKENS) - 7) + [4]
put("tokenizer_spm", "tiny.model", spm_model([(t, float(-i), types[i]) for i, t in enumerate(SPM_TOKENS)]))
put_regression("tokenizer_spm", "byte_token_not_hex.model",
               spm_model([("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<0xZZ>", 0.0, 6), ("a", -1.0, 1)]))
llama2_model = os.path.join(SHARED, "models/llama2-tokenizer/tokenizer.model")
if os.path.exists(llama2_model):
    # The first pieces of the real Llama 2 model (cut at a piece boundary) plus its specs.
    real = open(llama2_model, "rb").read()
    pos, pieces_end = 0, 0
    while pos < len(real) and real[pos] == 0x0A and pos < 8000:
        n, shift, q = 0, 0, pos + 1
        while True:
            b = real[q]; q += 1; n |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        pos = q + n
        pieces_end = pos
    rest = pos
    while rest < len(real) and real[rest] == 0x0A:  # skip the remaining pieces
        n, shift, q = 0, 0, rest + 1
        while True:
            b = real[q]; q += 1; n |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        rest = q + n
    put("tokenizer_spm", "llama2_head.model", real[:pieces_end] + real[rest:])


# ---- Jinja chat templates ----
src = open(os.path.join(ROOT, "src/data/chat_template.cpp"), encoding="utf-8").read()
golden = json.load(open(os.path.join(ROOT, "tests/data/golden/chat_template_golden.json")))
templates = golden["templates"]
for i, (name, text) in enumerate(sorted(templates.items()) if isinstance(templates, dict) else enumerate(templates)):
    t = text if isinstance(text, str) else text.get("template", json.dumps(text))
    if len(t.encode()) <= 8000:
        put("jinja", f"golden_{i:02d}.jinja", t)
put("jinja", "features.jinja",
    "{%- set xs = [1, 2.5, 'a', none, true] -%}{% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k ~ v | string }}"
    "{% else %}empty{% endfor %}{{ xs[1:3] | length }}{{ xs[-1] is defined }}{{ (n * 7 // 2) % 5 }}"
    "{{ 'Hi'.upper().replace('I', 'o').split('o') | join('-') }}{{ range(3) | first }}{{ x if n > 2 else -x }}"
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ m.role | capitalize }}{{ m['content'] | trim }}"
    "{% if loop.last and add_generation_prompt %}{{ bos_token }}{% endif %}{% endfor %}{# comment #}")


# ---- JSONL datasets (first byte: format and strictness, see fuzz_dataset_jsonl.cpp) ----
def rows(*objs):
    return "\n".join(json.dumps(o) for o in objs) + "\n"


put("dataset_jsonl", "alpaca.jsonl", b"\x00" + rows(
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate", "input": "chat", "output": "cat"}).encode())
put("dataset_jsonl", "gsm8k_fields.jsonl", b"\x09" + rows(
    {"question": "Tom has 3 apples. How many?", "answer": "3 #### 3"}, {"question": "bad"}).encode())
put("dataset_jsonl", "chat.jsonl", b"\x02" + rows(
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello"}]},
    {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}).encode())
put("dataset_jsonl", "text.jsonl", b"\x03" + b"Once upon a time there was a tiny model.\n" * 4)
put("dataset_jsonl", "array.jsonl", b"\x04" + json.dumps([{"instruction": "x", "output": "y"}]).encode())

# Reproducers of the size overflows fixed with core/checked_size.h (issue 14): byte counts that
# wrapped around 2^64 to 0, so the "size matches the data" checks passed and a tensor of 2^61 or
# 2^62 elements viewed an empty data section (reading it faults). The llama2.c header's float
# count overflowed int64 (signed overflow; UBSan reports it).
put_regression("safetensors", "f64_byte_size_wraps_to_zero.safetensors",
               (lambda h: struct.pack("<Q", len(h)) + h)(
                   b'{"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}}'))


# Tensor info written by hand (gguf-py rescales raw shapes): F32 "w" with dims 2^31 x 2^31.
name = b"w"
info = struct.pack("<Q", len(name)) + name + struct.pack("<I", 2) + struct.pack("<QQ", 1 << 31, 1 << 31) + \
    struct.pack("<IQ", 0, 0)
head = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + info
put_regression("gguf", "f32_byte_size_wraps_to_zero.gguf", head + b"\0" * (-len(head) % 32))
put_regression("llama2c", "float_count_overflows_int64.bin",
               struct.pack("<7i", 1 << 24, 1 << 24, 1 << 24, 1 << 12, 1 << 12, 32000, 256))
# Train-config overrides whose library exceptions escaped (issue 14): std::stoul's out_of_range
# for a list index past 2^64, std::filesystem_error for a path too long to stat. (The fuzzer found
# the third, YAML::BadSubscript: regressions/train_yaml/yaml_bad_subscript_escapes_override.yaml.)
put_regression("train_yaml", "stoul_out_of_range_in_override_index.yaml",
               ("--datasets.99999999999999999999999.path x.jsonl\n" + train).encode())
put_regression("train_yaml", "filesystem_error_for_overlong_path.yaml",
               train.replace("/nonexistent/model.gguf", "m" * 5000).encode())
# Chat templates (issue 14's Jinja item): signed overflow in integer arithmetic and negation and
# a float cast out of range in |int (UBSan reports each), a nesting deep enough to overflow the
# parser's stack, and a loop long enough to exhaust memory or time; each is now a named Error.
put_regression("jinja", "int_add_overflow.jinja", "{{ 9223372036854775807 + 1 }}")
put_regression("jinja", "int_mul_overflow.jinja", "{{ 4611686018427387904 * 4 }}")
put_regression("jinja", "int_negate_min.jinja", "{{ -(-9223372036854775807 - 1) }}")
put_regression("jinja", "int_filter_float_out_of_range.jinja", "{{ 1" + "0" * 300 + ".0 | int }}")
put_regression("jinja", "parens_nested_20k.jinja", "{{" + "(" * 20000 + "1" + ")" * 20000 + "}}")
put_regression("jinja", "ifs_nested_2500.jinja", "{%if 1%}" * 2500 + "x" + "{%endif%}" * 2500)
put_regression("jinja", "plus_chain_25k.jinja", "{{1" + "+1" * 25000 + "}}")
put_regression("jinja", "range_huge.jinja", "{% for i in range(1000000000000) %}{{ i }}{% endfor %}")
put_regression("jinja", "string_quadrupling.jinja", "{% set s = 'ab' %}" + "{% set s = s ~ s ~ s ~ s %}" * 24 + "{{ s | length }}")
# config.json float fields cast to int64 out of range (UBSan: float-cast-overflow).
put_regression("config_json", "hidden_size_1e30.json", json.dumps(dict(base, hidden_size=1e30)))

total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(CORPUS) for f in fs)
print(f"wrote {CORPUS}: {total} bytes")
