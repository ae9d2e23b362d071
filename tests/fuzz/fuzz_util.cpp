// Scratch files, tensor touching and the tokenizer workout for the fuzz targets; see fuzz_util.h.
#include "fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "core/tensor.h"
#include "data/tokenizer.h"

namespace qlora::fuzz {

namespace fs = std::filesystem;

std::string scratch_dir() {
  static const std::string dir = [] {
    const fs::path d = fs::temp_directory_path() / ("qlora-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("qlora-fuzz-" + std::to_string(::getpid())), ec);
    });
    return d.string();
  }();
  return dir;
}

std::string write_input(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("fuzz: cannot write " + path);  // a harness problem, not a finding
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

uint64_t touch(const Tensor& t) {
  if (!t.defined()) return 0;
  // Walks numel() elements rather than nbytes(): a byte count that wrapped around 2^64 would be
  // small too, and the point is to fault on a shape larger than its storage.
  const auto* p = static_cast<const uint8_t*>(t.raw());
  const size_t step = dtype_size(t.dtype());
  uint64_t sum = 0;
  for (int64_t i = 0; i < t.numel(); ++i)
    for (size_t b = 0; b < step; ++b) sum += p[size_t(i) * step + b];
  return sum;
}

void exercise(const Tokenizer& tok) {
  const int32_t n = tok.vocab_size();
  for (const char* text : {"Hello world", " <s>  </s>\n\t<|im_start|>user\xE2\x96\x81 12345 \xF0\x9F\x98\x80",
                           "\xFF\xFE invalid \xC3 utf8", ""}) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(text, special, special);
      int32_t prev = -1;
      for (int32_t id : ids) {
        if (id < 0 || id >= n) throw std::logic_error("fuzz: encode produced an id outside the vocabulary");
        (void)tok.decode_token(id, prev);
        prev = id;
      }
      (void)tok.decode(ids);
    }
  }
  // Every id near the edges, and the specials.
  for (int32_t id : {0, 1, 2, 3, n / 2, n - 2, n - 1, tok.bos_id(), tok.eos_id(), tok.pad_id()}) {
    if (id < 0 || id >= n) continue;
    (void)tok.token_text(id);
    (void)tok.decode_token(id, -1);
    (void)tok.token_id(tok.token_text(id));
    (void)tok.is_special(id);
    (void)tok.is_eog(id);
  }
}

}  // namespace qlora::fuzz
