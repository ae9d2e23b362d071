// The backend seam holds: with CheckedBackend (checked_backend.h), whose memory the host cannot
// read outside backend calls and whose every argument must be device memory, the engine trains
// (LoRA with dropout, biases and checkpointing on a paged optimizer; QLoRA with 8-bit AdamW;
// full fine-tuning in bf16 with a tied head; f64), checkpoints and resumes, exports adapters and
// merged weights, and runs inference with a KV cache and a PEFT adapter — and every loss, gradient
// norm, parameter and logit equals the plain CPU backend's bit for bit (the same kernels run).
// Counts of kernel calls per step are checked against the block structure, and the guards are
// shown to bite: a host pointer is refused by name, a host read of device memory dies.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "checked_backend.h"
#include "io/peft_adapter.h"
#include "io_test_util.h"
#include "train/adapter_export.h"
#include "train/model_export.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace qlora {
namespace {

using test::CheckedBackend;

struct Run {
  std::vector<double> losses, norms;
  std::vector<std::vector<uint8_t>> params;  // bytes of every param after training
};

std::vector<uint8_t> host_bytes(Backend& be, const Tensor& t) {
  const Tensor h = be.to_host(t);
  const auto* p = static_cast<const uint8_t*>(h.raw());
  return std::vector<uint8_t>(p, p + h.nbytes());
}

ModelOptions lora_options(TrainMethod method, std::shared_ptr<Backend> backend) {
  ModelOptions o;
  o.method = method;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.lora_dropout = method == TrainMethod::Lora ? 0.1 : 0.0;
  o.lora.seed = 3;
  o.backend = std::move(backend);
  return o;
}

Run train(const std::string& fixture, ModelOptions options, TrainerConfig config, const std::string& out_dir = "") {
  TrainModel model(test::load_fixture(fixture), options);
  config.output_dir = out_dir;
  Trainer trainer(model, test::random_sequences(9, model.config().vocab_size, 8, 12), {}, config);
  Run r;
  for (int s = 0; s < 3; ++s) {
    const StepResult step = trainer.step();
    r.losses.push_back(step.loss);
    r.norms.push_back(step.grad_norm);
  }
  if (!out_dir.empty()) {
    const std::string dir = trainer.save_checkpoint();
    TrainModel again(test::load_fixture(fixture), options);
    Trainer resumed(again, test::random_sequences(9, model.config().vocab_size, 8, 12), {}, config);
    resumed.resume(dir);
    r.losses.push_back(resumed.step().loss);
    trainer.step();
    for (const Param& p : again.parameters()) r.params.push_back(host_bytes(again.backend(), p.value));
    return r;
  }
  for (const Param& p : model.parameters()) r.params.push_back(host_bytes(model.backend(), p.value));
  return r;
}

void expect_same(const Run& a, const Run& b) {
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.norms, b.norms);
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_EQ(a.params[i], b.params[i]) << "param " << i;
}

TEST(BackendSeam, DeviceMemoryIsOnlyReachableThroughTheBackend) {
  auto be = std::make_shared<CheckedBackend>();
  Tensor t = be->zeros({16}, DType::F32);
  EXPECT_EQ(t.device().kind, DeviceKind::Emulated);
  EXPECT_FALSE(t.on_host());
  // A host read of device memory outside a backend call faults.
  EXPECT_DEATH({ volatile float v = t.data<float>()[3]; (void)v; }, "");
  // A host pointer handed to a kernel is refused, naming the op and the argument.
  std::vector<float> host(16);
  test::expect_error([&] { be->add_inplace(t.data<float>(), host.data(), 16); }, {"[checked] add_inplace", "argument 2"});
  test::expect_error([&] { be->matmul_xwt(t.data<float>(), Tensor::zeros({4, 4}), t.data<float>(), 4); },
                     {"[checked] matmul_xwt", "not on emulated:0"});
  // Through the backend, the same memory is ordinary memory.
  be->upload(t, std::vector<float>(16, 2.5f).data());
  EXPECT_EQ(be->to_host(t).data<float>()[3], 2.5f);
}

TEST(BackendSeam, LoraTrainingCheckpointAndResumeMatchTheCpuBackend) {
  TrainerConfig c;
  c.micro_batch = 2, c.grad_accum = 2, c.lr = 1e-2, c.seed = 5, c.paged = true;
  ModelOptions cpu = lora_options(TrainMethod::Lora, make_cpu_backend()), checked = cpu;
  checked.backend = std::make_shared<CheckedBackend>();
  cpu.checkpoint_every = checked.checkpoint_every = 2;
  test::TempDir a, b;
  expect_same(train("qwen2", cpu, c, a.path()), train("qwen2", checked, c, b.path()));
}

