// Examples -> ids and labels: prompt tokens masked (-100) unless train_on_inputs, only assistant
// turns labelled in chats, the EOS ending a response labelled also when pad == eos, truncation
// counted; and the on-disk tokenization cache (round trip, key changes, corrupt files). Uses a
// byte tokenizer (toy_tokenizer.h) so the expected labels can be written out; plus SmolLM2's own
// template and tokenizer when models/ has it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/example_encoder.h"
#include "data/packing.h"
#include "data/token_cache.h"
#include "test_paths.h"
#include "tokenizer_test_util.h"
#include "toy_tokenizer.h"

namespace qlora {
namespace {

using test::ToyTokenizer;

// The labelled part of an encoded example, decoded, with '|' between labelled runs.
std::string labelled_text(const Tokenizer& tok, const EncodedExample& e) {
  std::string out;
  bool in_run = false;
  for (size_t t = 0; t < e.ids.size(); ++t) {
    if (e.labels[t] == kIgnoreIndex) {
      if (in_run) out += "|";
      in_run = false;
      continue;
    }
    EXPECT_EQ(e.labels[t], e.ids[t]);
    out += tok.decode_token(e.ids[t]);
    in_run = true;
  }
  return out;
}

Example instruction(const std::string& ins, const std::string& input, const std::string& output) {
  Example e;
  e.instruction = ins;
  e.input = input;
  e.output = output;
  return e;
}

Example chat(std::vector<ChatMessage> messages) {
  Example e;
  e.kind = Example::Kind::Chat;
  e.messages = std::move(messages);
  return e;
}

TEST(ExampleEncoder, AlpacaMasksThePrompt) {
  const ToyTokenizer tok(ToyTokenizer::kEos);  // pad == eos
  const ExampleEncoder enc(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), {});
  const EncodedExample e = enc.encode(instruction("Add.", "1 2", "3"));
  const std::string prompt = alpaca_prompt("Add.", "1 2");
  ASSERT_EQ(e.ids.size(), 1 + prompt.size() + 1 + 1);  // BOS, prompt, "3", EOS
  EXPECT_EQ(e.ids.front(), ToyTokenizer::kBos);
  EXPECT_EQ(e.ids.back(), ToyTokenizer::kEos);
  EXPECT_EQ(e.labels.back(), ToyTokenizer::kEos) << "the EOS ending the response is a label even when pad == eos";
  EXPECT_EQ(labelled_text(tok, e), "3</s>");
  for (size_t t = 0; t + 2 < e.ids.size(); ++t) EXPECT_EQ(e.labels[t], kIgnoreIndex) << t;

  EncodeOptions all;
  all.train_on_inputs = true;
  const EncodedExample f = ExampleEncoder(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), all).encode(instruction("Add.", "1 2", "3"));
  EXPECT_EQ(f.ids, e.ids);
  EXPECT_EQ(f.labels[0], kIgnoreIndex);  // nothing predicts BOS
  for (size_t t = 1; t < f.ids.size(); ++t) EXPECT_EQ(f.labels[t], f.ids[t]);
}

