// GGUF reader: the real stories260K GGUF (v1, F32 tensors) and llama.cpp's gpt-2 vocab file (v3,
// metadata only) parse; Q8_0/Q4_0/Q4_1 dequantization on hand-made blocks equals hand-computed
// values; hand-written v1/v2/v3 files round-trip metadata and tensors; corrupt and truncated
// files fail with errors naming the file (and tensor).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "io/ggml_dequant.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/llama2c.h"
#include "io_test_util.h"
#include "test_paths.h"

namespace qlora {
namespace {

using test::expect_error;
using test::TempDir;

// f16 bit patterns written literally so the expected values do not depend on our converter.
constexpr uint16_t kHalf0_25 = 0x3400, kHalf0_5 = 0x3800, kHalf2 = 0x4000, kHalfMinus1 = 0xBC00;

void put_half(std::vector<uint8_t>& b, uint16_t h) {
  b.push_back(uint8_t(h & 0xff));
  b.push_back(uint8_t(h >> 8));
}

TEST(GgufDequant, Q8_0) {
  // Block 0: d = 0.5, q[j] = j - 16. Block 1: d = 2, q = {-128, 127, 0, ...}.
  std::vector<uint8_t> b;
  put_half(b, kHalf0_5);
  for (int j = 0; j < 32; ++j) b.push_back(uint8_t(int8_t(j - 16)));
  put_half(b, kHalf2);
  b.push_back(uint8_t(int8_t(-128)));
  b.push_back(127);
  for (int j = 2; j < 32; ++j) b.push_back(0);
  ASSERT_EQ(b.size(), 68u);
  std::vector<float> out(64);
  dequantize_q8_0(b.data(), out.data(), 64);
  EXPECT_EQ(out[0], -8.0f);
  EXPECT_EQ(out[15], -0.5f);
  EXPECT_EQ(out[16], 0.0f);
  EXPECT_EQ(out[31], 7.5f);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[size_t(j)], 0.5f * float(j - 16));
  EXPECT_EQ(out[32], -256.0f);
  EXPECT_EQ(out[33], 254.0f);
  EXPECT_EQ(out[34], 0.0f);
}

TEST(GgufDequant, Q4_0) {
  // d = 2; byte j = j | (15 - j) << 4: element j = 2 * (j - 8), element j + 16 = 2 * (7 - j).
  std::vector<uint8_t> b;
  put_half(b, kHalf2);
  for (int j = 0; j < 16; ++j) b.push_back(uint8_t(j | ((15 - j) << 4)));
  // Second block: d = 0.5, every byte 0x8f: low nibble 15 -> 3.5, high nibble 8 -> 0.
  put_half(b, kHalf0_5);
  for (int j = 0; j < 16; ++j) b.push_back(0x8f);
  ASSERT_EQ(b.size(), 36u);
  std::vector<float> out(64);
  dequantize_q4_0(b.data(), out.data(), 64);
  EXPECT_EQ(out[0], -16.0f);
  EXPECT_EQ(out[8], 0.0f);
  EXPECT_EQ(out[15], 14.0f);
  EXPECT_EQ(out[16], 14.0f);
  EXPECT_EQ(out[31], -16.0f);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[size_t(j)], 2.0f * float(j - 8));
    EXPECT_EQ(out[size_t(j + 16)], 2.0f * float(7 - j));
    EXPECT_EQ(out[size_t(32 + j)], 3.5f);
    EXPECT_EQ(out[size_t(48 + j)], 0.0f);
  }
}

TEST(GgufDequant, Q4_1) {
  // d = 0.25, m = -1; byte j = j | (15 - j) << 4: element j = 0.25 j - 1, j + 16 = 0.25 (15 - j) - 1.
  std::vector<uint8_t> b;
  put_half(b, kHalf0_25);
  put_half(b, kHalfMinus1);
  for (int j = 0; j < 16; ++j) b.push_back(uint8_t(j | ((15 - j) << 4)));
  ASSERT_EQ(b.size(), 20u);
  std::vector<float> out(32);
  dequantize_q4_1(b.data(), out.data(), 32);
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[4], 0.0f);
  EXPECT_EQ(out[15], 2.75f);
  EXPECT_EQ(out[16], 2.75f);
  EXPECT_EQ(out[31], -1.0f);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[size_t(j)], 0.25f * float(j) - 1.0f);
    EXPECT_EQ(out[size_t(j + 16)], 0.25f * float(15 - j) - 1.0f);
  }
}

