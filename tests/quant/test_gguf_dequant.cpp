// GGML dequantization (io/ggml_dequant.h) against gguf-py's dequantize, bit for bit, for every type
// the loader takes from hub GGUF files beyond Q4_0/Q4_1: Q5_0, Q5_1, Q8_0 and the k-quants Q2_K,
// Q3_K, Q4_K, Q5_K, Q6_K. Fixture: golden/gguf_dequant.gguf (make_gguf_dequant_golden.py). Exact
// equality holds on any x86-64 machine: each value is one or two IEEE f32 multiplies and a
// subtraction or addition, in gguf-py's order, compiled without fma contraction.
#include <gtest/gtest.h>

#include <bit>

#include "io/ggml_dequant.h"
#include "io/gguf.h"
#include "test_paths.h"

namespace qlora {
namespace {

const char* kTypes[] = {"Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};

TEST(GgufDequantGolden, EveryTypeEqualsGgufPyBitForBit) {
  const GgufFile file = GgufFile::open(test::source_path("tests/quant/golden/gguf_dequant.gguf"));
  for (const char* name : kTypes) {
    SCOPED_TRACE(name);
    const GgufTensorInfo* info = file.find_tensor(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(ggml_type_name(info->type), name);
    ASSERT_TRUE(ggml_type_dequantizable(info->type));
    const Tensor got = file.load(name);  // the reader's path: dequantize_ggml on the mapped bytes
    const Tensor want = file.load(std::string(name) + ".expected");
    ASSERT_EQ(got.shape(), want.shape());
    const float* g = got.data<float>();
    const float* w = want.data<float>();
    int64_t mismatches = 0, nonzero = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      nonzero += w[i] != 0.0f;
      if (std::bit_cast<uint32_t>(g[i]) != std::bit_cast<uint32_t>(w[i]) && mismatches++ < 5)
        ADD_FAILURE() << "value " << i << ": " << g[i] << " vs gguf-py " << w[i];
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(nonzero, got.numel() / 2) << "fixture is mostly zeros: it would prove little";
  }
}

}  // namespace
}  // namespace qlora
