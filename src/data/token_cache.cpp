// Tokenization cache: hashing, atomic write, validated read.
#include "data/token_cache.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace qlora {

namespace {

constexpr char kMagic[4] = {'Q', 'L', 'T', 'C'};
constexpr uint32_t kVersion = 2;  // 2: message content is encoded as plain text (specials in it stay text)

template <typename T>
uint64_t hash_value(const T& v, uint64_t h) {
  return fnv1a64(&v, sizeof(v), h);
}
uint64_t hash_string(const std::string& s, uint64_t h) {
  h = hash_value(uint64_t(s.size()), h);
  return fnv1a64(s.data(), s.size(), h);
}

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t hash) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

uint64_t hash_file(const std::string& path, uint64_t hash) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cache", "cannot read {}", path);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    hash = fnv1a64(buf.data(), size_t(in.gcount()), hash);
  }
  return hash;
}

uint64_t hash_tokenizer(const Tokenizer& tokenizer, uint64_t hash) {
  hash = hash_string(tokenizer.kind(), hash);
  const int32_t ids[] = {tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id(),
                         int32_t(tokenizer.adds_bos())};
  hash = fnv1a64(ids, sizeof(ids), hash);
  for (int32_t i = 0; i < tokenizer.vocab_size(); ++i) {
    hash = hash_string(tokenizer.token_text(i), hash);
    hash = hash_value(uint8_t(tokenizer.is_special(i)), hash);
  }
  return hash;
}

uint64_t token_cache_key(const std::string& dataset_path, const Tokenizer& tokenizer, const ExampleEncoder& encoder) {
  uint64_t h = hash_file(dataset_path);
  h = hash_tokenizer(tokenizer, h);
  h = hash_string(encoder.chat_template().name(), h);
  h = hash_string(encoder.chat_template().source(), h);
  h = hash_value(int64_t(encoder.options().max_len), h);
  h = hash_value(uint8_t(encoder.options().train_on_inputs), h);
  h = hash_value(uint8_t(encoder.options().parse_special_in_content), h);
  return hash_value(kVersion, h);
}

void save_token_cache(const std::string& path, uint64_t key, const std::vector<EncodedExample>& examples) {
  std::string data;
  data.append(kMagic, 4);
  put(data, kVersion);
  put(data, key);
  put(data, uint64_t(examples.size()));
  for (const auto& e : examples) {
    put(data, uint8_t(e.truncated));
    put(data, uint32_t(e.ids.size()));
    data.append(reinterpret_cast<const char*>(e.ids.data()), e.ids.size() * sizeof(int32_t));
    data.append(reinterpret_cast<const char*>(e.labels.data()), e.labels.size() * sizeof(int32_t));
  }
  write_file_atomically(path, data, "cache");
}

std::optional<std::vector<EncodedExample>> load_token_cache(const std::string& path, uint64_t key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  const std::string data((std::istreambuf_iterator<char>(in)), {});
  size_t pos = 0;
  auto get = [&](void* dst, size_t n) {
    if (data.size() - pos < n) return false;
    std::memcpy(dst, data.data() + pos, n);
    pos += n;
    return true;
  };
  char magic[4];
  uint32_t version = 0;
  uint64_t file_key = 0, count = 0;
  if (!get(magic, 4) || std::memcmp(magic, kMagic, 4) != 0 || !get(&version, 4) || version != kVersion ||
      !get(&file_key, 8) || file_key != key || !get(&count, 8))
    return std::nullopt;
  std::vector<EncodedExample> out;
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t truncated = 0;
    uint32_t n = 0;
    if (!get(&truncated, 1) || !get(&n, 4) || (data.size() - pos) / 8 < n) return std::nullopt;
    EncodedExample e;
    e.truncated = truncated != 0;
    e.ids.resize(n);
    e.labels.resize(n);
    get(e.ids.data(), size_t(n) * 4);
    get(e.labels.data(), size_t(n) * 4);
    out.push_back(std::move(e));
  }
  if (pos != data.size()) return std::nullopt;
  return out;
}

CachedEncodeResult encode_dataset_cached(const std::string& dataset_path, const DatasetOptions& read_options,
                                         const Tokenizer& tokenizer, const ExampleEncoder& encoder,
                                         const std::string& cache_dir) {
  CachedEncodeResult r;
  uint64_t key = 0;
  if (!cache_dir.empty()) {
    key = hash_value(uint8_t(read_options.format), token_cache_key(dataset_path, tokenizer, encoder));
    key = hash_string(read_options.fields.instruction + '\0' + read_options.fields.input + '\0' +
                          read_options.fields.output,
                      hash_value(uint64_t(read_options.text_chunk_bytes), key));
    std::error_code ec;
    std::filesystem::create_directories(cache_dir, ec);
    if (ec) fail("cache", "cannot create the cache folder {}: {}", cache_dir, ec.message());
    r.cache_path = (std::filesystem::path(cache_dir) / fmt::format("tokens-{:016x}.bin", key)).string();
    if (auto cached = load_token_cache(r.cache_path, key)) {
      r.examples = std::move(*cached);
      r.from_cache = true;
      return r;
    }
  }
  const std::vector<Example> examples = read_dataset(dataset_path, read_options, &r.read);
  r.examples = encoder.encode_all(examples, &r.encode);
  if (!cache_dir.empty()) save_token_cache(r.cache_path, key, r.examples);
  return r;
}

}  // namespace qlora
