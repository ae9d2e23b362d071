// Kill -9 at random points of `qlora train` (stories260K, a checkpoint after every step): during
// start-up, after a random delay into the steps, the moment a checkpoint's temp folder appears
// (inside a save) and the moment the adapter's temp folder appears (inside the final export), each
// with a further random delay of up to a few ms. After each kill every file in the output folder is complete (config
// and summary parse, metrics.jsonl lines are whole JSON, report.html ends, every checkpoint's
// safetensors and trainer_state.json open), temp folders never count as checkpoints, and
// `--resume` from whatever is left reaches, after the last kill, the adapter of an uninterrupted
// run byte for byte. The kill delays come from a printed seed (QLORA_KILL9_SEED overrides it).
// Matrix and results: docs/reliability.md.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cli_runner.h"
#include "io/safetensors.h"
#include "test_paths.h"
#include "train/trainer.h"
#include "unit/io_test_util.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;

std::string model_path() { return test::shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"); }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// 12 steps, a checkpoint after each, no samples or evaluation (they only cost time here).
void write_config(const std::string& path, const std::string& out) {
  std::ofstream f(path);
  f << "base_model: " << model_path() << "\n"
    << "method: qlora\nlora_r: 4\nlora_alpha: 8\nlora_dropout: 0.1\n"
    << "datasets:\n  - path: " << test::source_path("examples/data/gsm8k_mini_train.jsonl")
    << "\n    type: alpaca\n    fields: instruction=question,output=answer\n"
    << "chat_template: chatml\nsequence_len: 128\nmax_examples: 40\nval_set_size: 0\n"
    << "micro_batch_size: 2\ngradient_accumulation_steps: 1\nmax_steps: 32\nlearning_rate: 1.0e-3\n"
    << "lr_scheduler: constant\neval_steps: 0\nsave_steps: 1\nseed: 3\nthreads: 1\n"
    << "output_dir: " << out << "\n";
}

// The status of a child wait_until reaped, or -1.
int& last_status() {
  static int status = -1;
  return status;
}

// Starts `qlora train CONFIG --quiet [--resume]` with its output discarded; returns the pid.
pid_t start_train(const std::string& config, bool resume) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1), dup2(null, 2);
    const std::string bin = test::binary_path("qlora");
    if (resume) execl(bin.c_str(), bin.c_str(), "train", config.c_str(), "--quiet", "--resume", (char*)nullptr);
    else execl(bin.c_str(), bin.c_str(), "train", config.c_str(), "--quiet", (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Polls `ready` every 0.2 ms until it holds (true) or pid exits or 20 s pass (false).
template <typename F>
bool wait_until(pid_t pid, F ready) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {  // exited: wait_for reports the status kept here
      last_status() = status;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

// The entries of `dir` whose name starts with `prefix` and contains `mark`.
std::set<std::string> entries(const std::string& dir, const std::string& prefix, const std::string& mark) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.find(mark) != std::string::npos) out.insert(name);
  }
  return out;
}

// Whether `dir` holds such an entry that is not in `before` (one the running trainer made).
bool has_new_entry(const std::string& dir, const std::string& prefix, const std::string& mark,
                   const std::set<std::string>& before) {
  for (const std::string& name : entries(dir, prefix, mark))
    if (!before.count(name)) return true;
  return false;
}

// Waits for pid; returns its exit code, or -signal.
int wait_for(pid_t pid) {
  int status = 0;
  if (last_status() >= 0) status = last_status(), last_status() = -1;  // reaped by wait_until
  else waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

bool is_temp(const std::string& name) {
  return name.find(".tmp") != std::string::npos || name.find(".old-") != std::string::npos ||
         name.find(".deleting-") != std::string::npos;
}

// Every non-temp file under `out` is complete. Returns how many temp entries were found (a kill
// inside a write).
int check_outputs_complete(const std::string& out) {
  int temps = 0;
  if (!fs::exists(out)) return 0;
  for (auto it = fs::recursive_directory_iterator(out); it != fs::recursive_directory_iterator(); ++it) {
    const std::string name = it->path().filename().string();
    if (is_temp(name)) {
      ++temps;
      it.disable_recursion_pending();  // a temp folder may hold anything
      continue;
    }
    if (!it->is_regular_file()) continue;
    const std::string path = it->path().string();
    SCOPED_TRACE(path);
    const std::string text = read_file(path);
    if (name == "config.yaml") {
      EXPECT_NE(text.find("base_model:"), std::string::npos);
      EXPECT_EQ(text.back(), '\n');
    } else if (name == "metrics.jsonl") {
      std::istringstream lines(text);
      for (std::string line; std::getline(lines, line);) EXPECT_NO_THROW(nlohmann::json::parse(line)) << line;
      if (!text.empty()) {
        EXPECT_EQ(text.back(), '\n');
      }
    } else if (name == "report.html") {
      EXPECT_NE(text.find("</html>"), std::string::npos);
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
      EXPECT_NO_THROW(nlohmann::json::parse(text));
    } else if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors") {
      EXPECT_NO_THROW(SafetensorsFile::open(path));
    }
  }
  // Each checkpoint that counts is complete.
  for (const std::string& dir : list_checkpoints(out))
    EXPECT_NO_THROW(nlohmann::json::parse(read_file(dir + "/trainer_state.json"))) << dir;
  return temps;
}