TEST(BackendSeam, QloraWith8bitAdamWMatchesTheCpuBackend) {
  TrainerConfig c;
  c.micro_batch = 2, c.lr = 1e-2, c.seed = 6, c.optimizer = OptimizerKind::AdamW8bit;
  ModelOptions cpu = lora_options(TrainMethod::Qlora, make_cpu_backend()), checked = cpu;
  checked.backend = std::make_shared<CheckedBackend>();
  expect_same(train("llama-gqa", cpu, c), train("llama-gqa", checked, c));
}

TEST(BackendSeam, FullBf16TiedMatchesTheCpuBackend) {
  TrainerConfig c;
  c.micro_batch = 2, c.lr = 1e-3, c.seed = 7;
  c.adamw.weight_decay = 0.01;
  ModelOptions cpu = lora_options(TrainMethod::Full, make_cpu_backend());
  cpu.compute = DType::BF16;
  ModelOptions checked = cpu;
  checked.backend = std::make_shared<CheckedBackend>();
  expect_same(train("llama-tied", cpu, c), train("llama-tied", checked, c));
  // The fine-tuned weights come back to the host as an HF model.
  TrainModel model(test::load_fixture("llama-tied"), checked);
  const LlamaModelFile out = model_file_from_params(model, LlamaModelFile{});
  EXPECT_TRUE(out.weights.embed_tokens.on_host());
}

TEST(BackendSeam, F64GradientsMatchTheCpuBackend) {
  ModelOptions cpu = lora_options(TrainMethod::Qlora, make_cpu_backend());
  cpu.compute = DType::F64;
  ModelOptions checked = cpu;
  checked.backend = std::make_shared<CheckedBackend>();
  TrainModel m1(test::load_fixture("llama-gqa"), cpu), m2(test::load_fixture("llama-gqa"), checked);
  test::randomize_lora_b(m1, 4, 0.1);
  // randomize_lora_b writes host memory: set the checked model's B through the backend instead.
  std::vector<Param> p1 = m1.parameters(), p2 = m2.parameters();
  for (size_t i = 0; i < p1.size(); ++i) m2.backend().upload(p2[i].value, p1[i].value.raw());
  const Batch batch = make_batch(test::random_sequences(2, m1.config().vocab_size, 2, 10), 0, 2);
  EXPECT_EQ(m1.forward_backward(batch, 0.5, 1).loss, m2.forward_backward(batch, 0.5, 1).loss);
  for (size_t i = 0; i < p1.size(); ++i)
    EXPECT_EQ(host_bytes(m1.backend(), p1[i].grad), host_bytes(m2.backend(), p2[i].grad)) << p1[i].name;
}

// One QLoRA forward + backward without checkpointing, counted: the block structure, nothing more.
TEST(BackendSeam, KernelCallsFollowTheBlocks) {
  auto be = std::make_shared<CheckedBackend>();
  TrainModel model(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Qlora, be));
  const int64_t L = model.config().num_hidden_layers;
  const Batch batch = make_batch(test::random_sequences(3, model.config().vocab_size, 2, 10), 0, 2);
  be->reset_counts();
  model.forward_backward(batch, 1.0, 1);
  EXPECT_EQ(be->calls("embedding_forward"), 1);
  EXPECT_EQ(be->calls("rmsnorm_forward"), 2 * L + 1);
  EXPECT_EQ(be->calls("rmsnorm_backward"), 2 * L + 1);
  EXPECT_EQ(be->calls("attention_forward"), L);
  EXPECT_EQ(be->calls("attention_backward"), L);
  EXPECT_EQ(be->calls("rope_forward"), 2 * L);
  EXPECT_EQ(be->calls("qmatmul_forward"), kProjCount * L);  // the 4-bit base, once per projection
  EXPECT_EQ(be->calls("qmatmul_dy_w_acc"), kProjCount * L);
  EXPECT_EQ(be->calls("matmul_xwt"), 0);                    // no dense decoder weight
  EXPECT_EQ(be->calls("cross_entropy_forward_backward"), 1);
  EXPECT_EQ(be->calls("gemm"), kProjCount * L * 2 + kProjCount * L * 4);  // LoRA: 2 forward, 4 backward
  // Evaluation runs no backward kernel.
  be->reset_counts();
  model.evaluate(batch);
  EXPECT_EQ(be->calls("attention_backward"), 0);
  EXPECT_EQ(be->calls("cross_entropy_forward"), 1);

  // One decode step of a dense f32 inference model: 17 kernels per layer (2 norms, 7 matmuls,
  // 2 ropes, 2 cache appends, attention, 2 residual adds, swiglu) plus embedding, final norm and
  // head. docs/architecture.md turns this count into the cost of virtual dispatch per token.
  ForwardOptions f;
  f.backend = be;
  LlamaModel infer(test::load_fixture("llama-gqa"), f);
  KvCache cache(infer.config(), 8);
  const std::vector<int32_t> ids = {3, 4, 5};
  infer.forward(cache, ids.data(), 2, false);
  be->reset_counts();
  infer.forward(cache, ids.data() + 2, 1, false);
  int64_t kernels = 0;
  for (const auto& [op, n] : be->calls())
    if (op != "allocate" && op != "deallocate" && op != "copy_from_host" && op != "copy_to_host") kernels += n;
  EXPECT_EQ(be->calls("matmul_xwt"), kProjCount * L + 1);
  EXPECT_EQ(be->calls("attention_forward"), L);
  EXPECT_EQ(be->calls("copy"), 2 * L);
  EXPECT_EQ(kernels, 17 * L + 3);
}

