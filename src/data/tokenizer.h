// Tokenizer interface: text <-> token ids. Implementations: SentencePiece-style BPE (scores,
// byte fallback; llama2.c tokenizer.bin, tokenizer.model, GGUF "llama", tokenizer.json with
// Metaspace) and byte-level BPE (merges, GPT-2 byte map, regex pre-tokenizer; tokenizer.json,
// GGUF "gpt2", Llama 3 tiktoken tokenizer.model).
// Tested in tests/data/ against llama.cpp's vocab test vectors and HF tokenizers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qlora {

// A byte range [begin, end) of a text.
struct TextSpan {
  size_t begin = 0, end = 0;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text; prepends BOS when add_bos and the tokenizer has one. Special tokens written in
  // the text ("<|im_start|>", "<s>") become their ids when parse_special (Hugging Face's default);
  // added non-special tokens always do. Without parse_special the text is encoded as llama.cpp's
  // test-tokenizer-0 does (parse_special = false).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const { return encode(text, add_bos, true); }
  // As encode(text, add_bos, true), except that no special token is matched where it would overlap
  // one of `plain` (sorted, disjoint byte ranges of text that came from data, such as message
  // content): a "<s>" written there is encoded as text, as Hugging Face's split_special_tokens
  // encodes it, while the specials around it (a chat template's own) stay special.
  virtual std::vector<int32_t> encode_with_plain(std::string_view text, bool add_bos,
                                                 const std::vector<TextSpan>& plain) const = 0;
  // Where encode(text, .., true) matches a special (control) token in text, in order. Added
  // non-special tokens are not listed: they are matched with or without parse_special.
  virtual std::vector<TextSpan> special_spans(std::string_view text) const = 0;

  // The bytes one token stands for (byte tokens become their byte; SentencePiece's U+2581
  // becomes a space; control tokens become their text). `prev` lets SPM drop the dummy-prefix
  // space at the start (prev = -1) and after BOS or another special token.
  // Throws Error for an id out of range.
  virtual std::string decode_token(int32_t id, int32_t prev = -1) const = 0;
  // decode_token over the ids, each with its predecessor: decode(encode(s, ...)) == s. With
  // skip_special, control and unknown tokens (BOS, EOS, <|eot_id|>, ...) are left out (Hugging
  // Face's skip_special_tokens); they still count as the predecessor of the next token.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  virtual int32_t pad_id() const { return -1; }
  virtual bool is_eog(int32_t id) const { return id == eos_id(); }  // end of generation
  // Control, user-defined (added) or unknown token: matched whole in text before BPE.
  virtual bool is_special(int32_t id) const { return id == bos_id() || id == eos_id(); }
  // Control or unknown token: a special token that is not an added text token.
  virtual bool is_control(int32_t id) const { return is_special(id); }
  // Whether the model expects BOS at the start of every sequence (GGUF add_bos_token, HF
  // post-processor, SentencePiece/Llama 3 convention).
  virtual bool adds_bos() const { return bos_id() >= 0; }
  // The token as the vocabulary spells it ("▁Hello", "Ġworld", "<|im_start|>").
  virtual std::string token_text(int32_t id) const = 0;
  // The id of a token spelled as token_text spells it; -1 when there is none.
  virtual int32_t token_id(std::string_view text) const = 0;
  // "spm" or "bpe".
  virtual std::string kind() const = 0;
};

// Loads a tokenizer from a file: tokenizer.json, tokenizer.model (SentencePiece protobuf or
// tiktoken ranks), llama2.c tokenizer .bin, or a .gguf (model or tokenizer-only). A folder is
// searched as find_tokenizer_for_model does. Throws Error naming the file on a missing, unknown
// or corrupt file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Finds the tokenizer that belongs to a model: inside a GGUF, or beside the model file/folder
// (tokenizer.json, tokenizer.model, tokenizer.bin, tok*.bin). Throws Error naming the places
// it looked when there is none.
std::unique_ptr<Tokenizer> find_tokenizer_for_model(const std::string& model_path);

}  // namespace qlora
