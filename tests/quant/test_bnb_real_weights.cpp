// Byte for byte with bitsandbytes on the weights users train, and on its rounding boundaries.
// tests/quant/golden/bnb_real_weights.safetensors holds what bitsandbytes 0.50.2 on the CPU made of
// four SmolLM2-135M matrices (read here from models/, as transformers' GGUF loader gives them) and
// of near-tie inputs; bnb_cuda_thresholds.json the comparison constants of its shipped CUDA
// kernel, read from the binary. Regenerate with tests/quant/golden/make_bnb_real_weight_goldens.py.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model_source.h"
#include "quant/codebooks.h"
#include "quant/double_quant.h"
#include "quant/nf4.h"
#include "quant_test_util.h"
#include "test_paths.h"

namespace qlora {
namespace {

const char* kGolden = "tests/quant/golden/bnb_real_weights.safetensors";
const char* kCudaThresholds = "tests/quant/golden/bnb_cuda_thresholds.json";
const char* kModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::string fnv1a64(const void* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(h));
  return s;
}

template <typename T>
std::vector<T> values(const Tensor& t) {
  std::vector<T> v(size_t(t.numel()));
  std::memcpy(v.data(), t.raw(), t.nbytes());
  return v;
}

class BnbRealWeights : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = test::source_path(kGolden);
    ASSERT_TRUE(test::exists(path)) << path << " missing; run tests/quant/golden/make_bnb_real_weight_goldens.py";
    file_ = std::make_unique<SafetensorsFile>(SafetensorsFile::open(path));
    meta_ = nlohmann::json::parse(file_->metadata().at("json"));
  }

  // The input named in the golden: a real matrix's first rows from the GGUF, or a stored tie input.
  Tensor input(const std::string& name) {
    const Shape shape = meta_.at("shape." + name).get<Shape>();
    Tensor x;
    if (file_->contains("input." + name)) {
      x = file_->get("input." + name);
    } else {
      const Tensor full = source_->load(name).to(DType::F32);
      x = Tensor::zeros(shape, DType::F32);
      std::memcpy(x.raw(), full.raw(), x.nbytes());
    }
    EXPECT_EQ(fnv1a64(x.raw(), x.nbytes()), meta_.at("fnv1a64." + name).get<std::string>())
        << name << ": not the values the golden was made from";
    return x;
  }

  // Every byte of our CPU-rule quantization against bitsandbytes'; returns how many 4-bit codes and
  // 8-bit absmax codes the CUDA rule changes (printed, not asserted: the golden is CPU-made).
  std::pair<int64_t, int64_t> check_case(const std::string& key, const Tensor& x, QuantType type, int64_t block,
                                          bool dq) {
    SCOPED_TRACE(key);
    const QuantTensor q = quantize_4bit(x.data<float>(), x.shape(), type, block, dq, BnbRounding::Cpu);
    EXPECT_EQ(test::elements<uint8_t>(q.codes), values<uint8_t>(file_->get(key + ".packed")));
    if (dq) {
      EXPECT_EQ(test::elements<uint8_t>(q.absmax_codes), values<uint8_t>(file_->get(key + ".absmax_codes")));
      const auto nested = values<float>(file_->get(key + ".nested_absmax"));
      const auto ours = test::elements<float>(q.nested_absmax);
      EXPECT_EQ(ours.size(), nested.size());
      for (size_t i = 0; i < std::min(ours.size(), nested.size()); ++i) EXPECT_EQ(bits(ours[i]), bits(nested[i])) << i;
      EXPECT_EQ(bits(q.offset), bits(values<float>(file_->get(key + ".offset"))[0]));
    } else {
      const auto absmax = values<float>(file_->get(key + ".absmax"));
      const auto ours = test::elements<float>(q.absmax);
      EXPECT_EQ(ours.size(), absmax.size());
      for (size_t i = 0; i < std::min(ours.size(), absmax.size()); ++i) EXPECT_EQ(bits(ours[i]), bits(absmax[i])) << i;
    }
    const QuantTensor g = quantize_4bit(x.data<float>(), x.shape(), type, block, dq, BnbRounding::Cuda);
    int64_t codes = 0, absmax_codes = 0;
    const auto a = test::elements<uint8_t>(q.codes), b = test::elements<uint8_t>(g.codes);
    for (size_t i = 0; i < a.size(); ++i) codes += ((a[i] >> 4) != (b[i] >> 4)) + ((a[i] & 15) != (b[i] & 15));
    if (dq) {
      const auto c = test::elements<uint8_t>(q.absmax_codes), d = test::elements<uint8_t>(g.absmax_codes);
      for (size_t i = 0; i < c.size(); ++i) absmax_codes += c[i] != d[i];
    }
    return {codes, absmax_codes};
  }

  std::unique_ptr<SafetensorsFile> file_;
  nlohmann::json meta_;
  std::unique_ptr<ModelSource> source_;
};

QuantType type_of(const std::string& key) {
  return key.find(".fp4.") != std::string::npos ? QuantType::FP4 : QuantType::NF4;
}

