// Where a Storage lives. Host memory is the CPU backend's device; a CUDA device's memory can only
// be reached through its backend; the emulated device is the test backend's: memory the host must
// not dereference (tests/unit/test_backend_seam.cpp keeps it PROT_NONE outside backend calls), so
// a test can prove the engine touches memory only through the backend.
// Tested in tests/unit/test_tensor.cpp.
#pragma once
#include <cstdint>
#include <string>

namespace qlora {

enum class DeviceKind : uint8_t { Cpu, Cuda, Emulated };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;

  // Whether the host may read and write this memory directly.
  bool host_accessible() const { return kind == DeviceKind::Cpu; }
  bool operator==(const Device&) const = default;
  std::string name() const;  // "cpu", "cuda:0", "emulated:0"
};

inline constexpr Device kHostDevice{};

}  // namespace qlora
