// A model whose decoder linears are held in 4 bits (LlamaModel with ForwardOptions::quantize):
// its logits equal those of the same model with every linear replaced by dequantize(quantize(W))
// (the fused dequant-matmul is exact up to summation order), and on the real stories260K the
// perplexity ordering the QLoRA paper reports holds: NF4 < INT4 (absmax) and NF4 < FP4 at equal bits.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/loader.h"
#include "model/perplexity.h"
#include "quant/nf4.h"
#include "test_paths.h"

using namespace qlora;

namespace {

const std::string kModel = "tests/golden/fixtures/stories260k-hf";
// Both sides multiply the same f32 dequantized values; only sgemm blocking vs the tile loop's
// order differs (logits up to |21|, 5 layers): same bound as the fp32 golden tests.
constexpr float kTol = 1e-4f;

ForwardOptions quantized(QuantType type, bool double_quant) {
  ForwardOptions o;
  o.quantize.enabled = true;
  o.quantize.type = type;
  o.quantize.double_quant = double_quant;
  return o;
}

}  // namespace

TEST(QuantizedModel, LogitsEqualDequantizedDenseModel) {
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 425, 395, 286, 267, 300, 270, 341};
  for (QuantType type : {QuantType::NF4, QuantType::FP4, QuantType::INT4}) {
    for (bool dq : {false, true}) {
      SCOPED_TRACE(std::string(quant_type_name(type)) + (dq ? " double-quant" : ""));
      LlamaModelFile reference = load_model(test::source_path(kModel));
      for (auto& l : reference.weights.layers)
        for (Tensor* w : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj})
          *w = dequantize_4bit(quantize_4bit(*w, type, 64, dq));
      const Tensor expected = LlamaModel(std::move(reference)).forward_sequence(ids);
      const Tensor got = LlamaModel(load_model(test::source_path(kModel)), quantized(type, dq)).forward_sequence(ids);
      ASSERT_EQ(got.shape(), expected.shape());
      float max_err = 0;
      for (int64_t i = 0; i < got.numel(); ++i)
        max_err = std::max(max_err, std::abs(got.data<float>()[i] - expected.data<float>()[i]));
      EXPECT_LT(max_err, kTol);
    }
  }
}

TEST(QuantizedModel, Nf4BeatsFp4AndInt4OnStories260K) {
  const std::string model_path = test::shared_path("models/stories260K/stories260K.bin");
  if (!test::exists(model_path)) GTEST_SKIP() << "no " << model_path;
  std::ifstream in(test::source_path("examples/data/tiny_stories_sample.txt"));
  std::stringstream text;
  text << in.rdbuf();
  const auto tokenizer = find_tokenizer_for_model(model_path);
  const std::vector<int32_t> tokens = tokenizer->encode(text.str(), true);
  auto ppl = [&](std::optional<QuantType> type) {
    ForwardOptions o = type ? quantized(*type, false) : ForwardOptions{};
    return evaluate_perplexity(LlamaModel(load_model(model_path), o), tokens, 512).perplexity;
  };
  const double base = ppl(std::nullopt), nf4 = ppl(QuantType::NF4), fp4 = ppl(QuantType::FP4),
               int4 = ppl(QuantType::INT4);
  std::printf("[ perplexity ] f32 %.4f  nf4 %.4f  int4 %.4f  fp4 %.4f\n", base, nf4, int4, fp4);
  EXPECT_LT(base, nf4);  // quantization costs something
  EXPECT_LT(nf4, int4);
  EXPECT_LT(nf4, fp4);
}
