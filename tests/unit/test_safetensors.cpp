// safetensors reader/writer: a write -> read round trip over every dtype we write, and one
// hand-made bad file per validation rule, each error naming the file (and the tensor).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace qlora {
namespace {

using test::expect_error;
using test::TempDir;

// A raw safetensors file: u64 header length, the header text verbatim, `data_bytes` zero bytes.
std::string write_raw(const TempDir& dir, const std::string& header, size_t data_bytes,
                      const std::string& name = "bad.safetensors") {
  test::Bytes out;
  out.put(uint64_t(header.size()));
  out.put_raw(header.data(), header.size());
  out.b.resize(out.b.size() + data_bytes, 0);
  const std::string path = dir.file(name);
  test::write_bytes(path, out.b);
  return path;
}

TEST(Safetensors, RoundTripKeepsValuesOrderAndMetadata) {
  TempDir dir;
  const unsigned seed = 1234;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  SCOPED_TRACE("seed " + std::to_string(seed));

  Tensor a = Tensor::zeros({3, 5});
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = normal(rng);
  Tensor b = a.to(DType::BF16);
  Tensor c = Tensor::zeros({7}, DType::I64);
  for (int64_t i = 0; i < 7; ++i) c.data<int64_t>()[i] = i * 1000000007LL - 3;
  Tensor d = a.to(DType::F16).reshape({5, 3});
  Tensor empty = Tensor::zeros({0, 4});
  Tensor scalar = Tensor::zeros({}, DType::U8);
  scalar.data<uint8_t>()[0] = 200;

  const std::string path = dir.file("x.safetensors");
  write_safetensors(path, {{"z.first", a}, {"a.second", b}, {"ints", c}, {"half", d}, {"empty", empty},
                           {"scalar", scalar}},
                    {{"format", "pt"}, {"note", "hello"}});
  // Atomic write leaves no temp file behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
  // The data section starts 8-byte aligned.
  const auto raw = test::read_bytes(path);
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"z.first", "a.second", "ints", "half", "empty", "scalar"}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");
  auto same_bytes = [](const Tensor& x, const Tensor& y) {
    ASSERT_EQ(x.dtype(), y.dtype());
    ASSERT_EQ(x.shape(), y.shape());
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  };
  same_bytes(f.get("z.first"), a);
  same_bytes(f.get("a.second"), b);
  same_bytes(f.get("ints"), c);
  same_bytes(f.get("half"), d);
  EXPECT_EQ(f.get("empty").shape(), (Shape{0, 4}));
  EXPECT_EQ(f.get("scalar").data<uint8_t>()[0], 200);
  EXPECT_TRUE(f.contains("ints"));
  EXPECT_FALSE(f.contains("nope"));

  // A tensor outlives the file object (the mapping is shared).
  Tensor kept;
  {
    const SafetensorsFile g = SafetensorsFile::open(path);
    kept = g.get("z.first");
  }
  EXPECT_EQ(kept.data<float>()[4], a.data<float>()[4]);

  // Overwriting replaces the file as a whole.
  write_safetensors(path, {{"only", c}});
  EXPECT_EQ(SafetensorsFile::open(path).names(), std::vector<std::string>{"only"});
}

TEST(Safetensors, MissingTensorNamesFileAndTensor) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, {{"a", Tensor::zeros({2})}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  expect_error([&] { f.get("model.norm.weight"); }, {"[safetensors]", "model.norm.weight", path});
}

TEST(Safetensors, TruncatedFileNamesFileAndTensor) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"a", Tensor::zeros({4})}, {"b", Tensor::zeros({8})}});
  auto bytes = test::read_bytes(path);
  bytes.resize(bytes.size() - 5);
  test::write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile::open(path); }, {"[safetensors]", path, "tensor b", "truncated"});
  // Shorter than the length prefix.
  test::write_bytes(path, {1, 2, 3});
  expect_error([&] { SafetensorsFile::open(path); }, {path, "truncated"});
}

TEST(Safetensors, EveryPrefixOfAFileIsRejected) {
  TempDir dir;
  const std::string path = dir.file("p.safetensors");
  write_safetensors(path, {{"a", Tensor::zeros({3})}, {"b", Tensor::zeros({2}, DType::BF16)}});
  const auto bytes = test::read_bytes(path);
  for (size_t n = 0; n < bytes.size(); ++n) {
    test::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    EXPECT_THROW(SafetensorsFile::open(path), Error) << "prefix of " << n << " bytes";
  }
}

TEST(Safetensors, HeaderLengthPastTheEnd) {
  TempDir dir;
  test::Bytes out;
  out.put(uint64_t(1000));
  out.put_raw("{}", 2);
  const std::string path = dir.file("h.safetensors");
  test::write_bytes(path, out.b);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header length 1000", "past the end"});
}

