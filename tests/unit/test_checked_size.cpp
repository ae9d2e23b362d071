// The overflow-checked size helper (core/checked_size.h) and the readers that size tensors with
// it: crafted headers whose byte counts wrap around 2^64 (and so used to pass the "size matches"
// checks and map tensors past the end of the file) are errors naming the file and tensor.
// (config.json's bounds and parameter_count are tested in test_config.cpp.)
#include <gtest/gtest.h>

#include <cstring>

#include "core/checked_size.h"
#include "io/gguf.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace qlora {
namespace {

using test::expect_error;

TEST(CheckedSize, ProductsAndSumsUpToInt64Max) {
  EXPECT_EQ(checked_mul(3, 5, "t", "x"), 15u);
  EXPECT_EQ(checked_add(kMaxCheckedSize - 1, 1, "t", "x"), kMaxCheckedSize);
  EXPECT_EQ(checked_product({}, "t", "x"), 1u);
  EXPECT_EQ(checked_product({2, 0, 7}, "t", "x"), 0u);
  EXPECT_EQ(checked_product({uint64_t(1) << 31, uint64_t(1) << 31}, "t", "x"), uint64_t(1) << 62);
  EXPECT_EQ(checked_sum({}, "t", "x"), 0u);
  EXPECT_EQ(checked_sum({1, 2, kMaxCheckedSize - 3}, "t", "x"), kMaxCheckedSize);
  expect_error([] { checked_sum({kMaxCheckedSize, 1, 0}, "io", "w"); }, {"[io] w", "overflows"});
  expect_error([] { checked_mul(uint64_t(1) << 62, 2, "io", "f.bin: tensor w"); },
               {"[io] f.bin: tensor w", "4611686018427387904 x 2 overflows"});
  expect_error([] { checked_mul(uint64_t(1) << 32, uint64_t(1) << 32, "io", "w"); }, {"overflows"});  // wraps to 0
  expect_error([] { checked_add(kMaxCheckedSize, 1, "io", "w"); }, {"[io] w", "+ 1 overflows"});
  expect_error([] { checked_add(~uint64_t(0), 2, "io", "w"); }, {"overflows"});  // wraps to 1
  // A zero factor does not excuse a factor that cannot be a dimension.
  expect_error([] { checked_product({0, ~uint64_t(0)}, "io", "w"); }, {"[io] w", "exceeds"});
}

// write "8-byte length, JSON header, data" as a safetensors file.
std::string write_safetensors_raw(const test::TempDir& dir, const std::string& header, size_t data_bytes) {
  test::Bytes b;
  b.put(uint64_t(header.size()));
  b.put_raw(header.data(), header.size());
  b.b.resize(b.b.size() + data_bytes);
  const std::string path = dir.file("x.safetensors");
  test::write_bytes(path, b.b);
  return path;
}

TEST(CheckedSize, SafetensorsShapeWhoseByteSizeWraps) {
  test::TempDir dir;
  // 2^61 f64 values are 2^64 bytes, which wraps to 0 and used to match data_offsets [0, 0].
  const std::string path =
      write_safetensors_raw(dir, R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {"[safetensors]", path, "tensor w", "overflows"});
  // And an element count that wraps by itself: (2^32)^2 = 2^64.
  const std::string p2 = write_safetensors_raw(
      dir, R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0);
  expect_error([&] { SafetensorsFile::open(p2); }, {"[safetensors]", p2, "tensor w", "overflows"});
}

TEST(CheckedSize, GgufTensorWhoseByteSizeWraps) {
  test::TempDir dir;
  const std::string path = dir.file("wrap.gguf");
  // F32 (type 0) of 2^31 x 2^31 = 2^62 elements: 2^64 bytes, which wrapped to 0 and so "fit".
  test::GgufBuilder b(3);
  b.tensor("w", {uint64_t(1) << 31, uint64_t(1) << 31}, 0, {});
  b.write(path);
  expect_error([&] { GgufFile::open(path); }, {"[gguf]", path, "tensor w", "overflows"});
}

TEST(CheckedSize, GgufArrayLongerThanTheFileCanHold) {
  test::TempDir dir;
  const std::string path = dir.file("array.gguf");
  test::GgufBuilder b(3);
  b.kv_i32_array("a", {1, 2, 3, 4});
  auto bytes = b.bytes();
  // The array's element count follows key "a" and the types: 4 + 4 + 16 + 8 + 1 + 4 + 4 = 41.
  // 2^62 i32 elements are 2^64 bytes; 40 i32 elements need 160 bytes where 47 remain (16 of
  // data, then padding), which the old one-byte-per-element check let through.
  for (uint64_t n : {uint64_t(1) << 62, uint64_t(40)}) {
    std::memcpy(bytes.data() + 41, &n, 8);
    test::write_bytes(path, bytes);
    expect_error([&] { GgufFile::open(path); }, {"[gguf]", path, "metadata a", "array elements"});
  }
}

TEST(CheckedSize, Llama2cHeaderWhoseFloatCountOverflows) {
  test::TempDir dir;
  const std::string path = dir.file("big.bin");
  // dim = hidden_dim = n_layers = 2^24: L*C*C = 2^72 floats (was signed int64 overflow).
  const int32_t big = 1 << 24;
  const int32_t header[7] = {big, big, big, 1 << 12, 1 << 12, 32000, 256};
  test::Bytes b;
  b.put_raw(header, sizeof header);
  test::write_bytes(path, b.b);
  expect_error([&] { Llama2cCheckpoint::open(path); }, {"[llama2c]", path, "overflows"});
}

}  // namespace
}  // namespace qlora
