// `qlora eval MODEL [--adapter DIR] --data FILE [--data2 FILE] [--format auto|alpaca|chat|text]
//  [--fields instruction=question,output=answer] [--template auto|alpaca|chatml|...]
//  [--max-examples N] [--generate N] [--max-new-tokens N] [--json] [--compare-base]`:
// how well a model (with its adapter) fits instruction/chat data. The loss is the mean NLL over
// response tokens only, with exactly the label masking training uses (data/example_encoder.h);
// perplexity = exp(loss). For GSM8K-style references ("#### <number>") the first --generate N
// examples are also answered greedily and scored by exact match of the final number
// (model/answer_match.h). --compare-base runs the same with and without the adapter and prints the
// deltas; --data2 repeats everything on a second dataset (e.g. to see what fine-tuning forgot).
// Tested in tests/e2e/test_cli_eval_chat.cpp.
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/example_encoder.h"
#include "model/answer_match.h"
#include "model/perplexity.h"
#include "model/sampler.h"
#include "progress.h"

namespace qlora::cli {

namespace {

struct EvalOptions {
  ModelOptions model;
  std::string tokenizer_path;
  std::string data_path, data2_path;
  std::string format = "auto";
  std::string fields;
  std::string template_name = "auto";
  int64_t max_examples = 100;
  int64_t generate = 0;
  int64_t max_new_tokens = 256;
  int64_t max_len = 0;
  bool json = false;
  bool compare_base = false;
  bool show = false;
};

struct Metrics {
  size_t examples = 0;   // scored for loss
  int64_t tokens = 0;    // response tokens scored
  double loss = 0.0;     // mean NLL per response token
  double perplexity = 0.0;
  int64_t generated = 0;  // examples answered
  int64_t correct = 0;
  bool has_accuracy = false;
  double seconds = 0.0;
  double accuracy() const { return generated ? double(correct) / double(generated) : 0.0; }
};

struct EvalSet {
  std::string path;
  std::vector<Example> examples;
  std::vector<EncodedExample> encoded;  // parallel to examples
};

// The reference answer text of an example: its output, or its last assistant turn.
std::string reference_of(const Example& e) {
  if (e.kind == Example::Kind::Instruction) return e.output;
  for (auto it = e.messages.rbegin(); it != e.messages.rend(); ++it)
    if (it->role == "assistant") return it->content;
  return "";
}

EvalSet load_set(const std::string& path, const EvalOptions& o, bool use_fields, const ExampleEncoder& encoder) {
  DatasetOptions options;
  options.format = dataset_format_from_name(o.format);
  if (use_fields && !o.fields.empty()) options.fields = parse_field_map(o.fields);
  DatasetReader reader(path, options);
  EvalSet set{path, {}, {}};
  Example e;
  while ((o.max_examples <= 0 || int64_t(set.examples.size()) < o.max_examples) && reader.next(e)) {
    EncodedExample enc = encoder.encode(e);
    bool any = false;
    for (size_t t = 1; t < enc.labels.size(); ++t) any = any || enc.labels[t] != kIgnoreIndex;
    if (!any) continue;  // truncated to nothing but prompt
    set.examples.push_back(e);
    set.encoded.push_back(std::move(enc));
  }
  if (reader.stats().skipped)
    fmt::print(stderr, "[eval] {}: skipped {} bad records (first: {})\n", path, reader.stats().skipped,
               reader.stats().messages.empty() ? "" : reader.stats().messages.front());
  if (set.examples.empty()) fail("eval", "{} holds no usable examples", path);
  return set;
}

// Sum of -log p(label) over the labelled positions of one example; logits[t - 1] predicts labels[t].
std::pair<double, int64_t> masked_nll(const LlamaModel& model, const EncodedExample& enc) {
  const Tensor logits = model.forward_sequence(enc.ids);  // (T, V)
  const int64_t V = model.config().vocab_size;
  double sum = 0;
  int64_t count = 0;
  for (size_t t = 1; t < enc.ids.size(); ++t) {
    if (enc.labels[t] == kIgnoreIndex) continue;
    sum += token_nll(logits.data<float>() + int64_t(t - 1) * V, V, enc.labels[t]);
    ++count;
  }
  return {sum, count};
}

// Greedy answer to the prompt part of an encoded example (everything before its first label).
std::string answer(const LlamaModel& model, const Tokenizer& tokenizer, const EncodedExample& enc,
                   int64_t max_new_tokens) {
  size_t prompt_len = 1;
  while (prompt_len < enc.labels.size() && enc.labels[prompt_len] == kIgnoreIndex) ++prompt_len;
  const int64_t capacity = std::min<int64_t>(model.config().max_position_embeddings,
                                             int64_t(prompt_len) + max_new_tokens + 1);
  if (int64_t(prompt_len) >= capacity) return "";
  KvCache cache(model.config(), capacity);
  Sampler greedy({0.0f, 1.0f, 0});
  const Tensor logits = model.forward(cache, enc.ids.data(), int64_t(prompt_len), false);
  const std::vector<int32_t> out =
      generate_tokens(model, tokenizer, cache, logits, greedy, max_new_tokens, enc.ids[prompt_len - 1]);
  return tokenizer.decode(out, /*skip_special=*/true);
}

Metrics evaluate(const LlamaModel& model, const Tokenizer& tokenizer, const EvalSet& set, const EvalOptions& o,
                 const std::string& label) {
  const auto start = std::chrono::steady_clock::now();
  Metrics m;
  bool gsm8k = true;
  for (const Example& e : set.examples) gsm8k = gsm8k && has_final_answer_marker(reference_of(e));
  const int64_t n_generate = gsm8k ? std::min<int64_t>(o.generate, int64_t(set.examples.size())) : 0;
  ProgressBar bar(label, int64_t(set.examples.size()) + n_generate);
  double sum = 0;
  for (size_t i = 0; i < set.encoded.size(); ++i) {
    const auto [nll, count] = masked_nll(model, set.encoded[i]);
    sum += nll;
    m.tokens += count;
    ++m.examples;
    if (!o.json) bar.update(int64_t(i) + 1, fmt::format("loss {:.4f}", sum / double(std::max<int64_t>(m.tokens, 1))));
  }
  m.loss = sum / double(std::max<int64_t>(m.tokens, 1));
  m.perplexity = std::exp(m.loss);
  m.has_accuracy = n_generate > 0;
  for (int64_t i = 0; i < n_generate; ++i) {
    const std::string reference = reference_of(set.examples[size_t(i)]);
    const std::string generated = answer(model, tokenizer, set.encoded[size_t(i)], o.max_new_tokens);
    const bool ok = answers_match(generated, reference);
    m.correct += ok;
    ++m.generated;
    if (o.show)
      fmt::print(stderr, "\n--- {} example {} ({}): got {}, expected {}\n{}\n", label, i, ok ? "correct" : "wrong",
                 extract_final_number(generated).value_or("none"), extract_final_number(reference).value_or("none"),
                 generated);
    if (!o.json)
      bar.update(int64_t(set.examples.size()) + i + 1, fmt::format("accuracy {}/{}", m.correct, m.generated));
  }
  if (!o.json) bar.finish();
  if (o.generate > 0 && !gsm8k)
    fmt::print(stderr, "[eval] {}: references have no '#### <answer>' line; accuracy not measured\n", set.path);
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

nlohmann::json to_json(const Metrics& m) {
  nlohmann::json j = {{"examples", m.examples}, {"tokens", m.tokens}, {"loss", m.loss},
                      {"perplexity", m.perplexity}, {"seconds", m.seconds}};
  if (m.has_accuracy) {
    j["generated"] = m.generated;
    j["correct"] = m.correct;
    j["accuracy"] = m.accuracy();
  } else {
    j["accuracy"] = nullptr;
  }
  return j;
}

void print_table(const std::vector<std::string>& paths, const std::vector<std::vector<Metrics>>& columns,
                 const std::vector<std::string>& names) {
  const bool delta = columns.size() == 2;
  fmt::print("{:<28} {:<11}", "dataset", "metric");
  for (const auto& n : names) fmt::print(" {:>12}", n);
  if (delta) fmt::print(" {:>12}", "delta");
  fmt::print("\n");
  for (size_t d = 0; d < paths.size(); ++d) {
    std::string name = paths[d];
    if (name.size() > 28) name = "..." + name.substr(name.size() - 25);
    auto row = [&](const std::string& metric, auto value, const char* spec, const char* delta_spec) {
      fmt::print("{:<28} {:<11}", name, metric);
      name.clear();
      for (const auto& c : columns) fmt::print(" {:>12}", fmt::format(fmt::runtime(spec), value(c[d])));
      if (delta)
        fmt::print(" {:>12}", fmt::format(fmt::runtime(delta_spec), value(columns[1][d]) - value(columns[0][d])));
      fmt::print("\n");
    };
    row("loss", [](const Metrics& m) { return m.loss; }, "{:.4f}", "{:+.4f}");
    row("perplexity", [](const Metrics& m) { return m.perplexity; }, "{:.3f}", "{:+.3f}");
    if (columns[0][d].has_accuracy)
      row("accuracy", [](const Metrics& m) { return 100.0 * m.accuracy(); }, "{:.1f}%", "{:+.1f}");
    fmt::print("{:<28} {:<11}", "", "examples");
    for (const auto& c : columns)
      fmt::print(" {:>12}", c[d].has_accuracy ? fmt::format("{}/{}g", c[d].examples, c[d].generated)
                                              : fmt::format("{}", c[d].examples));
    fmt::print("\n{:<28} {:<11}", "", "tokens");
    for (const auto& c : columns) fmt::print(" {:>12}", c[d].tokens);
    fmt::print("\n{:<28} {:<11}", "", "seconds");
    for (const auto& c : columns) fmt::print(" {:>12.1f}", c[d].seconds);
    fmt::print("\n");
  }
}

void run_eval(const EvalOptions& o) {
  if (o.compare_base && o.model.adapter_path.empty()) fail("eval", "--compare-base needs --adapter DIR");
  ModelOptions base_options = o.model;
  base_options.adapter_path.clear();
  const PeftAdapter adapter = o.model.adapter_path.empty() ? PeftAdapter{} : load_adapter(o.model.adapter_path);
  LlamaModel model = load_for_inference(base_options);
  const auto tokenizer = load_model_tokenizer(o.model.model_path, o.tokenizer_path);
  if (tokenizer->vocab_size() > model.config().vocab_size)
    fail("eval", "tokenizer has {} tokens but the model's vocabulary is {}", tokenizer->vocab_size(),
         model.config().vocab_size);
  EncodeOptions encode;
  encode.max_len = int(o.max_len > 0 ? std::min<int64_t>(o.max_len, model.config().max_position_embeddings)
                                     : std::min<int64_t>(2048, model.config().max_position_embeddings));
  const ExampleEncoder encoder(*tokenizer, load_chat_template(o.model.model_path, *tokenizer, o.template_name, "alpaca"),
                               encode);
  std::vector<EvalSet> sets;
  sets.push_back(load_set(o.data_path, o, true, encoder));
  if (!o.data2_path.empty()) sets.push_back(load_set(o.data2_path, o, false, encoder));

  std::vector<std::string> names;
  std::vector<std::vector<Metrics>> columns;
  auto run_all = [&](const std::string& name) {
    names.push_back(name);
    columns.emplace_back();
    for (const EvalSet& s : sets) columns.back().push_back(evaluate(model, *tokenizer, s, o, name));
  };
  if (o.compare_base || adapter.tensors.empty()) run_all("base");
  if (!adapter.tensors.empty()) {
    model.set_adapter(adapter);
    run_all("adapter");
  }

  std::vector<std::string> paths;
  for (const EvalSet& s : sets) paths.push_back(s.path);
  if (o.json) {
    nlohmann::json j = {{"model", o.model.model_path},
                        {"adapter", o.model.adapter_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.model.adapter_path)},
                        {"template", encoder.chat_template().name()},
                        {"max_new_tokens", o.max_new_tokens}};
    nlohmann::json datasets = nlohmann::json::array();
    for (size_t d = 0; d < sets.size(); ++d) {
      nlohmann::json entry = {{"data", paths[d]}};
      for (size_t c = 0; c < columns.size(); ++c) entry[names[c]] = to_json(columns[c][d]);
      if (columns.size() == 2) {
        const Metrics &b = columns[0][d], &a = columns[1][d];
        entry["delta"] = {{"loss", a.loss - b.loss}, {"perplexity", a.perplexity - b.perplexity}};
        entry["delta"]["accuracy"] = b.has_accuracy ? nlohmann::json(a.accuracy() - b.accuracy()) : nlohmann::json(nullptr);
      }
      datasets.push_back(entry);
    }
    j["datasets"] = datasets;
    fmt::print("{}\n", j.dump(2));
  } else {
    print_table(paths, columns, names);
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Response loss, perplexity and GSM8K accuracy on a dataset");
  add_model_options(*cmd, o->model);
  add_adapter_option(*cmd, o->model);
  add_tokenizer_option(*cmd, o->tokenizer_path);
  cmd->add_option("--data", o->data_path, "dataset: Alpaca JSON/JSONL, chat JSONL, seed tasks or text")->required();
  cmd->add_option("--data2", o->data2_path, "a second dataset to report on (auto format, default fields)");
  cmd->add_option("--format", o->format, "dataset format")->check(CLI::IsMember({"auto", "alpaca", "chat", "text"}));
  cmd->add_option("--fields", o->fields, "field names of --data, e.g. instruction=question,output=answer");
  cmd->add_option("--template", o->template_name,
                  "prompt template: auto (the model's, else alpaca) or alpaca|chatml|llama-2|llama-3|mistral");
  cmd->add_option("--max-examples", o->max_examples, "examples per dataset (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--generate", o->generate, "answer the first N examples greedily and score them (GSM8K-style)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "tokens per generated answer")->check(CLI::PositiveNumber);
  cmd->add_option("--max-len", o->max_len, "truncate examples to this many tokens (default min(2048, context))");
  cmd->add_flag("--json", o->json, "print a JSON object");
  cmd->add_flag("--compare-base", o->compare_base, "also evaluate without the adapter and print the deltas");
  cmd->add_flag("--show", o->show, "print each generated answer to stderr");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace qlora::cli
