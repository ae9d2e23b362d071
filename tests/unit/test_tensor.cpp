// core/tensor.h, core/device.h and core/rng.h: views share storage and bound-check, reshape and
// slice keep the offset, conversions round as torch does, host and device tensors are told apart
// (describe names the device), and the seeded Rng gives the same stream on every platform.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/host_memory.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace qlora {
namespace {

TEST(Tensor, ViewsShareStorageAndKeepOffsets) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.offset(), 2 * sizeof(float));
  EXPECT_EQ(rows.storage(), t.storage());
  rows.data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[2], 42);
  EXPECT_EQ(t.reshape({6}).data<float>()[5], 5);
  EXPECT_THROW(t.reshape({4}), Error);
  EXPECT_THROW(Tensor::from_vector({1, 2}, {3}), Error);
  // An explicit view of a flat buffer, as the engine's parameter buffers are laid out.
  Tensor flat = Tensor::zeros({16});
  Tensor view({2, 2}, DType::F32, flat.storage(), 8 * sizeof(float));
  view.data<float>()[3] = 7;
  EXPECT_EQ(flat.data<float>()[11], 7);
}

TEST(Tensor, ConversionsAndClones) {
  Tensor t = Tensor::from_vector({1.0f, 1.00390625f, -2.5f}, {3});
  Tensor b = t.to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(b.to(DType::F32).data<float>()[1], 1.0f);  // 1 + 2^-8 ties to even
  EXPECT_EQ(t.to(DType::F32).raw(), t.raw());           // same dtype: no copy
  Tensor c = t.clone();
  EXPECT_NE(c.raw(), t.raw());
  EXPECT_EQ(c.data<float>()[2], -2.5f);
  EXPECT_EQ(t.to(DType::F64).data<double>()[2], -2.5);
}

TEST(Tensor, DevicesAreNamedAndHostTensorsAreHost) {
  EXPECT_EQ(kHostDevice.name(), "cpu");
  EXPECT_EQ((Device{DeviceKind::Cuda, 1}).name(), "cuda:1");
  EXPECT_TRUE(kHostDevice.host_accessible());
  EXPECT_FALSE((Device{DeviceKind::Emulated, 0}).host_accessible());
  Tensor host = Tensor::zeros({2});
  EXPECT_TRUE(host.on_host());
  EXPECT_EQ(host.describe(), "f32 (2)");
  // A storage adopted from another device keeps its tag, and says so.
  static float memory[4];
  Tensor dev({4}, DType::F32, Storage::adopt(memory, sizeof(memory), {DeviceKind::Cuda, 0}, nullptr));
  EXPECT_FALSE(dev.on_host());
  EXPECT_EQ(dev.device(), (Device{DeviceKind::Cuda, 0}));
  EXPECT_EQ(dev.describe(), "f32 (4) on cuda:0");
}

// Host blocks are zero and 64-byte aligned; large ones are mappings of their own (page-aligned),
// so freeing a released weight gives its pages back.
TEST(HostMemory, ZeroedAlignedAndLargeBlocksMapped) {
  for (size_t bytes : {size_t(100), kHostMapMinBytes - 8, kHostMapMinBytes, size_t(3) << 20}) {
    SCOPED_TRACE(bytes);
    auto* p = static_cast<unsigned char*>(host_allocate(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    if (bytes >= kHostMapMinBytes) EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
    for (size_t i = 0; i < bytes; i += 997) ASSERT_EQ(p[i], 0);
    p[bytes - 1] = 1;  // writable to the last byte
    host_free(p, bytes);
  }
  EXPECT_EQ(host_allocate(0), nullptr);
  host_free(nullptr, 0);
}

TEST(Rng, SameStreamEverywhere) {
  // splitmix64's published first output for seed 0, and a fixed xoshiro256** stream.
  EXPECT_EQ(splitmix64(0), 0xe220a8397b1dcdafull);
  Rng a(7), b(7), c(8);
  const uint64_t first = a.next_u64();
  EXPECT_EQ(first, b.next_u64());
  EXPECT_NE(first, c.next_u64());
  for (int i = 0; i < 1000; ++i) {
    const float u = a.uniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
}

}  // namespace
}  // namespace qlora
