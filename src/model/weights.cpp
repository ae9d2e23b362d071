// LlamaLayerWeights' projections by index (core/projections.h order). Tested through the loaders
// and exporters (tests/unit/test_loader.cpp, test_merge_export.cpp).
#include "model/weights.h"

#include "core/error.h"

namespace qlora {

const Tensor& LlamaLayerWeights::projection(int index) const {
  switch (index) {
    case kProjQ: return q_proj;
    case kProjK: return k_proj;
    case kProjV: return v_proj;
    case kProjO: return o_proj;
    case kProjGate: return gate_proj;
    case kProjUp: return up_proj;
    case kProjDown: return down_proj;
  }
  fail("model", "projection index {} out of range [0, {})", index, int(kProjCount));
}

Tensor& LlamaLayerWeights::projection(int index) {
  return const_cast<Tensor&>(static_cast<const LlamaLayerWeights&>(*this).projection(index));
}

const Tensor* LlamaLayerWeights::bias(int index) const {
  switch (index) {
    case kProjQ: return &q_bias;
    case kProjK: return &k_bias;
    case kProjV: return &v_bias;
    default: return nullptr;
  }
}

Tensor* LlamaLayerWeights::bias(int index) {
  return const_cast<Tensor*>(static_cast<const LlamaLayerWeights&>(*this).bias(index));
}

}  // namespace qlora
