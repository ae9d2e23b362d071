// JSON parsing that rejects an object naming a key twice. nlohmann keeps the last of duplicate
// keys silently, but a safetensors header naming a tensor twice, or a shard index sending one
// tensor to two files, is a broken file we must not guess about.
// Tested in tests/unit/test_safetensors.cpp and tests/unit/test_model_source.cpp.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qlora {

// Parses [begin, end) as JSON; on a repeated key in any object returns that key in `duplicate`
// (and the parse stops). Throws nlohmann::json::exception on malformed JSON, like parse().
template <typename Json, typename It>
Json parse_json_unique_keys(It begin, It end, std::optional<std::string>& duplicate) {
  std::vector<std::vector<std::string>> seen;  // keys of each open object
  duplicate.reset();
  typename Json::parser_callback_t check = [&](int, typename Json::parse_event_t event, Json& parsed) {
    using E = typename Json::parse_event_t;
    if (event == E::object_start) seen.emplace_back();
    if (event == E::object_end && !seen.empty()) seen.pop_back();
    if (event == E::key && !duplicate && !seen.empty()) {
      const std::string key = parsed.template get<std::string>();
      for (const std::string& k : seen.back())
        if (k == key) duplicate = key;
      seen.back().push_back(key);
    }
    return true;
  };
  return Json::parse(begin, end, check);
}

}  // namespace qlora
