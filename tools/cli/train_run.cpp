// `qlora train` orchestration. The library does the work (data/, train/, model/); this file wires
// it to files, the terminal and signals.
#include "train_run.h"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/threads.h"
#include "common.h"
#include "core/error.h"
#include "core/memory.h"
#include "data/example_encoder.h"
#include "data/token_cache.h"
#include "dist/mpi_communicator.h"
#include "model/sampler.h"
#include "io/atomic_file.h"
#include "io/peft_adapter.h"
#include "model/hf_export.h"
#include "model/loader.h"
#include "progress.h"
#include "report_html.h"
#include "quant/nf4.h"
#include "train/adapter_export.h"
#include "train/memory_budget.h"
#include "train/memory_estimate.h"
#include "train/metrics_log.h"
#include "train/model_export.h"
#include "train/train_model.h"
#include "train/train_data.h"
#include "train/trainer.h"

namespace qlora::cli {

namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_stop_requested{false};

void on_interrupt(int) {
  g_stop_requested = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

TrainDataOptions data_options(const TrainRunConfig& c) {
  TrainDataOptions d;
  d.datasets = c.datasets;
  d.val_dataset = c.val_dataset;
  d.val_set_size = c.val_set_size;
  d.max_examples = c.max_examples;
  d.sequence_len = c.sequence_len;
  d.sample_packing = c.sample_packing;
  d.seed = c.seed;
  d.cache_dir = (fs::path(c.output_dir) / "token_cache").string();
  return d;
}

TrainModelOptions model_options(const TrainRunConfig& c) {
  TrainModelOptions o;
  o.method = train_method_from_name(c.method);
  o.compute = dtype_from_name(c.compute_dtype);
  o.checkpoint_every = c.gradient_checkpointing;
  o.lora.r = c.lora_r;
  o.lora.lora_alpha = c.lora_alpha;
  o.lora.lora_dropout = c.lora_dropout;
  o.lora.use_rslora = c.use_rslora;
  o.lora.target_modules = c.lora_target_modules;
  o.lora.seed = c.seed;
  o.quantize.type = quant_type_from_name(c.quant_type);
  o.quantize.block_size = c.quant_block_size;
  o.quantize.double_quant = c.double_quant;
  return o;
}

TrainerConfig trainer_config(const TrainRunConfig& c, size_t train_sequences) {
  TrainerConfig t;
  t.micro_batch = c.micro_batch_size;
  t.grad_accum = c.gradient_accumulation_steps;
  const int64_t per_step = c.micro_batch_size * c.gradient_accumulation_steps;
  t.max_steps = c.max_steps > 0 ? c.max_steps : steps_for_epochs(c.num_epochs, train_sequences, per_step);
  t.lr = c.learning_rate;
  t.schedule = schedule_kind_from_name(c.lr_scheduler);
  t.warmup_steps = c.warmup_steps;
  t.max_grad_norm = c.max_grad_norm;
  t.optimizer = optimizer_kind_from_name(c.optimizer);
  t.adamw.weight_decay = c.weight_decay;
  t.paged = c.paged_optimizer;
  t.seed = c.seed;
  t.eval_every = c.eval_steps;
  t.save_every = c.save_steps;
  t.output_dir = c.output_dir;
  t.save_total_limit = c.save_total_limit;
  t.max_consecutive_nonfinite = c.max_consecutive_nonfinite_steps;
  return t;
}

EstimateOptions estimate_options(const TrainRunConfig& c, const ModelSource& source) {
  EstimateOptions e;
  e.method = c.method;
  e.seq = c.sequence_len;
  e.batch = c.micro_batch_size;
  e.checkpointing = c.gradient_checkpointing > 0;
  e.optimizer = c.paged_optimizer ? "paged" : c.optimizer;
  e.lora_r = c.lora_r;
  e.target_modules = c.lora_target_modules;
  e.quant_block_size = c.quant_block_size;
  e.double_quant = c.double_quant;
  e.compute = c.compute_dtype;
  e.source_file_bytes = int64_t(source_weight_bytes(c.base_model));
  e.source_dtype = estimate_source_dtype(source.stored_types());
  return e;
}

// A model for sample answers: the base (NF4 for QLoRA, as trained) with the adapter unmerged.
// `file` may share its tensors with another copy (no second dense copy is made).
LlamaModel sampling_model(const TrainRunConfig& c, const ModelSource& source, const PeftAdapter* adapter) {
  ForwardOptions forward;
  forward.compute = dtype_from_name(c.compute_dtype);
  if (train_method_from_name(c.method) == TrainMethod::Qlora) {
    forward.quantize.enabled = true;
    forward.quantize.type = quant_type_from_name(c.quant_type);
    forward.quantize.block_size = c.quant_block_size;
    forward.quantize.double_quant = c.double_quant;
  }
  LlamaModel model(source, forward);
  if (adapter) model.set_adapter(*adapter);
  return model;
}

std::vector<std::string> sample_answers(const LlamaModel& model, const Tokenizer& tok, const ChatTemplate& tmpl,
                                        const TrainRunConfig& c) {
  std::vector<std::string> out;
  for (const std::string& prompt : c.sample_prompts) {
    const std::vector<int32_t> ids = encode_chat(tok, tmpl, {{"user", prompt}}, c.parse_special_in_content);
    const int64_t context = model.config().max_position_embeddings;
    if (int64_t(ids.size()) >= context) fail("train", "sample prompt of {} tokens fills the context", ids.size());
    KvCache cache(model.config(), std::min<int64_t>(context, int64_t(ids.size()) + c.sample_max_tokens));
    Tensor logits = model.forward(cache, ids.data(), int64_t(ids.size()), false);
    Sampler greedy({0.0f, 1.0f, 0});
    out.push_back(tok.decode(generate_tokens(model, tok, cache, logits, greedy, c.sample_max_tokens, ids.back()), true));
  }
  return out;
}

void write_atomically(const std::string& path, const std::string& text) { write_file_atomically(path, text, "train"); }

// A cheap identity of a model's files: each file (the file itself, or a folder's weight and JSON
// files by name) hashed on its size and 64 KiB read at 16 evenly spaced places. Ranks compare it
// at start-up, so nodes holding different weights under the same path and shapes do not train
// apart silently (the replica check sees only the trained parameters, not the frozen base).
uint64_t model_files_fingerprint(const std::string& path) {
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".safetensors" || ext == ".gguf" || ext == ".bin" || ext == ".json"))
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  uint64_t h = fnv1a64(nullptr, 0);  // the offset basis
  std::vector<char> buf(64 << 10);
  for (const fs::path& f : files) {
    const std::string name = f.filename().string();
    h = fnv1a64(name.data(), name.size(), h);
    std::error_code ec;
    const uint64_t size = fs::file_size(f, ec);
    if (ec) fail("train", "cannot read {}: {}", f.string(), ec.message());
    h = fnv1a64(&size, sizeof size, h);
    std::ifstream in(f, std::ios::binary);
    for (int k = 0; k < 16 && size > 0; ++k) {
      in.seekg(std::streamoff(size / 16 * uint64_t(k)));
      in.read(buf.data(), std::streamsize(buf.size()));
      h = fnv1a64(buf.data(), size_t(in.gcount()), h);
      in.clear();
    }
  }
  return h;
}

