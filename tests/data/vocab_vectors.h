// Reads llama.cpp's tokenizer test vectors (shared/data/llama-cpp-vocab-tests): a .inp file of
// strings, each followed by "\n__ggml_vocab_test__\n", and a .out file with one line of
// space-separated ids (no BOS) per string, as llama.cpp's tests/test-tokenizer-0.cpp reads them.
#pragma once
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace qlora::test {

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Empty when the files are missing; the caller skips.
inline std::vector<VocabCase> read_vocab_cases(const std::string& inp_path, const std::string& out_path) {
  std::vector<VocabCase> cases;
  std::string inp = read_all(inp_path), out = read_all(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size()) {
    cases.push_back({inp.substr(pos, next - pos), {}});
  }
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; std::getline(lines, line) && i < cases.size(); ++i) {
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  return cases;
}

inline std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

// Encodes every case as llama.cpp's test does (no BOS, parse_special = false); returns how
// many match and adds a failure per mismatch.
inline int count_matches(const Tokenizer& tok, const std::vector<VocabCase>& cases, const std::string& name,
                         std::vector<std::string>* mismatches = nullptr) {
  int ok = 0;
  for (const VocabCase& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, false, false);
    if (got == c.ids) {
      ++ok;
    } else if (mismatches) {
      mismatches->push_back(name + ": '" + c.text + "'\n  expected" + ids_to_string(c.ids) + "\n  got     " +
                            ids_to_string(got));
    }
  }
  return ok;
}

}  // namespace qlora::test
