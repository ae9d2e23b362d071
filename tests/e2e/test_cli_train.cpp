// `qlora train` end to end on the real stories260K model (../shared/models/stories260K) with the
// shipped GSM8K subset: outputs (adapter, metrics.jsonl, report.html, checkpoints, summary), the
// dry run, command-line overrides, resume equal to an uninterrupted run, Ctrl-C saving a
// checkpoint, bad configs rejected with the key's name before any output is written, and the
// memory budget (the settings it chooses, and the refusal of a run that will not fit). Crash
// safety: a write that fails (file size limit, as on a full disk) leaves the old config.yaml, a
// resume keeps one metrics line per step, ignores and removes temp folders of killed saves, falls
// back from a corrupt latest checkpoint, save_total_limit prunes, a diverged run stops with an
// error and writes no adapter, and sequence_len too short for any response names the key. Data
// parallel: 2 MPI ranks train what one process accumulating twice as much trains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <sstream>

#include "backend/cpu/cpu_backend.h"
#include "cli_runner.h"
#include "io/peft_adapter.h"
#include "model/model_source.h"
#include "train/memory_budget.h"
#include "test_paths.h"
#include "unit/io_test_util.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;

std::string model_path() { return test::shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"); }

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A small run: a config file written into `dir`, then `qlora train` with extra arguments.
struct TinyRun {
  test::TempDir dir;
  std::string config = dir.path() + "/train.yaml";
  std::string out = dir.path() + "/run";

  explicit TinyRun(const std::string& extra_yaml = "") {
    std::ofstream f(config);
    f << "base_model: " << model_path() << "\n"
      << "method: qlora\nlora_r: 4\nlora_alpha: 8\nlora_dropout: 0.1\n"
      << "datasets:\n  - path: " << test::source_path("examples/data/gsm8k_mini_train.jsonl")
      << "\n    type: alpaca\n    fields: instruction=question,output=answer\n"
      << "chat_template: chatml\nsequence_len: 128\nmax_examples: 40\nval_set_size: 8\n"
      << "micro_batch_size: 2\ngradient_accumulation_steps: 2\nmax_steps: 4\nlearning_rate: 1.0e-3\n"
      << "eval_steps: 2\nsave_steps: 2\nseed: 3\n"
      << "sample_prompts: [\"Tom has 3 apples. How many?\"]\nsample_max_tokens: 8\n"
      << "output_dir: " << out << "\n"
      << extra_yaml;
  }
  test::RunResult train(const std::string& args = "") { return test::run_cli("train " + config + " --quiet " + args); }
};

class CliTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::exists(model_path())) GTEST_SKIP() << "stories260K not found at " << model_path();
  }
};