PeftAdapter random_adapter(const LlamaConfig& c, uint64_t seed) {
  Rng rng(seed);
  PeftAdapter a;
  a.config.r = 2, a.config.lora_alpha = 4;
  a.config.target_modules = {"q_proj", "v_proj", "down_proj"};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int p : {int(kProjQ), int(kProjV), int(kProjDown)}) {
      const auto [out, in] = c.projection_shape(p);
      const std::string key = "base_model.model.model.layers." + std::to_string(l) + "." + projection_path(p);
      Tensor A = Tensor::zeros({2, in}), B = Tensor::zeros({out, 2});
      for (int64_t i = 0; i < A.numel(); ++i) A.data<float>()[i] = 0.2f * (rng.uniform() - 0.5f);
      for (int64_t i = 0; i < B.numel(); ++i) B.data<float>()[i] = 0.2f * (rng.uniform() - 0.5f);
      a.tensors.emplace_back(key + ".lora_A.weight", A);
      a.tensors.emplace_back(key + ".lora_B.weight", B);
    }
  return a;
}

TEST(BackendSeam, InferenceWithKvCacheAndAdapterMatchesTheCpuBackend) {
  for (bool quantized : {false, true}) {
    SCOPED_TRACE(quantized ? "nf4 base, bf16" : "dense base, f32");
    ForwardOptions cpu;
    cpu.compute = quantized ? DType::BF16 : DType::F32;
    cpu.quantize.enabled = quantized;
    ForwardOptions checked = cpu;
    auto be = std::make_shared<CheckedBackend>();
    checked.backend = be;
    LlamaModel m1(test::load_fixture("qwen2"), cpu), m2(test::load_fixture("qwen2"), checked);
    const PeftAdapter adapter = random_adapter(m1.config(), 12);
    m1.set_adapter(adapter);
    m2.set_adapter(adapter);
    const std::vector<int32_t> ids = {1, 5, 9, 33, 70, 2, 101, 7};
    KvCache c1(m1.config(), 16), c2(m2.config(), 16);
    const Tensor a = m1.forward(c1, ids.data(), 5, true), b = m2.forward(c2, ids.data(), 5, true);
    ASSERT_EQ(a.numel(), b.numel());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
    for (int i = 5; i < 8; ++i) {
      const Tensor x = m1.forward(c1, &ids[size_t(i)], 1, false), y = m2.forward(c2, &ids[size_t(i)], 1, false);
      EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << "decode step " << i;
    }
    EXPECT_GT(be->calls("copy"), 0);  // keys and values appended to the device cache
  }
}

TEST(BackendSeam, AdapterExportAndMergeComeBackToTheHost) {
  ModelOptions cpu = lora_options(TrainMethod::Qlora, make_cpu_backend()), checked = cpu;
  checked.backend = std::make_shared<CheckedBackend>();
  TrainModel m1(test::load_fixture("llama-gqa"), cpu), m2(test::load_fixture("llama-gqa"), checked);
  const PeftAdapter a1 = peft_adapter_from_model(m1), a2 = peft_adapter_from_model(m2);
  ASSERT_EQ(a1.tensors.size(), a2.tensors.size());
  for (size_t i = 0; i < a1.tensors.size(); ++i)
    EXPECT_EQ(std::memcmp(a1.tensors[i].second.raw(), a2.tensors[i].second.raw(), a1.tensors[i].second.nbytes()), 0);
  const Tensor w1 = merged_weight(m1.backend(), *m1.layer_linears(1)[kProjUp]);
  const Tensor w2 = merged_weight(m2.backend(), *m2.layer_linears(1)[kProjUp]);
  EXPECT_TRUE(w2.on_host());
  EXPECT_EQ(std::memcmp(w1.raw(), w2.raw(), w1.nbytes()), 0);
}

}  // namespace
}  // namespace qlora