TEST(GgufDequant, TypeTable) {
  EXPECT_EQ(ggml_type_name(8), "Q8_0");
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
  EXPECT_EQ(ggml_type_name(99), "type 99");
  EXPECT_EQ(ggml_type_traits(3).block_bytes, 20u);
  EXPECT_EQ(ggml_type_traits(14).block_bytes, 210u);  // Q6_K
  EXPECT_TRUE(ggml_type_dequantizable(2));
  for (uint32_t t : {6u, 7u, 10u, 11u, 12u, 13u, 14u}) EXPECT_TRUE(ggml_type_dequantizable(t)) << t;  // Q5_*, k-quants
  EXPECT_FALSE(ggml_type_dequantizable(16));  // IQ2_XXS
  EXPECT_FALSE(ggml_type_dequantizable(15));  // Q8_K: llama.cpp's intermediate, never in files
}

TEST(Gguf, ParsesStories260KVersion1) {
  const std::string path = test::shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf");
  if (!test::exists(path)) GTEST_SKIP() << path << " not found";
  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 1u);
  EXPECT_EQ(g.get("general.architecture").as_string("general.architecture"), "llama");
  EXPECT_EQ(g.get("llama.block_count").as_int("llama.block_count"), 5);
  EXPECT_EQ(g.get("llama.embedding_length").as_int("x"), 64);
  EXPECT_EQ(g.get("llama.attention.head_count_kv").as_int("x"), 4);
  EXPECT_FLOAT_EQ(float(g.get("llama.attention.layer_norm_rms_epsilon").as_float("x")), 1e-5f);
  EXPECT_EQ(g.get("tokenizer.ggml.tokens").as_array("x").size(), 512u);
  EXPECT_EQ(g.get("tokenizer.ggml.tokens").as_array("x")[1].as_string("x"), "<s>");
  EXPECT_EQ(g.tensors().size(), 48u);  // embedding, 5 x 9 layer tensors, output_norm, output
  const GgufTensorInfo* k = g.find_tensor("blk.0.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, (Shape{32, 64}));
  EXPECT_EQ(g.find_tensor("nope"), nullptr);
  expect_error([&] { g.get("llama.nope"); }, {path, "llama.nope"});
  expect_error([&] { g.get("llama.block_count").as_string("llama.block_count"); },
               {"llama.block_count", "expected a string"});

  // The embedding is byte-identical to the llama2.c checkpoint's (README: same tensors).
  const std::string bin = test::shared_path("models/stories260K/stories260K.bin");
  const Tensor emb = g.load("token_embd.weight");
  EXPECT_EQ(emb.shape(), (Shape{512, 64}));
  EXPECT_EQ(emb.dtype(), DType::F32);
  if (test::exists(bin)) {
    const Llama2cCheckpoint ck = Llama2cCheckpoint::open(bin);
    EXPECT_EQ(std::memcmp(emb.raw(), ck.token_embedding.raw(), emb.nbytes()), 0);
    const Tensor wk = g.load("blk.2.attn_k.weight");
    EXPECT_EQ(std::memcmp(wk.raw(), ck.wk.slice_rows(2, 3).raw(), wk.nbytes()), 0);
  }
}

TEST(Gguf, ParsesGpt2VocabVersion3WithoutTensors) {
  const std::string path = test::shared_path("data/llama-cpp-vocab-tests/ggml-vocab-gpt-2.gguf");
  if (!test::exists(path)) GTEST_SKIP() << path << " not found";
  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.get("general.architecture").as_string("x"), "gpt2");
  EXPECT_EQ(g.get("tokenizer.ggml.tokens").as_array("x").size(), 50257u);
  EXPECT_EQ(g.get("tokenizer.ggml.merges").as_array("x").size(), 50000u);
  EXPECT_EQ(g.get("tokenizer.ggml.eos_token_id").as_int("x"), 50256);
}

// A small file with every tensor type we dequantize; `version` picks the integer widths.
test::GgufBuilder make_file(uint32_t version, uint64_t alignment = 32) {
  test::GgufBuilder b(version, alignment);
  b.kv_str("general.architecture", "test");
  b.kv_u32("test.u32", 7);
  b.kv_i32("test.i32", -3);
  b.kv_f32("test.f32", 0.25f);
  b.kv_u64("test.u64", 1ull << 40);
  b.kv_bool("test.bool", true);
  b.kv_str_array("test.strs", {"a", "bc", ""});
  b.kv_i32_array("test.ints", {1, -2, 3});
  if (alignment != 32) b.kv_u32("general.alignment", uint32_t(alignment));
  b.tensor_f32("f32", {3, 2}, {1, 2, 3, 4, 5, 6});  // 2 rows of 3
  std::vector<uint8_t> f16, bf16;
  for (float v : {1.5f, -2.0f, 0.0f, 65504.0f}) {
    put_half(f16, f32_to_f16(v));
    put_half(bf16, f32_to_bf16(v));
  }
  b.tensor("f16", {4}, 1, f16);
  b.tensor("bf16", {2, 2}, 30, bf16);
  std::vector<uint8_t> q8;
  put_half(q8, kHalf0_5);
  for (int j = 0; j < 32; ++j) q8.push_back(uint8_t(int8_t(j - 16)));
  b.tensor("q8", {32, 1}, 8, q8);
  std::vector<uint8_t> q4;
  put_half(q4, kHalf2);
  for (int j = 0; j < 16; ++j) q4.push_back(uint8_t(j | ((15 - j) << 4)));
  b.tensor("q4_0", {32}, 2, q4);
  std::vector<uint8_t> q41;
  put_half(q41, kHalf0_25);
  put_half(q41, kHalfMinus1);
  for (int j = 0; j < 16; ++j) q41.push_back(uint8_t(j | ((15 - j) << 4)));
  b.tensor("q4_1", {32}, 3, q41);
  return b;
}