TEST_F(CliTrain, WritesAdapterMetricsReportAndCheckpoints) {
  TinyRun run;
  const test::RunResult r = run.train();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("validation loss:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("before:"), std::string::npos) << r.out;
  EXPECT_TRUE(test::exists(run.out + "/adapter/adapter_config.json"));
  EXPECT_TRUE(test::exists(run.out + "/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(test::exists(run.out + "/checkpoint-2/trainer_state.json"));
  EXPECT_TRUE(test::exists(run.out + "/checkpoint-4/trainer_state.json"));
  const PeftAdapter adapter = read_peft_adapter(run.out + "/adapter");
  EXPECT_EQ(adapter.config.r, 4);
  EXPECT_EQ(adapter.tensors.size(), size_t(2 * 7 * 5));  // A and B for 7 projections in 5 layers

  // metrics.jsonl: one line per step, plus validation lines.
  std::ifstream metrics(run.out + "/metrics.jsonl");
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(metrics, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) {
      ++steps;
      EXPECT_TRUE(j.contains("lr") && j.contains("grad_norm") && j.contains("tokens_per_s") && j.contains("rss_mb"));
      EXPECT_FALSE(j.contains("aux_loss"));  // a dense model has no load-balancing loss
    }
    if (j.contains("val_loss")) ++evals;
  }
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(evals, 3);  // before, steps 2 and 4 (step 4 is the final one: not evaluated twice)

  const std::string html = read_file(run.out + "/report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("Learning rate"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, no scripts

  const nlohmann::json summary = nlohmann::json::parse(read_file(run.out + "/summary.json"));
  EXPECT_EQ(summary["steps"], 4);
  EXPECT_LT(summary["val_loss_after"].get<double>(), summary["val_loss_before"].get<double>());
}

// `mpiexec -n N --oversubscribe` as a command prefix for run_cli_env. CI runs as root, which
// OpenMPI refuses unless told; LeakSanitizer would report OpenMPI's allocations kept until exit.
std::string mpiexec(int ranks) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 mpiexec --oversubscribe -n " +
         std::to_string(ranks) + " ";
}
bool have_mpiexec() { return std::system("command -v mpiexec >/dev/null 2>&1") == 0; }

// Data parallel through the CLI: `mpiexec -n 2 qlora train CONFIG --distributed` with 2
// accumulation steps a rank trains the adapter one process trains with 4 (same global batch, same
// micro-batches, same dropout seeds; f32 sums in another order: the library's 2-rank test sees
// them bit-identical, 1e-5 = lr/100 leaves room for other MPI reduction orders), and rank 0 alone
// writes: one metrics line per step, one adapter. Resuming that run's step-2 checkpoint on 2 ranks,
// or in one process accumulating 4, ends at the same adapter.
TEST_F(CliTrain, DistributedTwoRanksEqualOneProcessAccumulatingTwice) {
  if (!have_mpiexec()) GTEST_SKIP() << "no mpiexec (openmpi-bin)";
  const std::string mpi = mpiexec(2);
  TinyRun dist("threads: 1\n");  // one thread a rank on this 2-core machine
  test::RunResult r = test::run_cli_env(mpi, "train " + dist.config + " --quiet --distributed");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  TinyRun single("threads: 1\n");
  r = single.train("--gradient_accumulation_steps 4");
  ASSERT_EQ(r.exit_code, 0) << r.out;

  auto max_diff = [](const PeftAdapter& a, const PeftAdapter& b) {
    EXPECT_EQ(a.tensors.size(), b.tensors.size());
    double worst = 0;
    for (size_t i = 0; i < std::min(a.tensors.size(), b.tensors.size()); ++i)
      for (int64_t j = 0; j < a.tensors[i].second.numel(); ++j)
        worst = std::max(worst, double(std::abs(a.tensors[i].second.data<float>()[j] - b.tensors[i].second.data<float>()[j])));
    return worst;
  };
  const PeftAdapter want = read_peft_adapter(single.out + "/adapter");
  const double diff = max_diff(read_peft_adapter(dist.out + "/adapter"), want);
  std::printf("2 ranks vs 1 process: adapter max |diff| %.3g\n", diff);
  EXPECT_LE(diff, 1e-5);
  std::ifstream metrics(dist.out + "/metrics.jsonl");
  int steps = 0;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    ++steps;
    EXPECT_TRUE(j.contains("comm_s")) << line;  // the time in all-reduces, logged by rank 0
  }
  EXPECT_EQ(steps, 4);

  r = test::run_cli_env(mpi, "train " + dist.config + " --quiet --distributed --resume " + dist.out + "/checkpoint-2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_LE(max_diff(read_peft_adapter(dist.out + "/adapter"), want), 1e-5);
  // The data position is global: the 2-rank checkpoint resumes in one process accumulating 4.
  r = dist.train("--gradient_accumulation_steps 4 --resume " + dist.out + "/checkpoint-2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_LE(max_diff(read_peft_adapter(dist.out + "/adapter"), want), 1e-5);

  // Ranks that were given different configs (mpiexec's "A : B" form) all stop, naming it.
  TinyRun other("threads: 1\nlearning_rate: 2.0e-3\n");
  const std::string base = mpiexec(1);
  r = test::run_cli_env(base, "train " + dist.config + " --quiet --distributed : -n 1 " + test::binary_path("qlora") +
                                  " train " + other.config + " --quiet --distributed");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("the resolved config differs"), std::string::npos) << r.out;

  // The same config on two "nodes" whose model file under the same (relative) path differs in
  // one byte: refused at start-up, naming the base model.
  test::TempDir nodes;
  for (const char* node : {"a", "b"}) {
    fs::create_directories(nodes.path() + "/" + node);
    fs::copy_file(model_path(), nodes.path() + "/" + node + "/model.gguf");
  }
  {
    std::fstream f(nodes.path() + "/b/model.gguf", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(fs::file_size(model_path()) / 2));
    f.put('\x5a');
  }
  TinyRun relative("threads: 1\n");
  std::string yaml = read_file(relative.config);
  yaml.replace(yaml.find(model_path()), model_path().size(), "model.gguf");
  std::ofstream(relative.config) << yaml;
  r = test::run_cli_env(base + " --wdir " + nodes.path() + "/a",
                        "train " + relative.config + " --quiet --distributed : -n 1 --wdir " + nodes.path() + "/b " +
                            test::binary_path("qlora") + " train " + relative.config + " --quiet --distributed");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("the base model (its config, stored types and sampled file bytes) differs"), std::string::npos)
      << r.out;
}

// A rank killed mid-run (kill -9) ends the whole job non-zero (mpirun's rule); the last
// checkpoint stays intact and a --resume on 2 ranks completes the run.
TEST_F(CliTrain, DistributedRunWithAKilledRankEndsNonZeroAndResumes) {
  if (!have_mpiexec()) GTEST_SKIP() << "no mpiexec (openmpi-bin)";
  TinyRun run("threads: 1\n");
  const std::string mpi = mpiexec(2);
  // The run: many steps, a checkpoint every 2; once checkpoint-2 exists one rank is killed (the
  // newest process whose command line starts with the qlora binary: a rank, not mpiexec).
  const std::string cmd = "bash -c '" + mpi + test::binary_path("qlora") + " train " + run.config +
                          " --quiet --distributed --max_steps 200 --save_steps 2 --eval_steps 0 --sample_prompts [] "
                          ">" + run.dir.path() + "/log 2>&1 & job=$!; "
                          "for i in $(seq 600); do [ -f " + run.out + "/checkpoint-2/trainer_state.json ] && break; sleep 0.1; done; "
                          "kill -9 $(pgrep -f \"^" + test::binary_path("qlora") + " train " + run.config + "\" | tail -1); wait $job'";
  const int status = std::system(cmd.c_str());
  EXPECT_NE(WEXITSTATUS(status), 0) << read_file(run.dir.path() + "/log");
  EXPECT_FALSE(test::exists(run.out + "/adapter/adapter_config.json"));  // it did not finish
  const test::RunResult r = test::run_cli_env(
      mpi, "train " + run.config + " --quiet --distributed --max_steps 200 --save_steps 2 --eval_steps 0 "
           "--sample_prompts [] --resume");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(test::exists(run.out + "/adapter/adapter_config.json"));
  const nlohmann::json summary = nlohmann::json::parse(read_file(run.out + "/summary.json"));
  EXPECT_EQ(summary["steps"], 200);
}

TEST_F(CliTrain, DryRunPrintsConfigAndEstimateOnly) {
  TinyRun run("chat_template_kwargs:\n  enable_thinking: false\n  note: \"true\"\n");
  const test::RunResult r = run.train("--dry-run --lora_r 6");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("lora_r: 6"), std::string::npos) << r.out;
  // Template variables keep their YAML types (a quoted "true" stays a string).
  EXPECT_NE(r.out.find("enable_thinking: false"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("note: \"true\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory estimate"), std::string::npos) << r.out;
  EXPECT_FALSE(test::exists(run.out));
}

// compute_dtype auto: bf16 where the CPU backend has native bf16 units, f32 where it has none
// (QLORA_CPU_ISA=avx512 takes them away on any CPU); the dry run prints the choice as the config.
TEST_F(CliTrain, AutoComputeDtypeFollowsTheCpu) {
  TinyRun run;
  const bool native = make_cpu_backend()->native_bf16();
  const test::RunResult r = run.train("--dry-run --compute_dtype auto");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(native ? "compute_dtype: bf16" : "compute_dtype: f32"), std::string::npos) << r.out;
  setenv("QLORA_CPU_ISA", "avx512", 1);
  const test::RunResult f = run.train("--dry-run --compute_dtype auto");
  unsetenv("QLORA_CPU_ISA");
  ASSERT_EQ(f.exit_code, 0) << f.out;
  EXPECT_NE(f.out.find("compute_dtype: f32"), std::string::npos) << f.out;
}

