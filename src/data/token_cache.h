// On-disk cache of encoded examples, so a dataset is tokenized once. The key hashes everything
// that changes the result: the dataset file's bytes, the tokenizer (kind, vocabulary, special
// ids), the template source and the encode options. Files are written atomically (a temporary
// file, then rename), so a crash never leaves a half-written cache that a later run would trust.
// Format (little-endian): magic "QLTC", u32 version, u64 key, u64 count, then per example
// u8 truncated, u32 n, n x i32 ids, n x i32 labels.
// Tested in tests/data/test_example_encoder.cpp.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/example_encoder.h"
#include "data/tokenizer.h"

namespace qlora {

// 64-bit FNV-1a.
uint64_t fnv1a64(const void* data, size_t n, uint64_t hash = 0xcbf29ce484222325ull);
// FNV-1a of a file's bytes, read in blocks; throws Error naming an unreadable file.
uint64_t hash_file(const std::string& path, uint64_t hash = 0xcbf29ce484222325ull);
// Identity of a tokenizer's behaviour: kind, every token's text, BOS/EOS/PAD.
uint64_t hash_tokenizer(const Tokenizer& tokenizer, uint64_t hash = 0xcbf29ce484222325ull);

// The key for a dataset file encoded by `encoder` (tokenizer, template, options).
uint64_t token_cache_key(const std::string& dataset_path, const Tokenizer& tokenizer, const ExampleEncoder& encoder);

// Writes the cache atomically; throws Error naming the file on an I/O failure.
void save_token_cache(const std::string& path, uint64_t key, const std::vector<EncodedExample>& examples);
// The cached examples when the file exists, is well formed and has this key; nullopt otherwise
// (a stale or corrupt cache is simply rebuilt).
std::optional<std::vector<EncodedExample>> load_token_cache(const std::string& path, uint64_t key);

struct CachedEncodeResult {
  std::vector<EncodedExample> examples;
  DatasetStats read;     // zeros when loaded from the cache
  EncodeStats encode;    // zeros when loaded from the cache
  bool from_cache = false;
  std::string cache_path;  // empty when no cache folder was given
};
// Reads and encodes a dataset file, through the cache in `cache_dir` (created when missing; empty:
// no cache). The cache file is named by the key, so a changed file, tokenizer, template or option
// never reads a stale one.
CachedEncodeResult encode_dataset_cached(const std::string& dataset_path, const DatasetOptions& read_options,
                                         const Tokenizer& tokenizer, const ExampleEncoder& encoder,
                                         const std::string& cache_dir);

}  // namespace qlora
