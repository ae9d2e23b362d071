// SentencePiece tokenizer.model reader: a minimal protobuf decoder for the fields a BPE model
// needs (sentencepiece_model.proto). ModelProto: 1 pieces {1 piece, 2 score, 3 type},
// 2 trainer_spec {3 model_type, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id},
// 3 normalizer_spec {1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces}. Other fields are
// skipped; the normalization rule itself (precompiled_charsmap) is not applied, as llama.cpp does
// not apply it to SPM vocabularies. Tested in tests/data/test_tokenizer_spm.cpp (Llama 2 model).
#include <cstring>

#include "core/error.h"
#include "data/spm_tokenizer.h"
#include "data/tokenizer_loaders.h"

namespace qlora {
namespace {

// Protobuf wire format (protobuf.dev/programming-guides/encoding): varint keys
// (field << 3 | wire type); wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::string& path) : data_(data), path_(path) {}

  bool done() const { return pos_ >= data_.size(); }

  void next_key(uint32_t& field, uint32_t& wire) {
    const uint64_t key = varint();
    field = static_cast<uint32_t>(key >> 3);
    wire = static_cast<uint32_t>(key & 7);
  }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) corrupt("varint runs past the end");
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    corrupt("varint longer than 10 bytes");
  }

  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > data_.size() - pos_) corrupt(fmt::format("field of {} bytes with {} left", n, data_.size() - pos_));
    const std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  float fixed32_float() {
    if (data_.size() - pos_ < 4) corrupt("fixed32 runs past the end");
    float f;
    std::memcpy(&f, data_.data() + pos_, 4);
    pos_ += 4;
    return f;
  }

  void skip(uint32_t wire) {
    switch (wire) {
      case 0:
        varint();
        break;
      case 1:
        advance(8);
        break;
      case 2:
        bytes();
        break;
      case 5:
        advance(4);
        break;
      default:
        corrupt(fmt::format("unsupported wire type {}", wire));
    }
  }

  [[noreturn]] void corrupt(const std::string& what) const {
    fail("tokenizer", "{}: corrupt SentencePiece model at byte {}: {}; expected a ModelProto protobuf", path_, pos_,
         what);
  }

 private:
  void advance(size_t n) {
    if (data_.size() - pos_ < n) corrupt("fixed field runs past the end");
    pos_ += n;
  }

  std::string_view data_;
  const std::string& path_;
  size_t pos_ = 0;
};

VocabToken read_piece(std::string_view data, const std::string& path) {
  ProtoReader r(data, path);
  VocabToken t;
  while (!r.done()) {
    uint32_t field, wire;
    r.next_key(field, wire);
    if (field == 1 && wire == 2) {
      t.text = std::string(r.bytes());
    } else if (field == 2 && wire == 5) {
      t.score = r.fixed32_float();
    } else if (field == 3 && wire == 0) {
      const uint64_t type = r.varint();
      if (type < 1 || type > 6) r.corrupt(fmt::format("piece type {} (expected 1..6)", type));
      t.type = static_cast<TokenType>(type);
    } else {
      r.skip(wire);
    }
  }
  return t;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path, std::string_view data) {
  std::vector<VocabToken> tokens;
  // Defaults from sentencepiece_model.proto.
  int64_t model_type = 1, unk = 0, bos = 1, eos = 2, pad = -1;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;

  ProtoReader r(data, path);
  while (!r.done()) {
    uint32_t field, wire;
    r.next_key(field, wire);
    if (field == 1 && wire == 2) {
      tokens.push_back(read_piece(r.bytes(), path));
    } else if (field == 2 && wire == 2) {
      ProtoReader t(r.bytes(), path);
      while (!t.done()) {
        uint32_t f, w;
        t.next_key(f, w);
        // int32 fields: negative values arrive as 64-bit two's complement varints.
        if (w == 0 && (f == 3 || (f >= 40 && f <= 43))) {
          const auto v = static_cast<int64_t>(t.varint());
          (f == 3 ? model_type : f == 40 ? unk : f == 41 ? bos : f == 42 ? eos : pad) = v;
        } else {
          t.skip(w);
        }
      }
    } else if (field == 3 && wire == 2) {
      ProtoReader n(r.bytes(), path);
      while (!n.done()) {
        uint32_t f, w;
        n.next_key(f, w);
        if (w == 0 && f == 3) {
          add_dummy_prefix = n.varint() != 0;
        } else if (w == 0 && f == 4) {
          remove_extra_whitespaces = n.varint() != 0;
        } else {
          n.skip(w);
        }
      }
    } else {
      r.skip(wire);
    }
  }
  if (tokens.empty()) {
    fail("tokenizer", "{}: SentencePiece model has no pieces; expected a ModelProto with repeated pieces", path);
  }
  if (model_type != 2) {
    fail("tokenizer", "{}: SentencePiece model type {}; expected 2 (BPE) - unigram/word/char models are not supported",
         path, model_type == 1 ? "1 (unigram)" : std::to_string(model_type));
  }
  const auto n = static_cast<int64_t>(tokens.size());
  const auto id_or_none = [&](int64_t id) { return id >= 0 && id < n ? static_cast<int32_t>(id) : -1; };
  SpecialIds ids;
  ids.unk = id_or_none(unk);
  ids.bos = id_or_none(bos);
  ids.eos = id_or_none(eos);
  ids.pad = id_or_none(pad);
  SpmOptions options;
  options.add_bos = ids.bos >= 0;
  options.space_prefix = add_dummy_prefix ? SpmOptions::Prefix::Always : SpmOptions::Prefix::Never;
  options.remove_extra_whitespaces = remove_extra_whitespaces;
  return std::make_unique<SpmTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
}

}  // namespace qlora