TEST_F(CliTrain, ResumeEqualsUninterruptedRun) {
  // A cosine schedule depends on max_steps, so both runs use a constant one: 2 steps, then
  // --resume with max_steps 4, must give the adapter of 4 straight steps byte for byte.
  TinyRun straight("lr_scheduler: constant\n"), split("lr_scheduler: constant\n");
  ASSERT_EQ(straight.train().exit_code, 0);
  ASSERT_EQ(split.train("--max_steps 2").exit_code, 0);
  const test::RunResult resumed = split.train("--resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  const std::string a = read_file(straight.out + "/adapter/adapter_model.safetensors");
  const std::string b = read_file(split.out + "/adapter/adapter_model.safetensors");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b) << "resumed adapter differs from the uninterrupted run";
  // metrics.jsonl: one training line per step and one validation line per evaluated step, the
  // resumed run's included (a resume used to repeat the steps after the checkpoint).
  std::map<int64_t, int> losses, evals;
  std::ifstream metrics(split.out + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    (j.contains("loss") ? losses : evals)[j["step"].get<int64_t>()]++;
  }
  EXPECT_EQ(losses, (std::map<int64_t, int>{{1, 1}, {2, 1}, {3, 1}, {4, 1}}));
  EXPECT_EQ(evals, (std::map<int64_t, int>{{0, 1}, {2, 1}, {4, 1}}));
}

