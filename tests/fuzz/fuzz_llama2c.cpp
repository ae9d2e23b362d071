// Fuzz target: a llama2.c checkpoint (7-int header, exact size), every tensor view read, then
// the same file through the model loader's llama2.c source (config, per-layer slices).
#include "core/error.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "io/llama2c.h"
#include "model/model_source.h"

namespace qlora::fuzz {

void run_llama2c(const uint8_t* data, size_t size) {
  try {
    const std::string path = write_input("x.bin", as_text(data, size));
    const Llama2cCheckpoint ck = Llama2cCheckpoint::open(path);
    for (const Tensor* t : {&ck.token_embedding, &ck.rms_att, &ck.wq, &ck.wk, &ck.wv, &ck.wo, &ck.rms_ffn, &ck.w1,
                            &ck.w2, &ck.w3, &ck.rms_final, &ck.freq_cos, &ck.freq_sin, &ck.wcls})
      touch(*t);
    const ModelSource src = ModelSource::open(path);
    (void)src.config().parameter_count();
    for (const std::string& name : src.tensor_names()) touch(src.load(name));
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