void check_file(const GgufFile& g, uint32_t version) {
  EXPECT_EQ(g.version(), version);
  EXPECT_EQ(g.get("test.u32").as_int("x"), 7);
  EXPECT_EQ(g.get("test.i32").as_int("x"), -3);
  EXPECT_EQ(g.get("test.f32").as_float("x"), 0.25);
  EXPECT_EQ(g.get("test.u64").as_int("x"), int64_t(1) << 40);
  EXPECT_TRUE(g.get("test.bool").as_bool("x"));
  const auto& strs = g.get("test.strs").as_array("x");
  ASSERT_EQ(strs.size(), 3u);
  EXPECT_EQ(strs[1].as_string("x"), "bc");
  EXPECT_EQ(strs[2].as_string("x"), "");
  EXPECT_EQ(g.get("test.ints").as_array("x")[1].as_int("x"), -2);

  const Tensor f = g.load("f32");
  EXPECT_EQ(f.shape(), (Shape{2, 3}));
  EXPECT_EQ(f.data<float>()[5], 6.0f);
  const Tensor h = g.load("f16");
  EXPECT_EQ(h.dtype(), DType::F32);
  EXPECT_EQ(h.data<float>()[0], 1.5f);
  EXPECT_EQ(h.data<float>()[3], 65504.0f);
  const Tensor hk = g.load("f16", /*keep_float_dtype=*/true);
  EXPECT_EQ(hk.dtype(), DType::F16);
  const Tensor bk = g.load("bf16", true);
  EXPECT_EQ(bk.dtype(), DType::BF16);
  EXPECT_EQ(bk.shape(), (Shape{2, 2}));
  EXPECT_EQ(bf16_to_f32(bk.data<uint16_t>()[1]), -2.0f);
  const Tensor q8 = g.load("q8", true);  // quantized: always f32
  EXPECT_EQ(q8.dtype(), DType::F32);
  EXPECT_EQ(q8.shape(), (Shape{1, 32}));
  EXPECT_EQ(q8.data<float>()[31], 7.5f);
  EXPECT_EQ(g.load("q4_0").data<float>()[16], 14.0f);
  EXPECT_EQ(g.load("q4_1").data<float>()[15], 2.75f);
  expect_error([&] { g.load("missing"); }, {"missing", g.path()});
}

TEST(Gguf, HandWrittenFilesOfEveryVersion) {
  TempDir dir;
  for (uint32_t version : {1u, 2u, 3u}) {
    SCOPED_TRACE("version " + std::to_string(version));
    const std::string path = dir.file("v" + std::to_string(version) + ".gguf");
    make_file(version).write(path);
    check_file(GgufFile::open(path), version);
  }
  // A non-default alignment moves the data section and the offsets.
  const std::string path = dir.file("a64.gguf");
  make_file(3, 64).write(path);
  check_file(GgufFile::open(path), 3);
}

TEST(Gguf, EveryTruncationIsAnError) {
  TempDir dir;
  const auto bytes = make_file(3).bytes();
  const std::string path = dir.file("t.gguf");
  for (size_t n = 0; n < bytes.size(); ++n) {
    test::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    try {
      GgufFile::open(path);
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  // Cut inside the last tensor's data: the message names it.
  test::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end() - 3));
  expect_error([&] { GgufFile::open(path); }, {"[gguf]", path, "truncated", "tensor q4_1"});
}

TEST(Gguf, CorruptHeadersAreErrors) {
  TempDir dir;
  const std::string path = dir.file("c.gguf");
  auto bytes = make_file(3).bytes();

  auto bad_magic = bytes;
  bad_magic[0] = 'X';
  test::write_bytes(path, bad_magic);
  expect_error([&] { GgufFile::open(path); }, {path, "not a GGUF file"});

  auto bad_version = bytes;
  bad_version[4] = 9;
  test::write_bytes(path, bad_version);
  expect_error([&] { GgufFile::open(path); }, {path, "version", "got 9"});

  // A huge tensor count cannot fit in the file.
  auto huge = bytes;
  const uint64_t n = 1ull << 50;
  std::memcpy(huge.data() + 8, &n, 8);
  test::write_bytes(path, huge);
  expect_error([&] { GgufFile::open(path); }, {path, "cannot fit"});

  // Unknown metadata value type.
  test::GgufBuilder b(3);
  b.kv_u32("x", 1);
  auto vt = b.bytes();
  // magic 4 + version 4 + counts 16 + key length 8 + "x" 1 = offset 33 of the value type.
  vt[33] = 77;
  test::write_bytes(path, vt);
  expect_error([&] { GgufFile::open(path); }, {path, "metadata x", "unknown value type 77"});
}

