// prepare_train_data: encode, cap, split, mix, pack. See train_data.h.
#include "train/train_data.h"

#include <fmt/core.h>

#include "core/error.h"
#include "data/dataset_mix.h"
#include "data/token_cache.h"

namespace qlora {
namespace {

std::vector<EncodedExample> encode_file(const TrainDatasetSpec& d, const Tokenizer& tok, const ExampleEncoder& encoder,
                                        const TrainDataOptions& o, std::vector<std::string>& warnings) {
  DatasetOptions options;
  options.format = dataset_format_from_name(d.type);
  if (!d.fields.empty()) options.fields = parse_field_map(d.fields);
  CachedEncodeResult r = encode_dataset_cached(d.path, options, tok, encoder, o.cache_dir);
  if (r.read.skipped)
    warnings.push_back(fmt::format("{}: skipped {} bad records (first: {})", d.path, r.read.skipped,
                                   r.read.messages.empty() ? "" : r.read.messages[0]));
  if (o.max_examples > 0 && int64_t(r.examples.size()) > o.max_examples) r.examples.resize(size_t(o.max_examples));
  if (r.examples.empty()) {
    // Name what removed them: bad records, or a sequence_len that leaves no response token.
    if (r.encode.no_labels > 0)
      fail("train",
           "{}: no usable examples: all {} have no response token left after truncation to key 'sequence_len' {}; "
           "raise sequence_len",
           d.path, r.encode.no_labels, o.sequence_len);
    fail("train", "{}: no usable examples ({} records read, {} skipped as bad; key 'sequence_len' is {})", d.path,
         r.read.examples, r.read.skipped, o.sequence_len);
  }
  return std::move(r.examples);
}

}  // namespace

TrainData prepare_train_data(const TrainDataOptions& o, const Tokenizer& tok, const ExampleEncoder& encoder) {
  if (o.datasets.empty()) fail("train", "no datasets");
  TrainData out;
  std::vector<std::vector<EncodedExample>> train_parts;
  std::vector<EncodedExample> validation;
  for (size_t i = 0; i < o.datasets.size(); ++i) {
    std::vector<EncodedExample> all = encode_file(o.datasets[i], tok, encoder, o, out.warnings);
    std::vector<EncodedExample> train;
    if (o.val_dataset.empty() && o.val_set_size > 0) {
      const SplitIndices split = split_indices(all.size(), o.val_set_size, o.seed + i);
      for (size_t j : split.train) train.push_back(all[j]);
      for (size_t j : split.validation) validation.push_back(all[j]);
    } else {
      train = std::move(all);
    }
    train_parts.push_back(std::move(train));
  }
  if (!o.val_dataset.empty()) {  // read as the first dataset is (type, field names)
    TrainDatasetSpec spec = o.datasets[0];
    spec.path = o.val_dataset;
    validation = encode_file(spec, tok, encoder, o, out.warnings);
  }

  std::vector<EncodedExample> train;
  if (train_parts.size() == 1) {
    train = std::move(train_parts[0]);
  } else {  // multi-task mixing by weight
    std::vector<size_t> sizes;
    std::vector<double> weights;
    size_t total = 0;
    for (size_t i = 0; i < train_parts.size(); ++i) {
      sizes.push_back(train_parts[i].size()), weights.push_back(o.datasets[i].weight), total += train_parts[i].size();
    }
    for (const auto& [d, j] : mix_datasets(sizes, weights, total, o.seed)) train.push_back(train_parts[d][j]);
  }
  if (train.empty()) fail("train", "no training examples left after the validation split");
  out.train_examples = train.size(), out.validation_examples = validation.size();
  const int32_t pad = pad_id_for(tok);
  const int seq = int(o.sequence_len);
  out.train = o.sample_packing ? pack_examples(train, seq, pad) : pad_examples(train, seq, pad);
  if (!validation.empty())
    out.validation = o.sample_packing ? pack_examples(validation, seq, pad) : pad_examples(validation, seq, pad);
  return out;
}

}  // namespace qlora