TEST_F(CliTrain, InterruptSavesACheckpoint) {
  TinyRun run;
  // Start a long run, wait for its first metrics line, then send Ctrl-C (SIGINT).
  const std::string cmd = "bash -c '" + test::binary_path("qlora") + " train " + run.config +
                          " --quiet --max_steps 1000 --save_steps 0 --eval_steps 0 >/dev/null 2>&1 & pid=$!; "
                          "for i in $(seq 600); do grep -q loss " + run.out + "/metrics.jsonl 2>/dev/null && break; sleep 0.1; done; "
                          "kill -INT $pid; wait $pid'";
  const int status = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 0);
  bool found = false;
  for (const auto& e : fs::directory_iterator(run.out))
    found |= e.path().filename().string().rfind("checkpoint-", 0) == 0 && test::exists(e.path().string() + "/trainer_state.json");
  EXPECT_TRUE(found) << "no checkpoint after Ctrl-C";
}

struct BadConfig {
  std::string args;
  std::string message;
};

TEST_F(CliTrain, BadConfigsNameTheKeyAndWriteNothing) {
  const std::vector<BadConfig> cases = {
      {"--lora_rank 4", "unknown key 'lora_rank'"},
      {"--lora_r abc", "key 'lora_r' must be an integer"},
      {"--base_model /nonexistent/model.gguf", "key 'base_model': /nonexistent/model.gguf does not exist"},
      {"--datasets.0.path /nonexistent.jsonl", "key 'datasets.0.path'"},
      {"--sequence_len 100000", "key 'sequence_len' 100000 exceeds"},
      {"--micro_batch_size 0", "key 'micro_batch_size' must be > 0"},
      {"--method prefix", "key 'method'"},
      {"--compute_dtype fp16", "key 'compute_dtype' must be f32, bf16 or auto"},
      {"--lora_dropout 1.5", "key 'lora_dropout'"},
      {"--memory-budget lots", "key 'memory_budget' must be a size"},
      // Overrides that made yaml-cpp / std::stoul / std::filesystem throw their own errors.
      {"--datasets.99999999999999999999999.path x.jsonl",
       "[config] override --datasets.99999999999999999999999.path x.jsonl: no list element"},
      {"--datasets.5.path x.jsonl", "no list element 5 (the list has 1)"},
      {"--lora_r.x 1", "[config] override --lora_r.x 1: 'lora_r' is a single value"},
      {"--datasets.0.path.x 1", "'datasets.0.path' is a single value"},
      {"--base_model " + std::string(5000, 'm'), "[config] key 'base_model': cannot check mmm"},
      {"--chat_template_kwargs 3", "key 'chat_template_kwargs' must be a map of template variables"},
      {"--chat_template_kwargs.messages 1", "chat template kwargs cannot set 'messages'"},
      {"--chat_template /nonexistent/t.jinja", "cannot read the chat template file /nonexistent/t.jinja"},
  };
  for (const BadConfig& c : cases) {
    SCOPED_TRACE(c.args);
    TinyRun run;
    const test::RunResult r = run.train(c.args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find(c.message), std::string::npos) << r.out;
    EXPECT_FALSE(test::exists(run.out)) << "output written despite a bad config";
  }
  test::TempDir dir;
  std::ofstream(dir.path() + "/broken.yaml") << "base_model: [unclosed\n";
  const test::RunResult r = test::run_cli("train " + dir.path() + "/broken.yaml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("broken.yaml: line"), std::string::npos) << r.out;
}

// The estimate of TinyRun's settings with `batch` and `checkpointing`, as train_run makes it.
EstimateOptions tiny_run_estimate(int64_t batch, bool checkpointing) {
  EstimateOptions o;
  o.method = "qlora", o.lora_r = 4, o.seq = 128, o.batch = batch, o.checkpointing = checkpointing;
  o.source_file_bytes = int64_t(source_weight_bytes(model_path()));
  o.source_dtype = estimate_source_dtype(ModelSource::open(model_path()).stored_types());
  return o;
}

TEST_F(CliTrain, MemoryBudgetChoosesMicroBatchAndCheckpointing) {
  const LlamaConfig config = ModelSource::open(model_path()).config();
  // Budgets at the estimates of the configured run (micro-batch 2) and of the smaller settings.
  for (const auto& [batch, ckpt] : {std::pair<int64_t, bool>{2, false}, {1, false}, {1, true}}) {
    const size_t budget = estimate_memory(config, tiny_run_estimate(batch, ckpt)).total;
    const auto choice = choose_for_budget(config, tiny_run_estimate(2, false), 2, budget);
    ASSERT_TRUE(choice.has_value());
    SCOPED_TRACE(::testing::Message() << "budget " << budget << " -> micro-batch " << choice->micro_batch
                                      << (choice->checkpointing ? " with" : " without") << " checkpointing");
    TinyRun run;
    const test::RunResult r = run.train("--dry-run --memory-budget " + std::to_string(budget));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("micro_batch_size: " + std::to_string(choice->micro_batch)), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("gradient_checkpointing: " + std::string(choice->checkpointing ? "1" : "0")),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("gradient_accumulation_steps: " + std::to_string(choice->accumulation)), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("load peak"), std::string::npos) << r.out;
  }
}

