// Trainer checkpoints: output_dir/checkpoint-<step>/ holding
//   model.safetensors      every trainable Param under its name (PEFT/HF keys), values as stored (f32)
//   optimizer.safetensors  Optimizer::state_dict()
//   trainer_state.json     format version, step, data position (epoch, index), seed, the config and
//                          a fingerprint of the param names and shapes
// Written atomically (io/atomic_file.h): everything goes into "<dir>.tmp-<pid>", each file and the
// folder are fsynced, then the folder is renamed to <dir> and the parent fsynced, so a crash leaves
// either the old checkpoint or the new one, never a mix. The epoch order is not stored: it is a function of
// (seed, epoch). resume() validates all three files before changing anything, so a failed resume
// leaves the trainer as it was, and resume_latest() can fall back to an older checkpoint.
// Also here: listing checkpoints, pruning to save_total_limit and removing what a killed run left
// (temp and displaced folders). Tested in tests/unit/test_trainer.cpp and tests/e2e/test_cli_train.cpp.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "train/trainer.h"

namespace qlora {
namespace fs = std::filesystem;
namespace {

constexpr int kStateFormatVersion = 1;
constexpr const char* kStateFormat = "qlora.cpp trainer_state";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kCheckpointPrefix = "checkpoint-";

// FNV-1a over "name:dtype:d0,d1,...;" of every param in order: equal iff the same params.
std::string param_fingerprint(const std::vector<Param>& params) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto feed = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
  };
  for (const Param& p : params) {
    feed(p.name);
    feed(":");
    feed(dtype_name(p.value.dtype()));
    feed(":");
    for (int64_t d : p.value.shape()) feed(std::to_string(d) + ",");
    feed(";");
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

nlohmann::json config_json(const TrainerConfig& c) {
  nlohmann::json j;
  j["micro_batch"] = c.micro_batch;
  j["grad_accum"] = c.grad_accum;
  j["max_steps"] = c.max_steps;
  j["lr"] = c.lr;
  j["schedule"] = schedule_kind_name(c.schedule);
  j["warmup_steps"] = c.warmup_steps;
  j["max_grad_norm"] = c.max_grad_norm;
  j["optimizer"] = optimizer_kind_name(c.optimizer);
  j["beta1"] = c.adamw.beta1;
  j["beta2"] = c.adamw.beta2;
  j["eps"] = c.adamw.eps;
  j["weight_decay"] = c.adamw.weight_decay;
  j["paged"] = c.paged;
  j["seed"] = c.seed;
  j["shuffle"] = c.shuffle;
  j["eval_every"] = c.eval_every;
  j["save_every"] = c.save_every;
  return j;
}

// Typed access to trainer_state.json keys; errors name the file and the key.
const nlohmann::json& key(const nlohmann::json& j, const std::string& name, const std::string& path) {
  if (!j.is_object() || !j.contains(name)) fail("train", "{}: key \"{}\" is missing", path, name);
  return j.at(name);
}
int64_t key_int(const nlohmann::json& j, const std::string& name, const std::string& path, int64_t min = 0) {
  const auto& v = key(j, name, path);
  if (!v.is_number_integer()) fail("train", "{}: key \"{}\" must be an integer; got {}", path, name, v.dump());
  const int64_t x = v.is_number_unsigned() ? int64_t(v.get<uint64_t>()) : v.get<int64_t>();
  if (x < min) fail("train", "{}: key \"{}\" must be >= {}; got {}", path, name, min, x);
  return x;
}
uint64_t key_u64(const nlohmann::json& j, const std::string& name, const std::string& path) {
  const auto& v = key(j, name, path);
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    fail("train", "{}: key \"{}\" must be a non-negative integer; got {}", path, name, v.dump());
  return v.get<uint64_t>();
}
std::string key_str(const nlohmann::json& j, const std::string& name, const std::string& path) {
  const auto& v = key(j, name, path);
  if (!v.is_string()) fail("train", "{}: key \"{}\" must be a string; got {}", path, name, v.dump());
  return v.get<std::string>();
}
bool key_bool(const nlohmann::json& j, const std::string& name, const std::string& path) {
  const auto& v = key(j, name, path);
  if (!v.is_boolean()) fail("train", "{}: key \"{}\" must be true or false; got {}", path, name, v.dump());
  return v.get<bool>();
}

// "checkpoint-<digits>" -> step, else -1 (temp and displaced folders have suffixes and are skipped).
int64_t checkpoint_step(const std::string& name) {
  const size_t n = std::strlen(kCheckpointPrefix);
  if (name.size() <= n || name.compare(0, n, kCheckpointPrefix) != 0 || name.size() - n > 18) return -1;
  int64_t step = 0;
  for (size_t i = n; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool is_complete_checkpoint(const fs::path& dir) {
  std::error_code ec;
  for (const char* f : {kModelFile, kOptimizerFile, kStateFile})
    if (!fs::is_regular_file(dir / f, ec)) return false;
  return true;
}

// "<name><sep><digits>" -> the length of <name>, else 0: the temp and displaced names atomic_file
// and prune_checkpoints give ("a.json.tmp.123", "checkpoint-4.tmp-123", "checkpoint-4.old-123").
size_t strip_pid_suffix(const std::string& name, std::string_view sep) {
  const size_t at = name.rfind(sep);
  if (at == std::string::npos || at == 0 || at + sep.size() == name.size()) return 0;
  for (size_t i = at + sep.size(); i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return 0;
  return at;
}

}  // namespace

std::string Trainer::save_checkpoint() {
  if (config_.output_dir.empty()) fail("train", "cannot save a checkpoint: no output_dir configured");
  const std::string dir =
      save_checkpoint((fs::path(config_.output_dir) / (kCheckpointPrefix + std::to_string(step_))).string());
  if (comm_->rank() == 0) prune_checkpoints(config_.output_dir, config_.save_total_limit);
  return dir;
}

std::string Trainer::save_checkpoint(const std::string& dir_in) {
  // Data parallel: the replicas are identical and rank 0 alone writes.
  if (comm_->rank() != 0) return dir_in;
  const fs::path dir = fs::path(dir_in).lexically_normal();
  const fs::path target = dir.filename().empty() ? dir.parent_path() : dir;  // "a/b/" -> "a/b"
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail("train", "cannot create {}: {}", parent.string(), ec.message());

  AtomicDirectory tmp_dir(target.string(), "train");
  const fs::path tmp(tmp_dir.path());
  const std::vector<Param> params = model_.parameters();
  std::vector<std::pair<std::string, Tensor>> values;
  values.reserve(params.size());
  for (const Param& p : params) values.emplace_back(p.name, model_.backend().to_host(p.value));
  write_safetensors((tmp / kModelFile).string(), values, {{"format", "pt"}});

  std::vector<std::pair<std::string, Tensor>> state;
  for (auto& [name, t] : optimizer_->state_dict()) state.emplace_back(name, t);
  write_safetensors((tmp / kOptimizerFile).string(), state,
                    {{"format", "qlora.cpp optimizer"}, {"optimizer", optimizer_kind_name(config_.optimizer)}});

  nlohmann::json j;
  j["format"] = kStateFormat;
  j["format_version"] = kStateFormatVersion;
  j["step"] = step_;
  j["epoch"] = position_.epoch;
  j["index"] = position_.index;
  j["seed"] = config_.seed;
  j["train_sequences"] = train_.size();
  j["optimizer_steps"] = optimizer_->steps_taken();
  j["param_count"] = params.size();
  j["param_fingerprint"] = param_fingerprint(params);
  j["config"] = config_json(config_);
  write_file_atomically((tmp / kStateFile).string(), j.dump(2) + "\n", "train");
  // Leaves either the old checkpoint or the new one, never a mix; a crash may leave
  // "<dir>.old-<pid>" or "<dir>.tmp-<pid>", which latest_checkpoint ignores.
  tmp_dir.commit();
  return target.string();
}

void Trainer::resume(const std::string& checkpoint_dir) {
  const fs::path dir(checkpoint_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("train", "checkpoint {} is not a directory", checkpoint_dir);
  for (const char* f : {kStateFile, kModelFile, kOptimizerFile})
    if (!fs::is_regular_file(dir / f, ec))
      fail("train", "checkpoint {} is incomplete: {} is missing", checkpoint_dir, f);

  // trainer_state.json
  const std::string state_path = (dir / kStateFile).string();
  nlohmann::json j;
  {
    std::ifstream in(state_path);
    if (!in) fail("train", "cannot read {}", state_path);
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      j = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
      fail("train", "{}: malformed JSON: {}", state_path, e.what());
    }
  }
  if (key_str(j, "format", state_path) != kStateFormat)
    fail("train", "{}: key \"format\" is \"{}\"; expected \"{}\"", state_path, j["format"].get<std::string>(),
         kStateFormat);
  const int64_t version = key_int(j, "format_version", state_path);
  if (version != kStateFormatVersion)
    fail("train", "{}: key \"format_version\" is {}; this build reads version {}", state_path, version,
         kStateFormatVersion);
  const int64_t step = key_int(j, "step", state_path);
  DataPosition position;
  position.epoch = key_int(j, "epoch", state_path);
  position.index = key_int(j, "index", state_path);
  const uint64_t seed = key_u64(j, "seed", state_path);
  const int64_t n_train = key_int(j, "train_sequences", state_path);
  // The data position indexes an order of exactly these sequences; other data would make it mean
  // something else, so refuse rather than silently train on a different order.
  if (n_train != int64_t(train_.size()))
    fail("train", "{}: key \"train_sequences\" is {} but this run has {} training sequences; resume with the "
                  "same data",
         state_path, n_train, train_.size());
  if (position.index > n_train)
    fail("train", "{}: key \"index\" is {}; expected <= train_sequences ({})", state_path, position.index, n_train);
  const nlohmann::json& cfg = key(j, "config", state_path);
  const std::string opt_name = key_str(cfg, "optimizer", state_path);
  if (opt_name != optimizer_kind_name(config_.optimizer))
    fail("train", "{}: key \"config.optimizer\" is {} but this run uses {}", state_path, opt_name,
         optimizer_kind_name(config_.optimizer));
  const bool shuffle = key_bool(cfg, "shuffle", state_path);

  // model.safetensors: exactly our params, same shapes and dtypes.
  const std::vector<Param> params = model_.parameters();
  const std::string model_path = (dir / kModelFile).string();
  const SafetensorsFile model_file = SafetensorsFile::open(model_path);
  std::set<std::string> ours;
  std::vector<Tensor> values;
  values.reserve(params.size());
  for (const Param& p : params) {
    ours.insert(p.name);
    if (!model_file.contains(p.name))
      fail("train", "{}: parameter {} is missing; the checkpoint belongs to other params", model_path, p.name);
    Tensor t = model_file.get(p.name);
    if (t.shape() != p.value.shape() || t.dtype() != p.value.dtype())
      fail("train", "{}: parameter {} is {}; expected {}", model_path, p.name, t.describe(), p.value.describe());
    values.push_back(std::move(t));
  }
  for (const std::string& name : model_file.names())
    if (!ours.count(name))
      fail("train", "{}: holds {}, which is not a trainable parameter of this model; the checkpoint belongs to "
                    "other params",
           model_path, name);
  const std::string fingerprint = key_str(j, "param_fingerprint", state_path);
  if (fingerprint != param_fingerprint(params))
    fail("train", "{}: key \"param_fingerprint\" is {}; expected {} for this model's params", state_path,
         fingerprint, param_fingerprint(params));

  // optimizer.safetensors
  const std::string opt_path = (dir / kOptimizerFile).string();
  const SafetensorsFile opt_file = SafetensorsFile::open(opt_path);
  const int64_t optimizer_steps = key_int(j, "optimizer_steps", state_path);
  std::map<std::string, Tensor> state;
  for (const std::string& name : opt_file.names()) {
    // Keys are "<param>.<buffer>" (plus "step"). The optimizer checks them fully only on its first
    // step after the load; catch state of other params here, naming the file.
    const bool known = name == "step" || std::any_of(params.begin(), params.end(), [&](const Param& p) {
                         return name.size() > p.name.size() && name.compare(0, p.name.size(), p.name) == 0 &&
                                name[p.name.size()] == '.';
                       });
    if (!known)
      fail("train", "{}: state {} belongs to no trainable parameter of this model", opt_path, name);
    state.emplace(name, opt_file.get(name));
  }
  // An optimizer that never stepped has no state to save (checkpoint-0, or only skipped steps):
  // a fresh optimizer is the same thing.
  if (state.empty() && optimizer_steps > 0)
    fail("train", "{}: holds no state, but trainer_state.json says the optimizer took {} steps", opt_path,
         optimizer_steps);
  if (!state.empty()) {
    try {
      optimizer_->load_state_dict(state);
    } catch (const Error& e) {
      fail("train", "{}: {}", opt_path, e.what());
    }
  }

  // Everything validated and the optimizer loaded: now change the trainer.
  for (size_t i = 0; i < params.size(); ++i) model_.backend().upload(params[i].value, values[i].raw());
  step_ = step;
  position_ = position;
  // The order is a function of (seed, epoch): adopt the checkpoint's so the data continues as it
  // was (a different seed on the command line would otherwise silently change the order).
  config_.seed = seed;
  config_.shuffle = shuffle;
  order_.clear();  // rebuilt from (seed, epoch) by the next micro-batch
  model_.parameters_updated();
}

std::string Trainer::resume_latest(const std::string& output_dir, std::vector<std::string>* warnings) {
  const std::vector<std::string> all = list_checkpoints(output_dir);
  std::vector<std::pair<std::string, std::string>> failures;  // (dir, why)
  for (const std::string& dir : all) {
    try {
      resume(dir);  // validates everything before it changes anything, so a failure can be retried
    } catch (const Error& e) {
      failures.emplace_back(dir, e.what());
      continue;
    }
    if (warnings)
      for (const auto& [bad, why] : failures)
        warnings->push_back(fmt::format("checkpoint {} cannot be resumed ({}); resuming from {} instead", bad, why, dir));
    return dir;
  }
  if (!failures.empty()) {
    std::string list;
    for (const auto& [bad, why] : failures) list += fmt::format("\n  {}: {}", bad, why);
    fail("train", "no checkpoint in {} can be resumed:{}", output_dir, list);
  }
  return "";
}

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> found;
  if (output_dir.empty() || !fs::is_directory(output_dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    if (!entry.is_directory(ec)) continue;
    const int64_t step = checkpoint_step(entry.path().filename().string());
    if (step >= 0 && is_complete_checkpoint(entry.path())) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::string latest_checkpoint(const std::string& output_dir) {
  const std::vector<std::string> all = list_checkpoints(output_dir);
  return all.empty() ? "" : all.front();
}

std::vector<std::string> remove_stale_outputs(const std::string& output_dir) {
  std::vector<std::string> done;
  std::error_code ec;
  auto clean = [&](const fs::path& dir) {
    if (!fs::is_directory(dir, ec)) return;
    std::vector<fs::path> entries;
    for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e.path());
    for (const fs::path& p : entries) {
      const std::string name = p.filename().string();
      std::error_code rm;
      if (strip_pid_suffix(name, ".tmp.") || strip_pid_suffix(name, ".tmp-") || strip_pid_suffix(name, ".deleting-")) {
        fs::remove_all(p, rm);
        done.push_back(fmt::format("removed {}, left by an interrupted write", p.string()));
      } else if (const size_t at = strip_pid_suffix(name, ".old-")) {
        const fs::path original = dir / name.substr(0, at);
        if (!fs::exists(original, ec) && checkpoint_step(name.substr(0, at)) >= 0) {
          fs::rename(p, original, rm);
          done.push_back(fmt::format("restored {} from {} (a replacement was interrupted)", original.string(),
                                     p.string()));
        } else {
          fs::remove_all(p, rm);
          done.push_back(fmt::format("removed {}, left by an interrupted replacement", p.string()));
        }
      }
      if (rm) fail("train", "cannot clean up {}: {}", p.string(), rm.message());
    }
  };
  const fs::path out(output_dir);
  clean(out);
  for (const char* sub : {"adapter", "model", "token_cache"}) clean(out / sub);
  return done;
}

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const std::vector<std::string> all = list_checkpoints(output_dir);
  for (size_t i = size_t(keep); i < all.size(); ++i) {
    const std::string doomed = all[i] + ".deleting-" + std::to_string(::getpid());
    std::error_code ec;
    fs::rename(all[i], doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
    if (ec) fail("train", "cannot delete old checkpoint {} (save_total_limit {}): {}", all[i], keep, ec.message());
  }
}

}  // namespace qlora