TEST(Safetensors, MalformedJson) {
  TempDir dir;
  const std::string path = write_raw(dir, R"({"a": {"dtype": "F32", )", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "malformed JSON"});
  const std::string arr = write_raw(dir, "[1, 2]", 0, "arr.safetensors");
  expect_error([&] { SafetensorsFile::open(arr); }, {arr, "JSON object"});
  const std::string fields = write_raw(dir, R"({"w": {"dtype": "F32"}})", 0, "fields.safetensors");
  expect_error([&] { SafetensorsFile::open(fields); }, {fields, "tensor w", "data_offsets"});
  const std::string neg = write_raw(dir, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
                                    4, "neg.safetensors");
  expect_error([&] { SafetensorsFile::open(neg); }, {neg, "tensor w", "shape"});
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string path =
      write_raw(dir, R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "tensor w", "unknown dtype", "F8_E4M3"});
}

TEST(Safetensors, OffsetsOutOfRange) {
  TempDir dir;
  const std::string path = write_raw(dir, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", 16);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "tensor w", "[8, 24]", "outside"});
  const std::string rev = write_raw(dir, R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 16,
                                    "rev.safetensors");
  expect_error([&] { SafetensorsFile::open(rev); }, {rev, "tensor w"});
}

TEST(Safetensors, OverlappingOffsets) {
  TempDir dir;
  const std::string path = write_raw(dir,
                                     R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                                     16);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "a", "b", "overlap"});
}

TEST(Safetensors, SizeMismatchWithShape) {
  TempDir dir;
  const std::string path = write_raw(dir, R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 24]}})", 24);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "tensor w", "24 bytes", "expected 12", "(2, 3)"});
}

// The streaming writer: declared entries in order, deferred tensors stored last with the header
// written into its reserved space; the file reads back like one written at once; misuse is an
// error and leaves no file behind.
TEST(SafetensorsStreamWriter, DeferredTensorsAndHeaderReservation) {
  TempDir dir;
  const std::string path = dir.file("s.safetensors");
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{7}, {1});
  {
    SafetensorsStreamWriter w(path, {{"a", DType::F32, {2, 3}}, {"b", DType::F32, {1}}}, {{"json", 100}},
                              {{"format", "pt"}});
    w.write("a", a);
    w.write_deferred("json", R"({"x": 1})");  // 8 of the 100 bytes reserved
    w.write("b", b);
    EXPECT_FALSE(std::filesystem::exists(path)) << "visible before commit";
    w.commit();
  }
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "json"}));
  EXPECT_EQ(f.get("a").data<float>()[5], 6.0f);
  EXPECT_EQ(f.get("b").data<float>()[0], 7.0f);
  const Tensor j = f.get("json");
  EXPECT_EQ(std::string(static_cast<const char*>(j.raw()), j.nbytes()), R"({"x": 1})");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  // Without deferred tensors the stream writer writes exactly what write_safetensors does.
  write_safetensors(dir.file("whole.safetensors"), {{"a", a}, {"b", b}});
  {
    SafetensorsStreamWriter w(dir.file("stream.safetensors"), {{"a", DType::F32, {2, 3}}, {"b", DType::F32, {1}}});
    w.write("a", a);
    w.write("b", b);
    w.commit();
  }
  EXPECT_EQ(test::read_bytes(dir.file("whole.safetensors")), test::read_bytes(dir.file("stream.safetensors")));
}

TEST(SafetensorsStreamWriter, MisuseIsAnErrorAndWritesNothing) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const Tensor a = Tensor::zeros({2});
  auto writer = [&] {
    return std::make_unique<SafetensorsStreamWriter>(
        path, std::vector<SafetensorsStreamWriter::Entry>{{"a", DType::F32, {2}}, {"b", DType::F32, {2}}},
        std::vector<SafetensorsStreamWriter::Deferred>{{"j", 4}});
  };
  expect_error([&] { writer()->write("b", a); }, {path, "tensor b written where a comes next"});
  expect_error([&] { writer()->write("a", Tensor::zeros({3})); }, {path, "tensor a", "declared f32 (2)"});
  expect_error([&] { writer()->write_deferred("j", "too long"); }, {path, "tensor j has 8 bytes; at most 4"});
  expect_error([&] { writer()->write_deferred("k", "x"); }, {path, "tensor k was not declared"});
  expect_error([&] {
    auto w = writer();
    w->write("a", a);
    w->commit();
  }, {path, "1 of 2 tensors written; b is missing"});
  expect_error([&] {
    auto w = writer();
    w->write("a", a), w->write("b", a);
    w->commit();
  }, {path, "deferred tensor j never given"});
  expect_error([&] { SafetensorsStreamWriter(path, {{"a", DType::F32, {2}}, {"a", DType::F32, {2}}}); },
               {path, "duplicate or reserved tensor name a"});
  EXPECT_FALSE(std::filesystem::exists(path));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    ADD_FAILURE() << "left behind: " << e.path();
}

TEST(Safetensors, HeaderNamingATensorTwice) {
  TempDir dir;
  const std::string path = dir.file("twice.safetensors");
  std::string json = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  json.append((8 - json.size() % 8) % 8, ' ');
  std::vector<uint8_t> bytes(8);
  const uint64_t n = json.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes.insert(bytes.end(), json.begin(), json.end());
  bytes.resize(bytes.size() + 8, 0);
  test::write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "names a twice"});
}

}  // namespace
}  // namespace qlora
