// Instruction and chat datasets: Alpaca JSON (an array) or JSONL (instruction, input, output;
// other field names through FieldMap, e.g. GSM8K's question/answer), chat JSONL (`messages` with
// role/content, or ShareGPT `conversations` with from/value: human -> user, gpt -> assistant),
// Alpaca seed tasks (instruction + instances[{input, output}], one example per instance), and
// plain text for continued pre-training (chunks at line boundaries).
// JSONL and text are read lazily, one line / chunk at a time, so a dataset larger than memory
// streams; a JSON array is parsed whole.
// Bad records (malformed JSON, missing field, wrong type, empty output) throw Error naming file
// and line when strict, else are skipped and counted with the first few messages kept.
// Tested in tests/data/test_dataset.cpp (real files in ../shared/data, a fuzz test on corrupted
// JSONL).
#pragma once
#include <cstddef>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/chat_template.h"

namespace qlora {

struct Example {
  enum class Kind { Instruction, Chat, Text };
  Kind kind = Kind::Instruction;
  std::string instruction, input, output;  // Instruction
  std::vector<ChatMessage> messages;       // Chat
  std::string text;                        // Text
  std::string source;                      // "file:line" for messages
};

enum class DatasetFormat { Auto, Alpaca, Chat, Text };
// "auto", "alpaca", "chat", "text"; throws Error otherwise.
DatasetFormat dataset_format_from_name(const std::string& name);

// Which record fields hold the instruction, input and output.
struct FieldMap {
  std::string instruction = "instruction";
  std::string input = "input";
  std::string output = "output";
};
// "instruction=question,output=answer" (unnamed roles keep their defaults); throws Error on a
// malformed spec or an unknown role.
FieldMap parse_field_map(const std::string& spec);

struct DatasetOptions {
  DatasetFormat format = DatasetFormat::Auto;  // Auto: by extension (.txt text) and by record fields
  FieldMap fields;
  bool strict = false;              // error on the first bad record instead of skipping it
  size_t max_messages = 5;          // skip messages kept for the report when lenient
  size_t text_chunk_bytes = 4096;   // plain text: chunk size, cut at the last newline before it
};

struct DatasetStats {
  size_t examples = 0;
  size_t skipped = 0;
  std::vector<std::string> messages;  // the first max_messages skip reasons, "file:line: why"
};

// Streams the examples of one file.
class DatasetReader {
 public:
  DatasetReader(const std::string& path, const DatasetOptions& options);
  // The next example; false at the end. Throws Error (strict) or skips and counts bad records.
  bool next(Example& out);
  const DatasetStats& stats() const { return stats_; }

 private:
  bool next_record(nlohmann::json& record, size_t& line);
  void convert(const nlohmann::json& record, size_t line);
  void bad(size_t line, const std::string& why);
  bool next_text(Example& out);

  std::string path_;
  DatasetOptions options_;
  DatasetStats stats_;
  std::ifstream in_;
  bool text_mode_ = false;
  bool array_mode_ = false;
  nlohmann::json array_;
  size_t array_pos_ = 0;
  size_t line_ = 0;
  std::string carry_;  // text mode: bytes read but not yet emitted
  std::vector<Example> pending_;  // examples from the last record (seed tasks give several)
  size_t pending_pos_ = 0;
};

// Reads a whole file.
std::vector<Example> read_dataset(const std::string& path, const DatasetOptions& options,
                                  DatasetStats* stats = nullptr);

}  // namespace qlora
