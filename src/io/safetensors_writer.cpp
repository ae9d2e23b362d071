// safetensors writers (declared in io/safetensors.h): the header of declared entries, reserved and
// written last when some tensors are deferred; the data streamed through an AtomicFile.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace qlora {

struct SafetensorsStreamWriter::Impl {
  std::string path;
  std::vector<Entry> entries;
  std::vector<Deferred> deferred;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> deferred_bytes;  // by index of `deferred`; empty until given
  std::vector<bool> deferred_given;
  size_t next = 0;           // index of the next entry write() expects
  uint64_t header_room = 0;  // bytes reserved for the header (a multiple of 8)
  AtomicFile file;

  Impl(std::string p, std::vector<Entry> e, std::vector<Deferred> d, std::map<std::string, std::string> m)
      : path(std::move(p)), entries(std::move(e)), deferred(std::move(d)), metadata(std::move(m)),
        deferred_bytes(deferred.size()), deferred_given(deferred.size(), false), file(path, "safetensors") {}

  // The header JSON for the entries and the deferred tensors at the given sizes, data in
  // declared order with the deferred ones last.
  std::string header(const std::vector<size_t>& deferred_sizes) const {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
      nlohmann::ordered_json meta = nlohmann::ordered_json::object();
      for (const auto& [k, v] : metadata) meta[k] = v;
      h["__metadata__"] = std::move(meta);
    }
    uint64_t offset = 0;
    auto add = [&](const std::string& name, DType dtype, const Shape& shape, size_t bytes) {
      if (name == "__metadata__" || h.contains(name))
        fail("safetensors", "cannot write {}: duplicate or reserved tensor name {}", path, name);
      h[name] = {{"dtype", safetensors_dtype_name(dtype)}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    };
    for (const Entry& e : entries) add(e.name, e.dtype, e.shape, size_t(shape_numel(e.shape)) * dtype_size(e.dtype));
    for (size_t i = 0; i < deferred.size(); ++i)
      add(deferred[i].name, DType::U8, {int64_t(deferred_sizes[i])}, deferred_sizes[i]);
    return h.dump();
  }
};

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, std::vector<Entry> entries,
                                                 std::vector<Deferred> deferred,
                                                 std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>(std::move(path), std::move(entries), std::move(deferred), std::move(metadata))) {
  // Room for the header with every deferred tensor at its bound: offsets can only be smaller (no
  // more digits), sizes no longer. Without deferred tensors this is the exact header.
  std::vector<size_t> bounds;
  for (const Deferred& d : impl_->deferred) bounds.push_back(d.max_bytes);
  const std::string json = impl_->header(bounds);
  // Padded so the data section starts 8-byte aligned (as the reference writer does).
  impl_->header_room = (json.size() + 7) / 8 * 8;
  const uint64_t zero = 0;
  impl_->file.write(&zero, 8);
  const std::string hole(impl_->header_room, ' ');
  impl_->file.write(hole);
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::write(const std::string& name, const Tensor& t) {
  Impl& m = *impl_;
  if (m.next >= m.entries.size()) fail("safetensors", "{}: tensor {} written but all entries are done", m.path, name);
  const Entry& e = m.entries[m.next];
  if (e.name != name) fail("safetensors", "{}: tensor {} written where {} comes next", m.path, name, e.name);
  if (!t.defined() || t.dtype() != e.dtype || t.shape() != e.shape)
    fail("safetensors", "{}: tensor {} is {}; declared {} {}", m.path, name, t.defined() ? t.describe() : "undefined",
         dtype_name(e.dtype), shape_str(e.shape));
  m.file.write(t.raw(), t.nbytes());
  ++m.next;
}

void SafetensorsStreamWriter::write_deferred(const std::string& name, std::string bytes) {
  Impl& m = *impl_;
  for (size_t i = 0; i < m.deferred.size(); ++i) {
    if (m.deferred[i].name != name) continue;
    if (bytes.size() > m.deferred[i].max_bytes)
      fail("safetensors", "{}: tensor {} has {} bytes; at most {} were reserved", m.path, name, bytes.size(),
           m.deferred[i].max_bytes);
    m.deferred_bytes[i] = std::move(bytes);
    m.deferred_given[i] = true;
    return;
  }
  fail("safetensors", "{}: tensor {} was not declared deferred", m.path, name);
}

void SafetensorsStreamWriter::commit() {
  Impl& m = *impl_;
  if (m.next != m.entries.size())
    fail("safetensors", "{}: {} of {} tensors written; {} is missing", m.path, m.next, m.entries.size(),
         m.entries[m.next].name);
  std::vector<size_t> sizes;
  for (size_t i = 0; i < m.deferred.size(); ++i) {
    if (!m.deferred_given[i]) fail("safetensors", "{}: deferred tensor {} never given", m.path, m.deferred[i].name);
    m.file.write(m.deferred_bytes[i]);
    sizes.push_back(m.deferred_bytes[i].size());
  }
  std::string json = m.header(sizes);
  QLORA_ASSERT(json.size() <= m.header_room, "{}: header {} bytes > {} reserved", m.path, json.size(), m.header_room);
  json.append(m.header_room - json.size(), ' ');
  const uint64_t n = m.header_room;
  m.file.write_at(0, &n, 8);
  m.file.write_at(8, json.data(), json.size());
  m.file.commit();
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail("safetensors", "cannot write {}: tensor {} is undefined", path, name);
    entries.push_back({name, t.dtype(), t.shape()});
  }
  SafetensorsStreamWriter writer(path, std::move(entries), {}, metadata);
  for (const auto& [name, t] : tensors) writer.write(name, t);
  writer.commit();
}

}  // namespace qlora