TEST(CliKill9, ResumeAfterKillsReachesTheUninterruptedAdapter) {
  if (!test::exists(model_path())) GTEST_SKIP() << "stories260K not found at " << model_path();
  test::TempDir dir;
  const std::string straight_out = dir.file("straight"), killed_out = dir.file("killed");
  write_config(dir.file("straight.yaml"), straight_out);
  write_config(dir.file("killed.yaml"), killed_out);

  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(wait_for(start_train(dir.file("straight.yaml"), false)), 0);
  const double run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string want = read_file(straight_out + "/adapter/adapter_model.safetensors");
  ASSERT_FALSE(want.empty());

  const char* env = std::getenv("QLORA_KILL9_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : uint64_t(std::random_device{}());
  std::printf("[ kill9 ] seed %llu (QLORA_KILL9_SEED=%llu reproduces it); an uninterrupted run takes %.0f ms\n",
              (unsigned long long)seed, (unsigned long long)seed, run_ms);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> startup(0.0, 0.15 * run_ms), into_steps(0.1 * run_ms, 0.4 * run_ms);
  std::uniform_int_distribution<int> jitter_us(0, 3000);
  // Where each kill aims; the order repeats so every kind is hit whatever the seed.
  enum Aim { kStartup, kSteps, kSave, kAdapter };
  const char* aim_name[] = {"start-up", "during steps", "inside a save", "inside the adapter export"};
  const std::vector<Aim> aims = {kStartup, kSave, kSteps, kSave, kSteps, kSave, kSave, kAdapter};
  int finished_early = 0, inside_writes = 0;
  const std::string metrics = killed_out + "/metrics.jsonl";
  for (size_t k = 0; k < aims.size(); ++k) {
    const bool resume = !list_checkpoints(killed_out).empty();
    // Temp folders a previous kill left (the new run removes them): not the ones to wait for.
    const std::set<std::string> stale = entries(killed_out, "", ".tmp-");
    const pid_t pid = start_train(dir.file("killed.yaml"), resume);
    const auto t_start = std::chrono::steady_clock::now();
    bool reached = true;
    switch (aims[k]) {
      case kStartup:
        std::this_thread::sleep_for(std::chrono::microseconds(int64_t(startup(rng) * 1000)));
        break;
      case kSteps:
        std::this_thread::sleep_for(std::chrono::microseconds(int64_t(into_steps(rng) * 1000)));
        break;
      case kSave:
        reached = wait_until(pid, [&] { return has_new_entry(killed_out, "checkpoint-", ".tmp-", stale); });
        break;
      case kAdapter:
        reached = wait_until(pid, [&] { return has_new_entry(killed_out, "adapter", ".tmp-", stale); });
        break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(jitter_us(rng)));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
    if (last_status() < 0) ::kill(pid, SIGKILL);  // not if wait_until saw it exit (its pid is free)
    const int rc = wait_for(pid);
    if (rc == 0) {
      ++finished_early;
    } else {
      EXPECT_EQ(rc, -SIGKILL) << "kill " << k << ": the trainer failed on its own";
    }
    const int temps = check_outputs_complete(killed_out);
    inside_writes += temps > 0;
    const std::vector<std::string> ckpts = list_checkpoints(killed_out);
    std::printf("[ kill9 ] kill %zu, %s%s, after %.0f ms (%s): %zu checkpoints, newest %s, %d temp entries\n", k,
                aim_name[aims[k]], reached ? "" : " (not reached)", ms, resume ? "resumed run" : "fresh run",
                ckpts.size(), ckpts.empty() ? "-" : fs::path(ckpts.front()).filename().c_str(), temps);
    std::fflush(stdout);
  }
  // The last resume runs to the end.
  ASSERT_EQ(wait_for(start_train(dir.file("killed.yaml"), !list_checkpoints(killed_out).empty())), 0);
  EXPECT_EQ(check_outputs_complete(killed_out), 0) << "temp files left after a completed run";
  EXPECT_EQ(read_file(killed_out + "/adapter/adapter_model.safetensors"), want)
      << "the resumed adapter differs from the uninterrupted run's";
  // metrics.jsonl: each step exactly once.
  std::map<int64_t, int> steps;
  std::istringstream lines(read_file(killed_out + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) steps[j["step"].get<int64_t>()]++;
  }
  EXPECT_EQ(steps.size(), 32u);
  for (const auto& [s, n] : steps) EXPECT_EQ(n, 1) << "step " << s;
  std::printf("[ kill9 ] %zu kills, %d left temp entries (inside a write), %d came after the run ended\n",
              aims.size(), inside_writes, finished_early);
}

}  // namespace
}  // namespace qlora
