// Dataset readers: record -> Example conversion with per-record validation, JSONL streaming,
// JSON arrays, and plain-text chunking.
#include "data/dataset.h"

#include <filesystem>

#include "core/error.h"

namespace qlora {

using nlohmann::json;

namespace {

// A bad record: becomes an Error (strict) or a counted skip.
struct RecordError {
  std::string why;
};

std::string string_field(const json& record, const std::string& key, bool required, const char* what) {
  auto it = record.find(key);
  if (it == record.end() || it->is_null()) {
    if (required) throw RecordError{fmt::format("missing field '{}' ({})", key, what)};
    return {};
  }
  if (!it->is_string()) throw RecordError{fmt::format("field '{}' must be a string, got {}", key, it->type_name())};
  return it->get<std::string>();
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

std::vector<ChatMessage> chat_messages(const json& record) {
  const bool share_gpt = !record.contains("messages");
  const json& turns = share_gpt ? record["conversations"] : record["messages"];
  const char* list = share_gpt ? "conversations" : "messages";
  if (!turns.is_array()) throw RecordError{fmt::format("field '{}' must be an array, got {}", list, turns.type_name())};
  std::vector<ChatMessage> out;
  bool has_answer = false;
  for (size_t i = 0; i < turns.size(); ++i) {
    const json& t = turns[i];
    if (!t.is_object()) throw RecordError{fmt::format("{}[{}] must be an object, got {}", list, i, t.type_name())};
    ChatMessage m;
    if (share_gpt) {
      const std::string from = string_field(t, "from", true, "ShareGPT speaker");
      if (from == "human" || from == "user") m.role = "user";
      else if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "bing" || from == "bard") m.role = "assistant";
      else if (from == "system") m.role = "system";
      else throw RecordError{fmt::format("{}[{}]: unknown speaker '{}'; expected human, gpt or system", list, i, from)};
      m.content = string_field(t, "value", true, "turn text");
    } else {
      m.role = string_field(t, "role", true, "speaker");
      if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
        throw RecordError{fmt::format("{}[{}]: unknown role '{}'; expected system, user, assistant or tool", list, i, m.role)};
      m.content = string_field(t, "content", true, "turn text");
      // Reasoning models' datasets (Qwen3, DeepSeek-R1 distills) carry the thinking beside the answer.
      if (m.role == "assistant") m.reasoning_content = string_field(t, "reasoning_content", false, "thinking");
    }
    if (m.role == "assistant" && !blank(m.content + m.reasoning_content)) has_answer = true;
    out.push_back(std::move(m));
  }
  if (!has_answer) throw RecordError{"no assistant turn with content (nothing to train on)"};
  return out;
}

}  // namespace

DatasetFormat dataset_format_from_name(const std::string& name) {
  if (name == "auto") return DatasetFormat::Auto;
  if (name == "alpaca") return DatasetFormat::Alpaca;
  if (name == "chat") return DatasetFormat::Chat;
  if (name == "text") return DatasetFormat::Text;
  fail("dataset", "unknown dataset format '{}'; expected auto, alpaca, chat or text", name);
}

FieldMap parse_field_map(const std::string& spec) {
  FieldMap map;
  size_t pos = 0;
  while (pos < spec.size()) {
    const size_t comma = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      fail("dataset", "field map entry '{}': expected ROLE=FIELD (e.g. instruction=question,output=answer)", item);
    const std::string role = item.substr(0, eq), field = item.substr(eq + 1);
    if (role == "instruction") map.instruction = field;
    else if (role == "input") map.input = field;
    else if (role == "output") map.output = field;
    else fail("dataset", "field map: unknown role '{}'; expected instruction, input or output", role);
  }
  return map;
}

DatasetReader::DatasetReader(const std::string& path, const DatasetOptions& options)
    : path_(path), options_(options) {
  if (std::filesystem::is_directory(path)) fail("dataset", "{} is a folder; expected a .json, .jsonl or .txt file", path);
  in_.open(path, std::ios::binary);
  if (!in_) fail("dataset", "cannot open {}", path);
  const std::string ext = std::filesystem::path(path).extension().string();
  text_mode_ = options.format == DatasetFormat::Text ||
               (options.format == DatasetFormat::Auto && (ext == ".txt" || ext == ".text" || ext == ".md"));
  if (text_mode_) return;
  // A JSON array when the first non-blank byte is '['; otherwise JSON Lines.
  char c = 0;
  while (in_.get(c) && std::isspace(static_cast<unsigned char>(c))) {
  }
  in_.clear();
  in_.seekg(0);
  if (c == '[') {
    array_mode_ = true;
    try {
      array_ = json::parse(in_);
    } catch (const json::exception& e) {
      fail("dataset", "{}: invalid JSON array: {}", path, e.what());
    }
    in_.close();
  }
}

void DatasetReader::bad(size_t line, const std::string& why) {
  const std::string where = array_mode_ ? fmt::format("{}: record {}", path_, line) : fmt::format("{}:{}", path_, line);
  if (options_.strict) fail("dataset", "{}: {} (lenient mode skips such records)", where, why);
  ++stats_.skipped;
  if (stats_.messages.size() < options_.max_messages) stats_.messages.push_back(where + ": " + why);
}

bool DatasetReader::next_record(json& record, size_t& line) {
  if (array_mode_) {
    if (array_pos_ >= array_.size()) return false;
    line = array_pos_;  // records are numbered from 0 in an array
    record = std::move(array_[array_pos_++]);
    return true;
  }
  std::string text;
  while (std::getline(in_, text)) {
    ++line_;
    if (blank(text)) continue;
    line = line_;
    try {
      record = json::parse(text);
    } catch (const json::exception& e) {
      bad(line, fmt::format("malformed JSON: {}", e.what()));
      continue;
    }
    return true;
  }
  return false;
}

void DatasetReader::convert(const json& record, size_t line) {
  if (!record.is_object()) throw RecordError{fmt::format("expected a JSON object, got {}", record.type_name())};
  const std::string source = array_mode_ ? fmt::format("{}#{}", path_, line) : fmt::format("{}:{}", path_, line);
  const DatasetFormat f = options_.format;
  const bool chat = f == DatasetFormat::Chat ||
                    (f == DatasetFormat::Auto && (record.contains("messages") || record.contains("conversations")));
  if (chat) {
    if (!record.contains("messages") && !record.contains("conversations"))
      throw RecordError{"missing field 'messages' (or ShareGPT 'conversations')"};
    Example e;
    e.kind = Example::Kind::Chat;
    e.messages = chat_messages(record);
    e.source = source;
    pending_.push_back(std::move(e));
    return;
  }
  if (f == DatasetFormat::Auto && !record.contains(options_.fields.instruction) && record.contains("text")) {
    Example e;
    e.kind = Example::Kind::Text;
    e.text = string_field(record, "text", true, "document text");
    if (blank(e.text)) throw RecordError{"empty field 'text'"};
    e.source = source;
    pending_.push_back(std::move(e));
    return;
  }
  const FieldMap& m = options_.fields;
  const std::string instruction = string_field(record, m.instruction, true, "the instruction");
  if (blank(instruction)) throw RecordError{fmt::format("empty field '{}'", m.instruction)};
  // Alpaca seed tasks: one example per instance.
  if (!record.contains(m.output) && record.contains("instances")) {
    const json& instances = record["instances"];
    if (!instances.is_array() || instances.empty())
      throw RecordError{"field 'instances' must be a non-empty array"};
    for (size_t i = 0; i < instances.size(); ++i) {
      if (!instances[i].is_object()) throw RecordError{fmt::format("instances[{}] must be an object", i)};
      Example e;
      e.instruction = instruction;
      e.input = string_field(instances[i], m.input, false, "");
      e.output = string_field(instances[i], m.output, true, "the response");
      if (blank(e.output)) throw RecordError{fmt::format("instances[{}]: empty field '{}'", i, m.output)};
      e.source = source;
      pending_.push_back(std::move(e));
    }
    return;
  }
  Example e;
  e.instruction = instruction;
  e.input = string_field(record, m.input, false, "");
  e.output = string_field(record, m.output, true, "the response");
  if (blank(e.output)) throw RecordError{fmt::format("empty field '{}' (nothing to train on)", m.output)};
  e.source = source;
  pending_.push_back(std::move(e));
}

bool DatasetReader::next_text(Example& out) {
  const size_t chunk = std::max<size_t>(options_.text_chunk_bytes, 16);
  for (;;) {
    if (carry_.size() <= chunk && in_) {
      std::string buf(chunk, '\0');
      in_.read(buf.data(), static_cast<std::streamsize>(chunk));
      carry_.append(buf.data(), static_cast<size_t>(in_.gcount()));
    }
    if (carry_.empty()) return false;
    size_t cut = carry_.size();
    if (carry_.size() > chunk) {
      const size_t nl = carry_.rfind('\n', chunk - 1);
      if (nl != std::string::npos && nl > 0) {
        cut = nl + 1;
      } else {  // one long line: cut at a UTF-8 character boundary
        cut = chunk;
        while (cut > 0 && (static_cast<unsigned char>(carry_[cut]) & 0xC0) == 0x80) --cut;
        if (cut == 0) cut = chunk;
      }
    } else if (in_) {
      continue;  // read more first
    }
    std::string piece = carry_.substr(0, cut);
    carry_.erase(0, cut);
    ++line_;
    if (blank(piece)) continue;
    out = Example{};
    out.kind = Example::Kind::Text;
    out.text = std::move(piece);
    out.source = fmt::format("{} chunk {}", path_, line_);
    ++stats_.examples;
    return true;
  }
}

bool DatasetReader::next(Example& out) {
  if (text_mode_) return next_text(out);
  while (pending_pos_ >= pending_.size()) {
    pending_.clear();
    pending_pos_ = 0;
    json record;
    size_t line = 0;
    if (!next_record(record, line)) return false;
    try {
      convert(record, line);
    } catch (const RecordError& e) {
      pending_.clear();
      bad(line, e.why);
    }
  }
  out = std::move(pending_[pending_pos_++]);
  ++stats_.examples;
  return true;
}

std::vector<Example> read_dataset(const std::string& path, const DatasetOptions& options, DatasetStats* stats) {
  DatasetReader reader(path, options);
  std::vector<Example> out;
  Example e;
  while (reader.next(e)) out.push_back(std::move(e));
  if (stats) *stats = reader.stats();
  return out;
}

}  // namespace qlora