// Our CUDA-rule thresholds are the ones the shipped CUDA kernel compares with (sm_90 code of
// libbitsandbytes_cuda*.so, read by the generator), bit for bit, and FP4's are compared with |v|.
// The same listing shows the kernel's 1 / absmax is MUFU.RCP, the hardware's approximate
// reciprocal: the one step a CPU cannot reproduce bit for bit (see docs/quantization.md).
TEST(BnbCudaKernel, ThresholdsAreTheShippedKernels) {
  std::ifstream in(test::source_path(kCudaThresholds));
  ASSERT_TRUE(in) << kCudaThresholds << " missing";
  const nlohmann::json j = nlohmann::json::parse(in);
  for (QuantType type : {QuantType::NF4, QuantType::FP4}) {
    const std::string name(quant_type_name(type));
    SCOPED_TRACE(name);
    const KernelCode4& k = kernel_code_4bit(type);
    const auto& hex = j.at(name).at("thresholds_f32_hex");
    EXPECT_EQ(j.at(name).at("compares_magnitude").get<bool>(), k.sign_magnitude);
    std::vector<uint32_t> ours;
    if (k.sign_magnitude)
      for (float t : k.magnitude.bounds) ours.push_back(bits(t));
    else
      for (float t : k.bounds.bounds) ours.push_back(bits(t));
    ASSERT_EQ(ours.size(), hex.size());
    for (size_t i = 0; i < ours.size(); ++i)
      EXPECT_EQ(ours[i], uint32_t(std::stoul(hex[i].get<std::string>(), nullptr, 16))) << "threshold " << i;
    EXPECT_TRUE(j.at(name).at("reciprocal_is_mufu_rcp").get<bool>());
  }
}

TEST_F(BnbRealWeights, SmolLM2MatricesByteForByte) {
  const std::string model = test::source_path(kModel);
  if (!test::exists(model)) GTEST_SKIP() << model << " missing; run scripts/fetch_models.sh";
  source_ = std::make_unique<ModelSource>(ModelSource::open(model));
  int checked = 0;
  for (const auto& key_json : meta_.at("cases")) {
    const std::string key = key_json.get<std::string>();
    if (key.rfind("tie4.", 0) == 0) continue;
    // "<tensor name>.<type>.b<block>.<dq|nodq>"
    const size_t dq_at = key.rfind('.'), block_at = key.rfind('.', dq_at - 1), type_at = key.rfind('.', block_at - 1);
    const std::string name = key.substr(0, type_at);
    const int64_t block = std::stoll(key.substr(block_at + 2, dq_at - block_at - 2));
    const Tensor x = input(name);
    const auto [codes, absmax_codes] = check_case(key, x, type_of(key), block, key.substr(dq_at + 1) == "dq");
    std::printf("[bnb real] %s: byte-exact with bnb-CPU; the CUDA rule moves %lld of %lld codes, %lld absmax codes\n",
                key.c_str(), (long long)codes, (long long)x.numel(), (long long)absmax_codes);
    ++checked;
  }
  EXPECT_EQ(checked, 32);  // 4 matrices x NF4/FP4 x blocks 64/128 x with/without double quant
}

TEST_F(BnbRealWeights, NearTiesByteForByte) {
  int checked = 0;
  for (const auto& key_json : meta_.at("cases")) {
    const std::string key = key_json.get<std::string>();
    if (key.rfind("tie4.", 0) != 0) continue;
    const QuantType type = type_of(key);
    const std::string name = "tie4." + std::string(quant_type_name(type));
    const size_t dq_at = key.rfind('.'), block_at = key.rfind('.', dq_at - 1);
    const int64_t block = std::stoll(key.substr(block_at + 2, dq_at - block_at - 2));
    const auto [codes, absmax_codes] = check_case(key, input(name), type, block, key.substr(dq_at + 1) == "dq");
    std::printf("[bnb ties] %s: byte-exact with bnb-CPU; the CUDA rule moves %lld codes, %lld absmax codes\n",
                key.c_str(), (long long)codes, (long long)absmax_codes);
    ++checked;
  }
  EXPECT_EQ(checked, 8);

  // 8-bit: values on the dynamic map's midpoints and the CPU table's cell edges, 1 ulp either side.
  const Tensor x = file_->get("input.tie8");
  const int64_t n = x.numel();
  std::vector<uint8_t> codes(static_cast<size_t>(n)), cuda(static_cast<size_t>(n));
  std::vector<float> absmax(size_t((n + 255) / 256)), absmax_cuda(absmax.size());
  quantize_blockwise_8bit(x.data<float>(), n, 256, codes.data(), absmax.data(), BnbRounding::Cpu);
  EXPECT_EQ(codes, values<uint8_t>(file_->get("tie8.codes")));
  EXPECT_EQ(absmax, values<float>(file_->get("tie8.absmax")));
  quantize_blockwise_8bit(x.data<float>(), n, 256, cuda.data(), absmax_cuda.data(), BnbRounding::Cuda);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += codes[size_t(i)] != cuda[size_t(i)];
  std::printf("[bnb ties] 8-bit: %lld values byte-exact with bnb-CPU; the CUDA rule moves %lld\n", (long long)n,
              (long long)differ);
  EXPECT_GT(differ, 0);  // the two rules do disagree on these inputs
}

}  // namespace
}  // namespace qlora