TEST(Gguf, BadTensorsAreErrors) {
  TempDir dir;
  const std::string path = dir.file("bt.gguf");
  {
    test::GgufBuilder b(3);
    b.tensor("weird", {32}, 99, std::vector<uint8_t>(32));
    b.write(path);
    expect_error([&] { GgufFile::open(path); }, {path, "tensor weird", "unknown GGML type 99"});
  }
  {
    test::GgufBuilder b(3);
    b.tensor("q", {33}, 8, std::vector<uint8_t>(68));
    b.write(path);
    expect_error([&] { GgufFile::open(path); }, {path, "tensor q", "multiple of the block size 32"});
  }
  {
    test::GgufBuilder b(3);
    b.tensor("iq2", {256}, 16, std::vector<uint8_t>(66));  // a valid IQ2_XXS block: parses, but
    b.write(path);                                         // we cannot dequantize it
    const GgufFile g = GgufFile::open(path);
    EXPECT_EQ(g.tensors()[0].nbytes, 66u);
    expect_error([&] { g.load("iq2"); }, {path, "tensor iq2", "IQ2_XXS", "supported"});
  }
  {
    // Two tensors at the same offset: patch the second's offset to 0.
    test::GgufBuilder b(3);
    b.tensor_f32("a", {8}, std::vector<float>(8));
    b.tensor_f32("b", {8}, std::vector<float>(8));
    auto bytes = b.bytes();
    // Tensor info of "b": ... name "b", n_dims, dim, type, offset (u64, last 8 bytes before padding).
    const std::string needle = std::string("\x01\x00\x00\x00\x00\x00\x00\x00" "b", 9);
    auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
    ASSERT_NE(it, bytes.end());
    const size_t off_pos = size_t(it - bytes.begin()) + 9 + 4 + 8 + 4;
    std::memset(bytes.data() + off_pos, 0, 8);
    test::write_bytes(path, bytes);
    expect_error([&] { GgufFile::open(path); }, {path, "a", "b", "overlap"});
    // And an offset that is not a multiple of the alignment.
    bytes[off_pos] = 4;
    test::write_bytes(path, bytes);
    expect_error([&] { GgufFile::open(path); }, {path, "tensor b", "alignment"});
  }
  {
    test::GgufBuilder b(3);
    b.tensor_f32("dup", {4}, std::vector<float>(4));
    b.tensor_f32("dup", {4}, std::vector<float>(4));
    b.write(path);
    expect_error([&] { GgufFile::open(path); }, {path, "duplicate tensor dup"});
  }
}

// encode_ggml_tensor converts a chunk at a time (to bound the export's memory); it must give the
// bytes of a whole-tensor conversion, across chunk boundaries, from every source dtype.
TEST(GgufWriter, ChunkedEncodingEqualsWholeTensorConversion) {
  const Shape shape = {3, 35008};  // 105024 values: one and a half chunks; rows a multiple of 32
  std::vector<float> v(size_t(shape_numel(shape)));
  uint64_t state = 7;
  for (float& x : v) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = float(int64_t(state >> 40) - (1 << 23)) / float(1 << 21);
  }
  const Tensor f32 = Tensor::from_vector(v, shape);
  for (DType source : {DType::F32, DType::BF16, DType::F16}) {
    const Tensor t = f32.to(source);
    const Tensor wide = t.to(DType::F32);
    for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0}) {
      SCOPED_TRACE(std::string(dtype_name(source)) + " -> type " + std::to_string(int(type)));
      std::vector<uint8_t> expected;
      if (type == GgmlType::Q8_0) {
        expected.resize(size_t(wide.numel() / 32 * 34));
        quantize_q8_0(wide.data<float>(), wide.numel(), expected.data());
      } else {
        const Tensor h = t.to(type == GgmlType::F32 ? DType::F32 : type == GgmlType::F16 ? DType::F16 : DType::BF16);
        expected.assign(static_cast<const uint8_t*>(h.raw()), static_cast<const uint8_t*>(h.raw()) + h.nbytes());
      }
      EXPECT_EQ(encode_ggml_tensor("t", t, type), expected);
    }
  }
}

}  // namespace
}  // namespace qlora