TEST_F(CliTrain, RefusesARunThatWillNotFitAndWritesNothing) {
  TinyRun run;
  const test::RunResult r = run.train("--memory-budget 1MiB");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("[memory] this run needs about"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory_budget 1MiB is 1 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing would fit"), std::string::npos) << r.out;
  EXPECT_FALSE(test::exists(run.out)) << "output written for a run that does not fit";
  // The dry run gives the same verdict.
  const test::RunResult dry = run.train("--dry-run --memory-budget 1MiB");
  EXPECT_NE(dry.exit_code, 0);
  EXPECT_NE(dry.out.find("nothing would fit"), std::string::npos) << dry.out;
}

// Every file in `dir` (recursively) whose name marks it as a temp or displaced file.
std::vector<std::string> temp_leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos || name.find(".old-") != std::string::npos ||
        name.find(".deleting-") != std::string::npos)
      out.push_back(e.path().string());
  }
  return out;
}

TEST_F(CliTrain, AFailedWriteOnResumeKeepsTheOldConfig) {
  TinyRun run;
  ASSERT_EQ(run.train("--max_steps 2").exit_code, 0);
  const std::string config = read_file(run.out + "/config.yaml");
  ASSERT_FALSE(config.empty());
  // A file size limit fails writes past it with EFBIG, as a full disk fails them with ENOSPC.
  // 1 KiB, not 0: LLVM's OpenMP runtime (the clang build) registers itself in a 1 KiB file in
  // /dev/shm before main, and dies of SIGXFSZ at a limit of 0. config.yaml is larger.
  ASSERT_GT(config.size(), 1024u) << "config.yaml must outgrow the 1 KiB limit below";
  const std::string cmd = "bash -c 'ulimit -f 1; " + test::binary_path("qlora") + " train " + run.config +
                          " --quiet --resume' 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  EXPECT_NE(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("cannot write"), std::string::npos) << out;
  EXPECT_NE(out.find("config.yaml"), std::string::npos) << out;
  EXPECT_EQ(read_file(run.out + "/config.yaml"), config) << "config.yaml changed by a failed write";
  EXPECT_TRUE(temp_leftovers(run.out).empty());
}

