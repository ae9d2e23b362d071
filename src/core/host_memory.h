// Zero-filled, 64-byte aligned host memory for tensors. Blocks of kHostMapMinBytes and more are
// anonymous mappings of their own: freeing one returns its pages to the system at once, so a
// weight released during loading (each dense tensor dropped once it is quantized) really leaves
// the resident set, whatever the C allocator's heap looks like (glibc serves large blocks from its
// heap once its dynamic mmap threshold has risen, and keeps freed heap pages resident: measured
// +170 MiB RSS during the main job's training). Smaller blocks come from the C allocator.
// Tested in tests/unit/test_tensor.cpp.
#pragma once
#include <cstddef>

namespace qlora {

inline constexpr size_t kHostMapMinBytes = size_t(128) << 10;

// Throws Error naming the size when the system is out of memory. host_free(nullptr, 0) is a no-op.
void* host_allocate(size_t bytes);
void host_free(void* p, size_t bytes);

}  // namespace qlora