// Throws Error on every rank unless every rank holds the same `fingerprint` as rank 0.
void same_on_every_rank(Communicator& comm, uint64_t mine, const std::string& what) {
  uint64_t reference = mine;
  comm.broadcast(&reference, sizeof reference, 0);
  double differing = reference == mine ? 0.0 : 1.0;
  comm.all_reduce_sum(&differing, 1);
  if (differing > 0)
    fail("train", "{} differs on {} of {} ranks from rank 0's: every rank must run the same config and files",
         what, int64_t(differing), comm.size());
}

std::string mib(size_t bytes) { return fmt::format("{:.0f} MiB", double(bytes) / (1 << 20)); }

}  // namespace

void run_training(const TrainRunConfig& requested, const TrainRunOptions& options) {
  TrainRunConfig c = requested;  // memory_budget may change the micro-batch and checkpointing
  set_num_threads(c.threads);
  const auto t_start = std::chrono::steady_clock::now();
  // Data parallel: every rank runs this function; rank 0 (the leader) alone prints and writes.
  const std::shared_ptr<Communicator> comm = options.distributed ? make_mpi_communicator() : make_local_communicator();
  const bool leader = comm->rank() == 0;
  auto log = [&](const std::string& line) {
    if (!options.quiet && leader) fmt::print(stderr, "{}\n", line);
  };
  if (comm->size() > 1) {
    log(fmt::format("distributed: {} ranks; each step takes {} micro-batches of {} ({} on each rank)", comm->size(),
                    comm->size() * c.gradient_accumulation_steps, c.micro_batch_size, c.gradient_accumulation_steps));
    const std::string yaml = train_config_yaml(c);
    same_on_every_rank(*comm, fnv1a64(yaml.data(), yaml.size()), "the resolved config");
  }
  if (c.compute_dtype == "auto") {  // decided here, once, so the estimate and the model agree
    c.compute_dtype = make_cpu_backend()->native_bf16() ? "bf16" : "f32";
    log(fmt::format("compute_dtype auto: {} ({})", c.compute_dtype,
                    c.compute_dtype == "bf16" ? "this CPU has native bf16 units" : "no native bf16 units here"));
  }

  // Opened, not loaded: the model streams its weights in one tensor at a time.
  const ModelSource source = ModelSource::open(c.base_model);
  if (c.sequence_len > source.config().max_position_embeddings)
    fail("config", "key 'sequence_len' {} exceeds the model's context of {}", c.sequence_len,
         source.config().max_position_embeddings);

  // Memory, decided before anything is loaded: the estimate against the budget the config gives,
  // else against what the machine has available now.
  size_t budget = available_memory_bytes();
  std::string budget_source = "the available memory";
  if (!c.memory_budget.empty()) {
    const size_t available = budget;
    budget = size_t(parse_byte_size(c.memory_budget));
    budget_source = "memory_budget " + c.memory_budget;
    if (available > 0 && budget > available)
      fmt::print(stderr, "warning: memory_budget {} is more than the {} available now\n", c.memory_budget,
                 format_bytes(available));
    if (auto choice = choose_for_budget(source.config(), estimate_options(c, source), c.gradient_accumulation_steps,
                                        budget)) {
      if (choice->micro_batch != c.micro_batch_size || choice->checkpointing != (c.gradient_checkpointing > 0))
        log(fmt::format("memory_budget {}: micro_batch_size {}, gradient_checkpointing {}, "
                        "gradient_accumulation_steps {} (estimated {})",
                        c.memory_budget, choice->micro_batch, choice->checkpointing ? "true" : "false",
                        choice->accumulation, format_bytes(choice->estimate.total)));
      c.micro_batch_size = choice->micro_batch;
      c.gradient_accumulation_steps = choice->accumulation;
      c.gradient_checkpointing = choice->checkpointing ? std::max<int64_t>(1, c.gradient_checkpointing) : 0;
    }
  }
  const EstimateOptions estimate_opts = estimate_options(c, source);
  const MemoryEstimate estimate = estimate_memory(source.config(), estimate_opts);
  const bool fits = budget == 0 || estimate.total <= budget;
  const std::string refusal =
      fits ? "" : does_not_fit_message(source.config(), estimate_opts, estimate, budget, budget_source);
  if (options.dry_run) {
    if (!leader) return;
    fmt::print("{}", train_config_yaml(c));
    fmt::print("\n# memory estimate ({} params, method {}, weights stored as {})\n{}", count_parameters(source.config()),
               c.method, source.stored_types(), estimate.table());
    if (budget > 0) fmt::print("# {}: {}\n", budget_source, format_bytes(budget));
    if (!fits) fail("memory", "{}", refusal);
    return;
  }
  if (!fits) {
    if (!options.ignore_memory_check) fail("memory", "{}\n(--ignore-memory-check runs it anyway)", refusal);
    fmt::print(stderr, "warning: {}\n", refusal);
  }

  // Tokenizer and template before anything is written: a bad template file or kwargs is a config error.
  const auto tokenizer = load_model_tokenizer(c.base_model, c.tokenizer);
  // The model's own template; base models without one get ChatML.
  ChatTemplate tmpl = load_chat_template(c.base_model, *tokenizer, c.chat_template, "chatml");
  tmpl.set_kwargs(c.chat_template_kwargs);
  if (leader) {
    fs::create_directories(c.output_dir);
    // A run killed earlier may have left temp files and folders; none of them is a result.
    for (const std::string& note : remove_stale_outputs(c.output_dir)) log("note: " + note);
    write_atomically((fs::path(c.output_dir) / "config.yaml").string(), train_config_yaml(c));
  }
  comm->barrier();  // the output folder is clean before any rank reads a checkpoint from it
  EncodeOptions encode;
  encode.train_on_inputs = c.train_on_inputs;
  encode.max_len = int(c.sequence_len);
  encode.parse_special_in_content = c.parse_special_in_content;
  const ExampleEncoder encoder(*tokenizer, tmpl, encode);
  const TrainData data = prepare_train_data(data_options(c), *tokenizer, encoder);
  if (leader)
    for (const std::string& w : data.warnings) fmt::print(stderr, "warning: {}\n", w);
  if (comm->size() > 1) {
    // The same model and the same encoded data everywhere (FNV-1a over every token id).
    const std::string shape = source.config().to_hf_json().dump() + source.stored_types();
    same_on_every_rank(*comm, fnv1a64(shape.data(), shape.size(), model_files_fingerprint(c.base_model)),
                       "the base model (its config, stored types and sampled file bytes)");
    uint64_t h = fnv1a64(nullptr, 0);  // the offset basis
    for (const auto* split : {&data.train, &data.validation})
      for (const TrainSequence& seq : *split) h = fnv1a64(seq.ids.data(), seq.ids.size() * sizeof(int32_t), h);
    same_on_every_rank(*comm, h, "the encoded training data");
  }
  log(fmt::format("data: {} training examples in {} sequences of {}, {} validation examples in {} sequences",
                  data.train_examples, data.train.size(), c.sequence_len, data.validation_examples,
                  data.validation.size()));

  // Sample answers of the base model, before the training model takes the memory.
  std::vector<std::string> before;
  if (!c.sample_prompts.empty() && leader) {
    log("sampling the base model");
    before = sample_answers(sampling_model(c, source, nullptr), *tokenizer, tmpl, c);
  }

  LlamaModelFile source_meta;  // what a full fine-tune's export copies from the source (tokenizer)
  source_meta.path = source.path(), source_meta.format = source.format();
  // Held by pointer so both can be freed before the "after" samples load the model again.
  log(fmt::format("loading {} ({})", c.base_model, source.stored_types()));
  const auto t_load = std::chrono::steady_clock::now();
  auto model_owner = std::make_unique<TrainModel>(source, model_options(c));
  TrainModel& model = *model_owner;
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  log(fmt::format("loaded in {:.1f} s; resident {} (peak {}, estimated load peak {})", load_seconds,
                  format_bytes(current_rss_bytes()), format_bytes(peak_rss_bytes()),
                  format_bytes(estimate.load_peak + estimate.overhead)));
  const TrainerConfig tcfg = trainer_config(c, data.train.size());
  auto trainer_owner = std::make_unique<Trainer>(model, data.train, data.validation, tcfg, comm);
  Trainer& trainer = *trainer_owner;
  if (!options.resume.empty()) {
    std::string dir = options.resume;
    if (dir == "latest") {
      std::vector<std::string> warnings;
      dir = trainer.resume_latest(c.output_dir, &warnings);
      if (leader)
        for (const std::string& w : warnings) fmt::print(stderr, "warning: {}\n", w);
      if (dir.empty()) fail("train", "--resume: no checkpoint in {}", c.output_dir);
    } else {
      trainer.resume(dir);
    }
    log(fmt::format("resumed from {} at step {}", dir, trainer.step_count()));
  }

  const std::string metrics_path = (fs::path(c.output_dir) / "metrics.jsonl").string();
  const std::string report_path = (fs::path(c.output_dir) / "report.html").string();
  // A resumed run continues the log cut back to the checkpoint's step: each step appears once.
  // Rank 0 alone holds the log; the others write nothing.
  std::unique_ptr<MetricsLog> metrics_log;
  if (leader)
    metrics_log = std::make_unique<MetricsLog>(options.resume.empty()
                                                   ? MetricsLog::create(metrics_path)
                                                   : MetricsLog::resume(metrics_path, trainer.step_count()));
  auto write_metric = [&](const nlohmann::json& j) {
    if (metrics_log) metrics_log->write(j);
  };
  auto sync_metrics = [&] {
    if (metrics_log) metrics_log->sync();
  };
  const std::vector<nlohmann::json> no_lines;
  if (metrics_log)
    for (const std::string& w : metrics_log->warnings()) fmt::print(stderr, "warning: {}\n", w);
  RunReport report;
  int64_t skipped = 0;  // non-finite steps of the whole run, those before a resume included
  // A NaN was written as null: read every figure as a number or NaN.
  auto num = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_number() ? j[key].get<double>() : double(NAN);
  };
  for (const nlohmann::json& j : metrics_log ? metrics_log->kept() : no_lines) {
    if (j.contains("loss"))
      report.steps.push_back({num(j, "step"), num(j, "loss"), num(j, "lr"), num(j, "grad_norm"),
                              num(j, "tokens_per_s"), num(j, "rss_mb")});
    if (j.contains("val_loss")) report.evals.push_back({num(j, "step"), num(j, "val_loss")});
    if (j.contains("skipped") && j["skipped"].is_boolean() && j["skipped"].get<bool>()) ++skipped;
  }
  int64_t reported_step = trainer.step_count();  // the report outlives the trainer
  report.title = fmt::format("qlora train: {} on {}", c.method, fs::path(c.base_model).filename().string());
  report.config_yaml = train_config_yaml(c);
  auto write_report = [&](const std::vector<std::pair<std::string, std::string>>& extra) {
    if (!leader) return;
    report.facts = {{"model", c.base_model},
                    {"method", c.method},
                    {"steps", fmt::format("{} / {}", reported_step, tcfg.max_steps)},
                    {"sequences", fmt::format("{} train, {} validation", data.train.size(), data.validation.size())},
                    {"peak memory (RSS)", mib(peak_rss_bytes())},
                    {"estimated memory", mib(estimate.total)}};
    report.facts.push_back({"non-finite steps skipped", std::to_string(skipped)});
    report.facts.insert(report.facts.end(), extra.begin(), extra.end());
    write_atomically(report_path, render_report_html(report));
  };

  const double val_before = data.validation.empty() ? NAN : trainer.evaluate();
  if (!data.validation.empty()) {
    log(fmt::format("validation loss before training: {:.4f} (perplexity {:.2f})", val_before, std::exp(val_before)));
    report.evals.push_back({double(trainer.step_count()), val_before});
    write_metric({{"step", trainer.step_count()}, {"val_loss", val_before}});
  }

  g_stop_requested = false;
  std::signal(SIGINT, on_interrupt);
  ProgressBar bar("train", tcfg.max_steps);
  const bool with_aux_loss = model.config().moe() && model.config().output_router_logits;
  auto on_step = [&](const StepResult& r) {
    const double tps = r.seconds > 0 ? double(r.input_tokens) / r.seconds : 0;
    const size_t rss = current_rss_bytes();
    skipped += r.skipped;
    reported_step = r.step;
    nlohmann::json j = {{"step", r.step},         {"loss", r.loss},   {"lr", r.lr},
                        {"grad_norm", r.grad_norm}, {"tokens", r.tokens}, {"tokens_per_s", tps},
                        {"rss_mb", double(rss) / (1 << 20)}, {"skipped", r.skipped},
                        {"nonfinite_steps", skipped}, {"zero_grad", r.zero_grad}};
    if (with_aux_loss) j["aux_loss"] = r.aux_loss;  // the load-balancing loss, inside `loss` already
    if (comm->size() > 1) j["comm_s"] = r.comm_seconds;  // time in all-reduces (and waiting for the others)
    write_metric(j);
    report.steps.push_back({double(r.step), r.loss, r.lr, r.grad_norm, tps, double(rss) / (1 << 20)});
    if (!leader) return;
    if (r.skipped) fmt::print(stderr, "\nwarning: step {} skipped: non-finite loss or gradient\n", r.step);
    if (r.zero_grad) fmt::print(stderr, "\nwarning: step {}: the gradient is exactly 0 (an overflow?)\n", r.step);
    if (!options.quiet)
      bar.update(r.step, fmt::format("loss {:.4f} lr {:.2e} gnorm {:.3f} {:.0f} tok/s {}", r.loss, r.lr,
                                     r.grad_norm, tps, mib(rss)));
    if (r.step % 10 == 0) write_report({});
  };
  auto on_eval = [&](int64_t step, double val) {
    report.evals.push_back({double(step), val});
    write_metric({{"step", step}, {"val_loss", val}});
    if (!options.quiet && leader)
      fmt::print(stderr, "\nstep {}: validation loss {:.4f} (perplexity {:.2f})\n", step, val, std::exp(val));
    write_report({});
  };
  try {
    // Every rank stops at the same step: a Ctrl-C seen by any of them stops them all.
    trainer.train(on_step, on_eval, [&] {
      double stop = g_stop_requested.load() ? 1.0 : 0.0;
      comm->all_reduce_sum(&stop, 1);
      if (stop > 0) g_stop_requested = true;  // so every rank takes the interrupted path below
      return stop > 0;
    });
  } catch (const Error& e) {
    // A diverged run (or a failed save): the report says why; no adapter or model is written.
    std::signal(SIGINT, SIG_DFL);
    sync_metrics();
    try {
      write_report({{"status", fmt::format("stopped: {}", e.what())}});
    } catch (const Error&) {
      // (the disk may be full) the first error is the one to report
    }
    throw;
  }
  std::signal(SIGINT, SIG_DFL);
  sync_metrics();
  if (!options.quiet && leader) bar.finish();
  if (g_stop_requested) {
    write_report({{"status", "interrupted"}});
    if (leader)
      fmt::print(stderr, "interrupted: checkpoint saved in {}; continue with --resume\n",
                 latest_checkpoint(c.output_dir));
    return;
  }

  // The last periodic evaluation may already be of the final step.
  const bool evaluated = !report.evals.empty() && report.evals.back().step == double(trainer.step_count());
  const double val_after = data.validation.empty() ? NAN : evaluated ? report.evals.back().loss : trainer.evaluate();
  if (!data.validation.empty() && !evaluated) {
    report.evals.push_back({double(trainer.step_count()), val_after});
    write_metric({{"step", trainer.step_count()}, {"val_loss", val_after}});
    sync_metrics();
  }

  if (!leader) return;  // the replicas are identical: rank 0 writes the result
  // The result: a PEFT adapter (lora, qlora) or the fine-tuned model as an HF folder (full).
  std::string result_path, weights_for_samples = c.base_model;
  std::unique_ptr<PeftAdapter> adapter;
  const bool full = train_method_from_name(c.method) == TrainMethod::Full;
  if (full) {
    result_path = (fs::path(c.output_dir) / "model").string();
    for (const std::string& note : export_hf_folder(model_file_from_params(model, source_meta), result_path))
      log("note: " + note);
    weights_for_samples = result_path;
  } else {
    result_path = (fs::path(c.output_dir) / "adapter").string();
    adapter = std::make_unique<PeftAdapter>(peft_adapter_from_model(model, c.base_model));
    write_peft_adapter(result_path, *adapter);
  }
  const size_t peak = peak_rss_bytes();
  const int64_t steps_done = trainer.step_count();
  trainer_owner.reset(), model_owner.reset();
  std::vector<std::string> after;
  if (!c.sample_prompts.empty()) {
    log("sampling the fine-tuned model");
    after = sample_answers(sampling_model(c, ModelSource::open(weights_for_samples), adapter.get()), *tokenizer, tmpl,
                           c);
    for (size_t i = 0; i < after.size(); ++i) report.samples.push_back({c.sample_prompts[i], before[i], after[i]});
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  write_report({{"validation loss", fmt::format("{:.4f} → {:.4f}", val_before, val_after)},
                {"wall time", fmt::format("{:.0f} s", seconds)}});
  nlohmann::json summary = {{"method", c.method},
                            {"steps", steps_done},
                            {"val_loss_before", val_before},
                            {"val_loss_after", val_after},
                            {"peak_rss_bytes", peak},
                            {"load_seconds", load_seconds},
                            {"estimated_bytes", estimate.to_json()},
                            {"skipped_steps", skipped},
                            {"seconds", seconds},
                            {"result", result_path}};
  write_atomically((fs::path(c.output_dir) / "summary.json").string(), summary.dump(2) + "\n");

  fmt::print("\n== qlora train: {} steps of {} in {:.0f} s ==\n", steps_done, c.method, seconds);
  if (!data.validation.empty())
    fmt::print("validation loss: {:.4f} (perplexity {:.2f}) before -> {:.4f} (perplexity {:.2f}) after\n", val_before,
               std::exp(val_before), val_after, std::exp(val_after));
  fmt::print("peak memory: {} (estimated {})\n", mib(peak), mib(estimate.total));
  for (size_t i = 0; i < after.size(); ++i)
    fmt::print("\nQ: {}\n  before: {}\n  after:  {}\n", c.sample_prompts[i], before[i], after[i]);
  fmt::print("\n{}: {}\nmetrics: {}\nreport:  {}\n", full ? "model" : "adapter", result_path,
             metrics_path, report_path);
}

}  // namespace qlora::cli