TEST_F(CliTrain, ResumeIgnoresAndRemovesTempFoldersAndFallsBackFromACorruptCheckpoint) {
  TinyRun run("lr_scheduler: constant\n");
  ASSERT_EQ(run.train().exit_code, 0);  // checkpoints 2 and 4
  // What a kill leaves: a complete-looking temp folder of a later step, a temp config.
  fs::copy(run.out + "/checkpoint-4", run.out + "/checkpoint-6.tmp-99999");
  std::ofstream(run.out + "/config.yaml.tmp.99999") << "half";
  // The latest checkpoint is corrupt: its parameters are cut short.
  fs::resize_file(run.out + "/checkpoint-4/model.safetensors", 100);
  const test::RunResult r = run.train("--resume --max_steps 5");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("checkpoint " + run.out + "/checkpoint-4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("resuming from " + run.out + "/checkpoint-2 instead"), std::string::npos) << r.out;
  EXPECT_TRUE(temp_leftovers(run.out).empty()) << temp_leftovers(run.out)[0];
  const nlohmann::json summary = nlohmann::json::parse(read_file(run.out + "/summary.json"));
  EXPECT_EQ(summary["steps"], 5);
}

TEST_F(CliTrain, SaveTotalLimitKeepsTheNewestCheckpoints) {
  TinyRun run("save_total_limit: 2\n");
  ASSERT_EQ(run.train("--save_steps 1 --eval_steps 0").exit_code, 0);
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(run.out))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) checkpoints.push_back(e.path().filename().string());
  std::sort(checkpoints.begin(), checkpoints.end());
  EXPECT_EQ(checkpoints, (std::vector<std::string>{"checkpoint-3", "checkpoint-4"}));
}

TEST_F(CliTrain, ADivergedRunStopsWithAnErrorAndWritesNoAdapter) {
  TinyRun run("max_consecutive_nonfinite_steps: 3\nlr_scheduler: constant\n");
  const test::RunResult r = run.train("--learning_rate 1e6 --max_steps 40 --save_steps 0 --eval_steps 0");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("3 in a row"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max_consecutive_nonfinite_steps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("diverged"), std::string::npos) << r.out;
  EXPECT_FALSE(test::exists(run.out + "/adapter")) << "the exploded adapter was written";
  EXPECT_FALSE(test::exists(run.out + "/summary.json"));
  // stories260K at lr 1e6 collapses within two steps: the residual stream overflows, RMSNorm turns
  // the infinities into zeros, the loss sits at ln(512) with a gradient of exactly 0 (bigger
  // learning rates give NaN instead; both count). The last three step lines are flagged, each
  // line carries the running count of skipped (non-finite) steps.
  std::vector<bool> flagged;
  std::ifstream metrics(run.out + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    EXPECT_TRUE(j.contains("nonfinite_steps")) << line;
    flagged.push_back(j["skipped"].get<bool>() || j["zero_grad"].get<bool>());
  }
  ASSERT_GE(flagged.size(), 3u);
  EXPECT_LT(flagged.size(), 40u);
  EXPECT_TRUE(flagged[flagged.size() - 1] && flagged[flagged.size() - 2] && flagged[flagged.size() - 3]);
  const std::string html = read_file(run.out + "/report.html");
  EXPECT_NE(html.find("non-finite steps skipped"), std::string::npos);
  EXPECT_NE(html.find("diverged"), std::string::npos);
}

TEST_F(CliTrain, ResumeAfterNonFiniteStepsKeepsCountingThem) {
  // lr 1e30: step 1 is finite, every later step NaN (written as null in metrics.jsonl); with the
  // stop off (0) the run ends, and a resume reads those null lines back and counts on.
  TinyRun run("max_consecutive_nonfinite_steps: 0\nlr_scheduler: constant\nlearning_rate: 1.0e30\n");
  ASSERT_EQ(run.train("--eval_steps 0").exit_code, 0);
  const test::RunResult r = run.train("--eval_steps 0 --resume --max_steps 6");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  int64_t last = -1, skipped = 0;
  std::ifstream metrics(run.out + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    skipped += j["skipped"].get<bool>();
    last = j["nonfinite_steps"].get<int64_t>();
  }
  EXPECT_GT(skipped, 0);
  EXPECT_EQ(last, skipped);  // the resumed run's count includes the steps before the resume
  EXPECT_NE(read_file(run.out + "/report.html").find("non-finite steps skipped"), std::string::npos);
}

TEST_F(CliTrain, SequenceLenTooShortForAnyResponseNamesTheKey) {
  TinyRun run;
  const test::RunResult r = run.train("--sequence_len 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("key 'sequence_len' 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no response token left"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace qlora