TEST(ExampleEncoder, ChatLabelsOnlyAssistantTurns) {
  const ToyTokenizer tok;
  const ExampleEncoder enc(tok, ChatTemplate::builtin("chatml", "<s>", "</s>"), {});
  const Example ex = chat({{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}, {"user", "Q3"}});
  const auto segs = enc.segments(ex);
  ASSERT_EQ(segs.size(), 4u);
  EXPECT_EQ(segs[0].first, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(segs[1].first, "A1<|im_end|>\n");
  EXPECT_TRUE(segs[1].second);
  EXPECT_EQ(segs[2].first, "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
  const EncodedExample e = enc.encode(ex);
  // <|im_end|> is the end of generation here, so no extra EOS; the trailing user turn is dropped.
  EXPECT_EQ(labelled_text(tok, e), "A1<|im_end|>\n|A2<|im_end|>\n");
  EXPECT_EQ(e.ids.front(), ToyTokenizer::kBos);

  // Mistral writes BOS itself (no second one) and ends a response with EOS text.
  const ExampleEncoder mistral(tok, ChatTemplate::builtin("mistral", "<s>", "</s>"), {});
  const EncodedExample m = mistral.encode(chat({{"user", "Hi"}, {"assistant", "Yo"}}));
  EXPECT_EQ(m.ids[0], ToyTokenizer::kBos);
  EXPECT_NE(m.ids[1], ToyTokenizer::kBos);
  EXPECT_EQ(labelled_text(tok, m), "Yo</s>");
  // An instruction example through a chat template: instruction, blank line, input as the user turn.
  const auto isegs = enc.segments(instruction("Add.", "1 2", "3"));
  EXPECT_EQ(isegs[0].first, "<|im_start|>user\nAdd.\n\n1 2<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ExampleEncoder, EosAppendedWhenTemplateHasNone) {
  const ToyTokenizer tok(ToyTokenizer::kEos, false);
  const ChatTemplate plain("plain", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "<s>", "</s>");
  const EncodedExample e = ExampleEncoder(tok, plain, {}).encode(chat({{"user", "a"}, {"assistant", "b"}}));
  EXPECT_NE(e.ids.front(), ToyTokenizer::kBos);  // the tokenizer adds no BOS
  EXPECT_EQ(labelled_text(tok, e), "assistant: b\n</s>");
  // A template whose renderings are not prefixes of each other is rejected.
  const ChatTemplate odd("odd", "{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}", "<s>", "</s>");
  EXPECT_THROW(ExampleEncoder(tok, odd, {}).encode(chat({{"user", "a"}, {"assistant", "b"}})), Error);
}

std::string read_template(const std::string& name) {
  std::ifstream in(test::source_path("tests/data/golden/templates/" + name), std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Qwen3's own template (tests/data/golden/templates, rendering checked against transformers in
// test_chat_template.cpp): one exchange labels the thinking block and the answer; it rewrites
// earlier turns (their thinking is dropped once a later question comes), so a multi-turn chat
// fails naming the fix, and TRL's prefix-preserving training variant labels every turn.
TEST(ExampleEncoder, Qwen3ThinkingTemplates) {
  const ToyTokenizer tok(ToyTokenizer::kEos, false);
  const ChatTemplate qwen3("qwen3", read_template("qwen3.jinja"), "", "<|im_end|>");
  const Example one = chat({{"user", "2+3?"}, {"assistant", "<think>\nadd\n</think>\n\n5"}});
  EXPECT_EQ(labelled_text(tok, ExampleEncoder(tok, qwen3, {}).encode(one)),
            "<think>\nadd\n</think>\n\n5<|im_end|>\n");
  // The thinking given apart (reasoning_content) renders the same.
  Example apart = chat({{"user", "2+3?"}, {"assistant", "5", "add"}});
  EXPECT_EQ(labelled_text(tok, ExampleEncoder(tok, qwen3, {}).encode(apart)),
            "<think>\nadd\n</think>\n\n5<|im_end|>\n");

  const Example two = chat({{"user", "2+3?"}, {"assistant", "<think>add</think>5"}, {"user", "times 4?"},
                            {"assistant", "<think>mul</think>20"}});
  try {
    ExampleEncoder(tok, qwen3, {}).encode(two);
    ADD_FAILURE() << "Qwen3's own template is not prefix-preserving";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen3_training.jinja"), std::string::npos) << e.what();
  }
  const ChatTemplate training("qwen3_training", read_template("qwen3_training.jinja"), "", "<|im_end|>");
  EXPECT_EQ(labelled_text(tok, ExampleEncoder(tok, training, {}).encode(two)),
            "<think>\nadd\n</think>\n\n5<|im_end|>\n|<think>\nmul\n</think>\n\n20<|im_end|>\n");

  // enable_thinking: false puts an empty thinking block in the generation prompt.
  ChatTemplate no_think = qwen3;
  no_think.set_kwargs({{"enable_thinking", false}});
  EXPECT_EQ(no_think.render({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(qwen3.render({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(no_think.set_kwargs({{"messages", 1}}), Error);
  EXPECT_THROW(no_think.set_kwargs(nlohmann::json::array()), Error);
}

TEST(ExampleEncoder, TruncationIsCounted) {
  const ToyTokenizer tok;
  EncodeOptions opt;
  opt.max_len = 16;
  const ExampleEncoder enc(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), opt);
  EncodeStats stats;
  Example text;
  text.kind = Example::Kind::Text;
  text.text = "0123456789abcdefghij";
  const auto out = enc.encode_all({instruction("Add.", "", "3"), text}, &stats);
  EXPECT_EQ(stats.examples, 2u);
  EXPECT_EQ(stats.truncated, 2u);
  EXPECT_EQ(stats.no_labels, 1u);  // the alpaca prompt alone is longer than 16 tokens
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ids.size(), 16u);
  EXPECT_EQ(labelled_text(tok, out[0]), "0123456789abcde");  // BOS, then 15 bytes, all labelled
}

TEST(ExampleEncoder, SmolLM2TemplateAndTokenizer) {
  const std::string model = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!test::exists(model)) GTEST_SKIP() << model << " missing (scripts/fetch_models.sh)";
  const auto tok = load_tokenizer(model);
  ASSERT_EQ(tok->pad_id(), tok->eos_id());
  const ChatTemplate tmpl = ChatTemplate::from_model(model, tok->token_text(tok->bos_id()), tok->token_text(tok->eos_id()));
  const ExampleEncoder enc(*tok, tmpl, {});
  const EncodedExample e = enc.encode(chat({{"user", "What is 2+2?"}, {"assistant", "4"}}));
  const std::string text = tok->decode(e.ids);
  EXPECT_EQ(text, tmpl.render({{"user", "What is 2+2?"}, {"assistant", "4"}}, false));
  EXPECT_EQ(labelled_text(*tok, e), "4<|im_end|>\n");
  // Packed with pad == eos: padding is unlabelled, the response's <|im_end|> stays labelled.
  const auto seqs = pack_examples({e, e}, 2 * int(e.ids.size()) + 5, pad_id_for(*tok));
  ASSERT_EQ(seqs.size(), 1u);
  int eos_labels = 0;
  for (int32_t l : seqs[0].labels) eos_labels += l == tok->eos_id();
  EXPECT_EQ(eos_labels, 2);
}

TEST(TokenCache, RoundTripAndInvalidation) {
  test::ScratchDir dir("qlora_token_cache");
  test::write_file(dir.file("d.jsonl"), R"({"instruction": "Add.", "output": "3"})" "\n");
  const ToyTokenizer tok;
  const ExampleEncoder enc(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), {});
  const auto examples = enc.encode_all(read_dataset(dir.file("d.jsonl"), {}));
  const uint64_t key = token_cache_key(dir.file("d.jsonl"), tok, enc);
  const std::string cache = dir.file("d.cache");
  EXPECT_FALSE(load_token_cache(cache, key).has_value());
  save_token_cache(cache, key, examples);
  EXPECT_FALSE(std::filesystem::exists(cache + ".tmp." + std::to_string(::getpid())));
  const auto loaded = load_token_cache(cache, key);
  ASSERT_TRUE(loaded.has_value());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].ids, examples[0].ids);
  EXPECT_EQ((*loaded)[0].labels, examples[0].labels);
  // Another template, max_len, tokenizer or file content changes the key.
  EncodeOptions opt;
  opt.max_len = 100;
  EXPECT_NE(token_cache_key(dir.file("d.jsonl"), tok, ExampleEncoder(tok, ChatTemplate::builtin("chatml", "<s>", "</s>"), {})), key);
  EXPECT_NE(token_cache_key(dir.file("d.jsonl"), tok, ExampleEncoder(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), opt)), key);
  EXPECT_NE(token_cache_key(dir.file("d.jsonl"), ToyTokenizer(5), enc), key);
  EXPECT_FALSE(load_token_cache(cache, key + 1).has_value());
  test::write_file(dir.file("d.jsonl"), R"({"instruction": "Add.", "output": "4"})" "\n");
  EXPECT_NE(token_cache_key(dir.file("d.jsonl"), tok, enc), key);
  // A truncated cache file is treated as absent.
  const auto size = std::filesystem::file_size(cache);
  std::filesystem::resize_file(cache, size - 3);
  EXPECT_FALSE(load_token_cache(cache, key).has_value());
}

TEST(TokenCache, EncodeDatasetCached) {
  test::ScratchDir dir("qlora_token_cache_dataset");
  test::write_file(dir.file("d.jsonl"), R"({"instruction": "Add.", "output": "3"})" "\n" R"({"instruction": "x"})" "\n");
  const ToyTokenizer tok;
  const ExampleEncoder enc(tok, ChatTemplate::builtin("alpaca", "<s>", "</s>"), {});
  const auto first = encode_dataset_cached(dir.file("d.jsonl"), {}, tok, enc, dir.file("cache"));
  EXPECT_FALSE(first.from_cache);
  EXPECT_EQ(first.read.skipped, 1u);
  ASSERT_EQ(first.examples.size(), 1u);
  const auto second = encode_dataset_cached(dir.file("d.jsonl"), {}, tok, enc, dir.file("cache"));
  EXPECT_TRUE(second.from_cache);
  EXPECT_EQ(second.cache_path, first.cache_path);
  ASSERT_EQ(second.examples.size(), 1u);
  EXPECT_EQ(second.examples[0].labels, first.examples[0].labels);
  DatasetOptions mapped;
  mapped.fields.output = "answer";
  EXPECT_FALSE(encode_dataset_cached(dir.file("d.jsonl"), mapped, tok, enc, dir.file("cache")).from_cache);
  EXPECT_FALSE(encode_dataset_cached(dir.file("d.jsonl"), {}, tok, enc, "").from_cache);
}

}  // namespace
}  // namespace qlora
