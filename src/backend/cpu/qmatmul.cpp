// Fused 4-bit matmuls on the CPU. Code layout as bitsandbytes: flat element index i = n*K + k,
// byte i/2, high nibble for even i; block of element i is i / block_size (blocks may span rows
// when K % block_size != 0). A value is code_table[nibble] * absmax[block].
// Paths: small N (rows) with K % 32 == 0 and block_size % 32 == 0 (every real LLM weight) use AVX-512
// kernels that look the 16-entry code table up with vpermps straight from the packed bytes;
// other alignments and non-AVX-512 builds dequantize rows/slices into a small buffer (scalar at
// ragged edges). Large N dequantizes tiles in parallel, then calls the (multithreaded) sgemm
// outside the parallel region.
#include "backend/cpu/qmatmul.h"

#include <cblas.h>
#include <immintrin.h>

// GCC 12 reports its own _mm512_undefined_* placeholders inside inlined AVX-512 intrinsics as
// uninitialized (a false positive, GCC bug 105593); silence it for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <climits>

#include "core/error.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/quantize.h"

namespace qlora::cpu {

namespace {

// Everything a kernel needs to dequantize one element of w. The double-quantized absmax is decoded
// block by block where it is used (one multiply-add per block_size elements), so a call allocates
// nothing and never makes a serial pass over all n_blocks constants.
struct Dequant {
  const uint8_t* codes;
  const float* table;   // 16 code values
  int64_t block_size;
  const float* absmax = nullptr;  // (n_blocks) f32, or null with double quantization:
  const uint8_t* absmax_codes = nullptr;  // (n_blocks)
  const float* nested_absmax = nullptr;   // (n_blocks / nested_block_size)
  const float* map = nullptr;             // the 8-bit dynamic map
  int64_t nested_block_size = 256;
  float offset = 0.0f;

  float scale(int64_t block) const {
    if (absmax) return absmax[block];
    return map[absmax_codes[block]] * nested_absmax[block / nested_block_size] + offset;
  }
};

// Interleave indices for _mm512_permutex2var_ps(even, idx, odd): out[2i] = even[i], out[2i+1] = odd[i].
#if defined(__AVX512F__)
inline __m512i interleave_lo() {
  return _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}
inline __m512i interleave_hi() {
  return _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
}

// 32 elements starting at an even flat index, from 16 code bytes and a table already scaled by the
// block's absmax: `even` holds elements 0, 2, ..., 30 (high nibbles), `odd` elements 1, 3, ..., 31.
// vpermps reads only the low 4 bits of each index, so the low nibble needs no mask.
inline void lookup32(const uint8_t* bytes, __m512 table, __m512& even, __m512& odd) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
  even = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
  odd = _mm512_permutexvar_ps(v, table);
}
#endif

inline float dequant_one(const Dequant& d, int64_t i, float scale) {
  const uint8_t byte = d.codes[i >> 1];
  return d.table[(i & 1) ? (byte & 0x0f) : (byte >> 4)] * scale;
}

// out[0, count) = dequant(w) at flat indices [begin, begin + count). Vector path for 32-element runs
// that start at an even index inside one block; scalar for the ragged edges. Both compute
// table[c] * absmax in f32, so the two paths give bit-identical values.
void dequant_range(const Dequant& d, int64_t begin, int64_t count, float* out) {
  int64_t i = begin;
  const int64_t end = begin + count;
  for (int64_t block = begin / d.block_size; i < end; ++block) {
    const int64_t block_end = std::min((block + 1) * d.block_size, end);
    const float scale = d.scale(block);
    if (i & 1) *out++ = dequant_one(d, i++, scale);
#if defined(__AVX512F__)
    const __m512 table = _mm512_mul_ps(_mm512_loadu_ps(d.table), _mm512_set1_ps(scale));
    for (; i + 32 <= block_end; i += 32, out += 32) {
      __m512 even, odd;
      lookup32(d.codes + (i >> 1), table, even, odd);
      _mm512_storeu_ps(out, _mm512_permutex2var_ps(even, interleave_lo(), odd));
      _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(even, interleave_hi(), odd));
    }
#endif
    for (; i < block_end; ++i) *out++ = dequant_one(d, i, scale);
  }
}

float dot_f32(const float* a, const float* b, int64_t K) {
  int64_t k = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), acc1);
  }
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#endif
  for (; k < K; ++k) sum += a[k] * b[k];
  return sum;
}

// Forward: up to this many rows of x, the codes are dotted directly (dequantized in registers, once
// per group of 4 rows of x); above it, dequantized tiles feed sgemm. bench_qmatmul, 2 threads,
// AVX-512: at N = 16 direct was a few % faster than tiles (1536x576 and 4096x4096).
constexpr int64_t kDirectMaxRows = 16;
// Backward: up to this many rows of dy, each thread keeps a slice of dx in registers and streams the
// codes down its columns; the register budget (16 accumulators) caps this at 4 rows. The tiled
// form of the slice kernel (dequantize + axpy) was 2-3x slower than sgemm panels at N = 16.
constexpr int64_t kBackwardDirectMaxRows = 4;
// f32 elements per dequantized tile (2 MiB): large enough that each sgemm call is efficient, small
// enough to stay in L2/L3 between the dequant and the sgemm that reads it.
constexpr int64_t kTileElems = int64_t(1) << 19;

#if defined(__AVX512F__)
// x rows rearranged per 32-element chunk to match lookup32: the 16 even-index elements, then the
// 16 odd-index ones. Lets the direct kernel skip re-interleaving the weights.
std::vector<float> deinterleave_chunks(const float* x, int64_t N, int64_t K) {
  std::vector<float> out(size_t(N * K));
  for (int64_t m = 0; m < N; ++m)
    for (int64_t c = 0; c < K; c += 32)
      for (int j = 0; j < 16; ++j) {
        out[m * K + c + j] = x[m * K + c + 2 * j];
        out[m * K + c + 16 + j] = x[m * K + c + 2 * j + 1];
      }
  return out;
}

// y[m, n] = xd[m, :] · dequant(w[n, :]) for m < MB, with xd from deinterleave_chunks. Needs
// K % 32 == 0 and block_size % 32 == 0, so every 32-element chunk starts at an even flat index
// inside one block. Two chunks per step with separate accumulators hide the FMA latency at MB = 1.
template <int MB>
void direct_row(const Dequant& d, const float* xd, int64_t K, int64_t n, float* y, int64_t O) {
  __m512 acc[MB][4];
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
  const int64_t base = n * K;
  // One division per row; blocks then advance by addition (an int64 divide per 64 elements would
  // cost as much as the lookups).
  int64_t block = base / d.block_size;
  int64_t block_end = std::min(d.block_size - base % d.block_size, K);  // in k, exclusive
  for (int64_t k = 0; k < K; ++block, block_end = std::min(block_end + d.block_size, K)) {
    const __m512 table = _mm512_mul_ps(_mm512_loadu_ps(d.table), _mm512_set1_ps(d.scale(block)));
    for (; k + 64 <= block_end; k += 64) {
      __m512 e0, o0, e1, o1;
      lookup32(d.codes + ((base + k) >> 1), table, e0, o0);
      lookup32(d.codes + ((base + k) >> 1) + 16, table, e1, o1);
      for (int m = 0; m < MB; ++m) {
        const float* xm = xd + m * K + k;
        acc[m][0] = _mm512_fmadd_ps(_mm512_loadu_ps(xm), e0, acc[m][0]);
        acc[m][1] = _mm512_fmadd_ps(_mm512_loadu_ps(xm + 16), o0, acc[m][1]);
        acc[m][2] = _mm512_fmadd_ps(_mm512_loadu_ps(xm + 32), e1, acc[m][2]);
        acc[m][3] = _mm512_fmadd_ps(_mm512_loadu_ps(xm + 48), o1, acc[m][3]);
      }
    }
    for (; k + 32 <= block_end; k += 32) {
      __m512 e0, o0;
      lookup32(d.codes + ((base + k) >> 1), table, e0, o0);
      for (int m = 0; m < MB; ++m) {
        const float* xm = xd + m * K + k;
        acc[m][0] = _mm512_fmadd_ps(_mm512_loadu_ps(xm), e0, acc[m][0]);
        acc[m][1] = _mm512_fmadd_ps(_mm512_loadu_ps(xm + 16), o0, acc[m][1]);
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    y[m * O + n] = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]), _mm512_add_ps(acc[m][2], acc[m][3])));
}

// direct_row for rows n and n + 1 together: each load of x feeds two weight rows, which halves
// the loads per FMA (at N = 16 the single-row kernel is bound by loads of x). Each row tracks its
// own block, since with K % block_size != 0 the two rows' block boundaries differ.
template <int MB>
void direct_row_pair(const Dequant& d, const float* xd, int64_t K, int64_t n, float* y, int64_t O) {
  __m512 acc[MB][2][2];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < 2; ++r) acc[m][r][0] = acc[m][r][1] = _mm512_setzero_ps();
  const __m512 code = _mm512_loadu_ps(d.table);
  int64_t base[2], block[2], pos[2];
  __m512 table[2];
  for (int r = 0; r < 2; ++r) {
    base[r] = (n + r) * K;
    block[r] = base[r] / d.block_size;
    pos[r] = base[r] % d.block_size;
    table[r] = _mm512_mul_ps(code, _mm512_set1_ps(d.scale(block[r])));
  }
  for (int64_t k = 0; k < K; k += 32) {
    __m512 e[2], o[2];
    for (int r = 0; r < 2; ++r) {
      if (pos[r] >= d.block_size) {
        pos[r] -= d.block_size;
        table[r] = _mm512_mul_ps(code, _mm512_set1_ps(d.scale(++block[r])));
      }
      lookup32(d.codes + ((base[r] + k) >> 1), table[r], e[r], o[r]);
      pos[r] += 32;
    }
    for (int m = 0; m < MB; ++m) {
      const __m512 xe = _mm512_loadu_ps(xd + m * K + k), xo = _mm512_loadu_ps(xd + m * K + k + 16);
      for (int r = 0; r < 2; ++r) {
        acc[m][r][0] = _mm512_fmadd_ps(xe, e[r], acc[m][r][0]);
        acc[m][r][1] = _mm512_fmadd_ps(xo, o[r], acc[m][r][1]);
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < 2; ++r) y[m * O + n + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[m][r][0], acc[m][r][1]));
}

void forward_direct_aligned(const Dequant& d, const float* x, float* y, int64_t N, int64_t O, int64_t K) {
  const std::vector<float> xd = deinterleave_chunks(x, N, K);
  const int64_t n_pairs = O / 2;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n_pairs + O % 2; ++p) {
    const int64_t n = 2 * p;
    // Groups of up to 4 rows of x share one dequantization; the codes stay in L1 across groups.
    for (int64_t m0 = 0; m0 < N; m0 += 4) {
      const float* xm = xd.data() + m0 * K;
      float* ym = y + m0 * O;
      const int64_t mb = std::min<int64_t>(4, N - m0);
      if (p < n_pairs) {
        switch (mb) {
          case 1: direct_row_pair<1>(d, xm, K, n, ym, O); break;
          case 2: direct_row_pair<2>(d, xm, K, n, ym, O); break;
          case 3: direct_row_pair<3>(d, xm, K, n, ym, O); break;
          default: direct_row_pair<4>(d, xm, K, n, ym, O); break;
        }
      } else {  // the last row of an odd O
        switch (mb) {
          case 1: direct_row<1>(d, xm, K, n, ym, O); break;
          case 2: direct_row<2>(d, xm, K, n, ym, O); break;
          case 3: direct_row<3>(d, xm, K, n, ym, O); break;
          default: direct_row<4>(d, xm, K, n, ym, O); break;
        }
      }
    }
  }
}
#endif

// Any alignment: each thread dequantizes one row of w at a time into a K-float buffer.
void forward_direct_generic(const Dequant& d, const float* x, float* y, int64_t N, int64_t O, int64_t K) {
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < O; ++n) {
      dequant_range(d, n * K, K, row.data());
      for (int64_t m = 0; m < N; ++m) y[m * O + n] = dot_f32(x + m * K, row.data(), K);
    }
  }
}

// Any alignment: each thread owns a slice of dx's columns and walks all O rows of w, dequantizing
// just its slice of each row into an L1-resident buffer: dx[m, slice] += dy[m, n] * w[n, slice].
void backward_direct_generic(const Dequant& d, const float* dy, float* dx, int64_t N, int64_t O, int64_t K) {
  constexpr int64_t kSlice = 256;
  const int64_t n_slices = (K + kSlice - 1) / kSlice;
#pragma omp parallel
  {
    std::vector<float> buf(kSlice), acc(size_t(N * kSlice));
#pragma omp for schedule(static)
    for (int64_t s = 0; s < n_slices; ++s) {
      const int64_t k0 = s * kSlice, cols = std::min(kSlice, K - k0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = 0; n < O; ++n) {
        dequant_range(d, n * K + k0, cols, buf.data());
        for (int64_t m = 0; m < N; ++m) {
          const float g = dy[m * O + n];
          float* a = acc.data() + m * kSlice;
          for (int64_t c = 0; c < cols; ++c) a[c] += g * buf[c];
        }
      }
      for (int64_t m = 0; m < N; ++m) std::copy_n(acc.data() + m * kSlice, cols, dx + m * K + k0);
    }
  }
}

#if defined(__AVX512F__)
// dx[m, k0 : k0 + 32*CH] = sum_n dy[m, n] * w[n, k0 : k0 + 32*CH] for m < MB, with the whole slice
// of dx in registers (MB * CH * 2 <= 16 accumulators). Folding dy[m, n] into the scaled table makes
// each weight one lookup and one add; the accumulators hold even/odd elements apart and are
// interleaved once at the end. Needs K % 32 == 0, block_size % 32 == 0 and k0 % 32 == 0.
template <int MB, int CH>
void backward_slice(const Dequant& d, const float* dy, float* dx, int64_t O, int64_t K, int64_t k0) {
  __m512 acc[MB][CH][2];
  for (int m = 0; m < MB; ++m)
    for (int c = 0; c < CH; ++c) acc[m][c][0] = acc[m][c][1] = _mm512_setzero_ps();
  const __m512 table = _mm512_loadu_ps(d.table);
  for (int64_t n = 0; n < O; ++n) {
    const int64_t base = n * K + k0;
    int64_t block = base / d.block_size, pos = base % d.block_size;  // chunks step 32 <= block_size
    float g[MB];
    for (int m = 0; m < MB; ++m) g[m] = dy[m * O + n];
    for (int c = 0; c < CH; ++c, pos += 32) {
      if (pos >= d.block_size) pos -= d.block_size, ++block;
      const float scale = d.scale(block);
      const uint8_t* bytes = d.codes + (base >> 1) + 16 * c;
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
      const __m512i hi = _mm512_srli_epi32(v, 4);
      for (int m = 0; m < MB; ++m) {
        const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(scale * g[m]));
        acc[m][c][0] = _mm512_add_ps(acc[m][c][0], _mm512_permutexvar_ps(hi, t));
        acc[m][c][1] = _mm512_add_ps(acc[m][c][1], _mm512_permutexvar_ps(v, t));
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int c = 0; c < CH; ++c) {
      float* out = dx + m * K + k0 + 32 * c;
      _mm512_storeu_ps(out, _mm512_permutex2var_ps(acc[m][c][0], interleave_lo(), acc[m][c][1]));
      _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(acc[m][c][0], interleave_hi(), acc[m][c][1]));
    }
}

template <int MB>
void backward_direct_mb(const Dequant& d, const float* dy, float* dx, int64_t O, int64_t K) {
  constexpr int CH = 8 / MB;  // chunks of 32 per slice
  const int64_t n_full = K / (32 * CH), n_tail = (K % (32 * CH)) / 32;
  // Full slices first, then the leftover chunks one by one; dynamic, as they differ in cost.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < n_full + n_tail; ++t) {
    if (t < n_full) backward_slice<MB, CH>(d, dy, dx, O, K, t * 32 * CH);
    else backward_slice<MB, 1>(d, dy, dx, O, K, n_full * 32 * CH + (t - n_full) * 32);
  }
}

void backward_direct_aligned(const Dequant& d, const float* dy, float* dx, int64_t N, int64_t O, int64_t K) {
  switch (N) {
    case 1: return backward_direct_mb<1>(d, dy, dx, O, K);
    case 2: return backward_direct_mb<2>(d, dy, dx, O, K);
    case 3: return backward_direct_mb<3>(d, dy, dx, O, K);
    case 4: return backward_direct_mb<4>(d, dy, dx, O, K);
    default: QLORA_ASSERT(false, "backward_direct_aligned handles N <= 4, got {}", N);
  }
}
#endif

// Rows [n0, n0 + rows) of w into tile (rows, K), in parallel; the caller's sgemm then runs outside
// the parallel region (OpenBLAS here is the OpenMP build and would otherwise run single-threaded).
void dequant_rows(const Dequant& d, int64_t n0, int64_t rows, int64_t K, float* tile) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) dequant_range(d, (n0 + r) * K, K, tile + r * K);
}

// Columns [k0, k0 + cols) of every row of w into panel (O, cols), in parallel.
void dequant_cols(const Dequant& d, int64_t O, int64_t K, int64_t k0, int64_t cols, float* panel) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < O; ++n) dequant_range(d, n * K + k0, cols, panel + n * cols);
}

void check_weight(const QuantTensor& w, const char* op) {
  if (w.shape.size() != 2 || w.shape[0] <= 0 || w.shape[1] <= 0)
    fail(op, "weight must be 2-D (O, K) with O, K > 0; got {}", shape_str(w.shape));
  if (w.shape[0] > INT_MAX || w.shape[1] > INT_MAX)
    fail(op, "weight dims must fit in int for BLAS; got {}", shape_str(w.shape));
  if (w.block_size <= 0) fail(op, "block_size must be positive; got {}", w.block_size);
  if (!w.on_host()) fail(op, "weight lives on {}; the CPU backend needs host memory", w.device().name());
  const int64_t code_bytes = (w.numel() + 1) / 2;
  if (!w.codes.defined() || w.codes.numel() < code_bytes || w.codes.dtype() != DType::U8)
    fail(op, "codes hold {} bytes; expected {} u8 for shape {}", w.codes.defined() ? w.codes.numel() : 0, code_bytes,
         shape_str(w.shape));
  if (!w.code.defined() || w.code.numel() != 16 || w.code.dtype() != DType::F32)
    fail(op, "code table is {}; expected f32 (16)", w.code.defined() ? w.code.describe() : "undefined");
}

int64_t length(const Tensor& t) { return t.defined() ? t.numel() : 0; }

// Validates the absmax storage of w and points a Dequant at it.
Dequant make_dequant(const QuantTensor& w, const char* op) {
  Dequant d{w.codes.data<uint8_t>(), w.code.data<float>(), w.block_size};
  const int64_t n_blocks = w.n_blocks();
  if (!w.double_quant) {
    if (length(w.absmax) < n_blocks) fail(op, "absmax holds {} values; expected {} blocks", length(w.absmax), n_blocks);
    d.absmax = w.absmax.data<float>();
    return d;
  }
  if (w.nested_block_size <= 0) fail(op, "nested_block_size must be positive; got {}", w.nested_block_size);
  const int64_t n_nested = (n_blocks + w.nested_block_size - 1) / w.nested_block_size;
  if (length(w.absmax_codes) < n_blocks || length(w.nested_absmax) < n_nested || length(w.nested_code) != 256)
    fail(op, "double-quant absmax holds {} codes, {} nested values and a {}-entry map; expected {}, {} and 256",
         length(w.absmax_codes), length(w.nested_absmax), length(w.nested_code), n_blocks, n_nested);
  d.absmax_codes = w.absmax_codes.data<uint8_t>();
  d.nested_absmax = w.nested_absmax.data<float>();
  d.map = w.nested_code.data<float>();
  d.nested_block_size = w.nested_block_size;
  d.offset = w.offset;
  return d;
}

// The f32 absmax of every block, as quant/nf4.h's block_absmax computes it (decode_absmax is
// compiled without FMA contraction), so the f64 path sees exactly the f32 path's weights.
std::vector<float> block_absmax(const QuantTensor& w) {
  std::vector<float> out(size_t(w.n_blocks()));
  if (!w.double_quant) {
    std::copy_n(w.absmax.data<float>(), out.size(), out.begin());
    return out;
  }
  decode_absmax_8bit(w.absmax_codes.data<uint8_t>(), w.nested_absmax.data<float>(), w.nested_code.data<float>(),
                     int64_t(out.size()), w.nested_block_size, w.offset, out.data());
  return out;
}

// Rows of a 4-bit weight dequantized at a time on the f64 path: 64 x K doubles (2 MiB at K = 4096)
// stays in L2/L3 between the dequantization and the dgemm reading it.
constexpr int64_t kQuantTileRows = 64;
// Elements above which element-wise loops run in parallel.
constexpr int64_t kParallelMin = 65536;

// out (rows, K) = dequant(w[o0 : o0 + rows, :]) widened to f64.
void dequant_rows_f64(const QuantTensor& w, const std::vector<float>& absmax, int64_t o0, int64_t rows, double* out) {
  const int64_t K = w.shape[1], begin = o0 * K, count = rows * K, bs = w.block_size;
  const uint8_t* codes = w.codes.data<uint8_t>();
  const float* code = w.code.data<float>();
#pragma omp parallel for if (count > kParallelMin) schedule(static)
  for (int64_t j = 0; j < count; ++j) {
    const int64_t i = begin + j;
    const uint8_t byte = codes[i >> 1];
    const uint8_t c = (i & 1) ? uint8_t(byte & 0x0f) : uint8_t(byte >> 4);
    out[j] = double(code[c] * absmax[size_t(i / bs)]);
  }
}

}  // namespace

void qmatmul_forward(const float* x, const QuantTensor& w, float* y, int64_t N) {
  check_weight(w, "qmatmul_forward");
  if (N < 0 || N > INT_MAX) fail("qmatmul_forward", "N must be in [0, INT_MAX]; got {}", N);
  if (N == 0) return;
  const int64_t O = w.shape[0], K = w.shape[1];
  const Dequant d = make_dequant(w, "qmatmul_forward");

  if (N <= kDirectMaxRows) {
#if defined(__AVX512F__)
    if (K % 32 == 0 && w.block_size % 32 == 0) {
      forward_direct_aligned(d, x, y, N, O, K);
      return;
    }
#endif
    forward_direct_generic(d, x, y, N, O, K);
    return;
  }
  // y[:, n0:n0+rows] = x · tileᵀ, written in place through ldc = O.
  const int64_t tile_rows = std::min<int64_t>(O, std::max<int64_t>(16, kTileElems / K));
  std::vector<float> tile(static_cast<size_t>(std::min(tile_rows, O) * K));
  for (int64_t n0 = 0; n0 < O; n0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, O - n0);
    dequant_rows(d, n0, rows, K, tile.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(rows), int(K), 1.0f, x, int(K), tile.data(),
                int(K), 0.0f, y + n0, int(O));
  }
}

void qmatmul_backward_input(const float* dy, const QuantTensor& w, float* dx, int64_t N) {
  check_weight(w, "qmatmul_backward_input");
  if (N < 0 || N > INT_MAX) fail("qmatmul_backward_input", "N must be in [0, INT_MAX]; got {}", N);
  if (N == 0) return;
  const int64_t O = w.shape[0], K = w.shape[1];
  const Dequant d = make_dequant(w, "qmatmul_backward_input");

  if (N <= kBackwardDirectMaxRows) {
#if defined(__AVX512F__)
    if (K % 32 == 0 && w.block_size % 32 == 0) {
      backward_direct_aligned(d, dy, dx, N, O, K);
      return;
    }
#endif
    backward_direct_generic(d, dy, dx, N, O, K);
    return;
  }
  // Column panels of w (O, cols): dx[:, k0:k0+cols] = dy · panel, so each element of dx is written
  // once with the full inner dimension O (row tiles would re-read and re-write dx per tile).
  const int64_t panel_cols = std::min<int64_t>(K, std::max<int64_t>(32, (kTileElems / O) / 32 * 32));
  std::vector<float> panel(static_cast<size_t>(O * panel_cols));
  for (int64_t k0 = 0; k0 < K; k0 += panel_cols) {
    const int64_t cols = std::min(panel_cols, K - k0);
    dequant_cols(d, O, K, k0, cols, panel.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(cols), int(O), 1.0f, dy, int(O),
                panel.data(), int(cols), 0.0f, dx + k0, int(K));
  }
}

// Rows of dy per qmatmul_backward_input call in the accumulating form: it overwrites, so each chunk
// goes through a temporary (rows, K) buffer that is then added to dx; chunking bounds that buffer
// (2048 x 4096 f32 = 32 MiB) while keeping each call large enough that the dequantization of W
// (once per call) stays small next to its 2·rows·O·K flops.
constexpr int64_t kAccumulateRows = 2048;

void qmatmul_dy_w_acc(const float* dy, const QuantTensor& w, float* dx, int64_t N) {
  check_weight(w, "qmatmul_dy_w_acc");
  if (N <= 0) return;
  const int64_t O = w.shape[0], K = w.shape[1];
  std::vector<float> tmp(size_t(std::min(kAccumulateRows, N) * K));
  for (int64_t n0 = 0; n0 < N; n0 += kAccumulateRows) {
    const int64_t nr = std::min(kAccumulateRows, N - n0);
    qmatmul_backward_input(dy + n0 * O, w, tmp.data(), nr);
    float* d = dx + n0 * K;
    const int64_t n = nr * K;
#pragma omp parallel for if (n > kParallelMin) schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] += tmp[size_t(i)];
  }
}

void qmatmul_forward(const double* x, const QuantTensor& w, double* y, int64_t N) {
  check_weight(w, "qmatmul_forward");
  if (N <= 0) return;
  const int64_t O = w.shape[0], K = w.shape[1];
  make_dequant(w, "qmatmul_forward");  // validates the constants
  const std::vector<float> absmax = block_absmax(w);
  std::vector<double> tile(size_t(std::min(kQuantTileRows, O) * K));
  for (int64_t o0 = 0; o0 < O; o0 += kQuantTileRows) {
    const int64_t nr = std::min(kQuantTileRows, O - o0);
    dequant_rows_f64(w, absmax, o0, nr, tile.data());
    // Columns [o0, o0 + nr) of y: leading dimension O.
    gemm<double>(false, true, N, nr, K, 1.0, x, K, tile.data(), K, 0.0, y + o0, O);
  }
}

void qmatmul_dy_w_acc(const double* dy, const QuantTensor& w, double* dx, int64_t N) {
  check_weight(w, "qmatmul_dy_w_acc");
  if (N <= 0) return;
  const int64_t O = w.shape[0], K = w.shape[1];
  make_dequant(w, "qmatmul_dy_w_acc");
  const std::vector<float> absmax = block_absmax(w);
  std::vector<double> tile(size_t(std::min(kQuantTileRows, O) * K));
  for (int64_t o0 = 0; o0 < O; o0 += kQuantTileRows) {
    const int64_t nr = std::min(kQuantTileRows, O - o0);
    dequant_rows_f64(w, absmax, o0, nr, tile.data());
    // dx += dy[:, o0:o0+nr] · W[o0:o0+nr, :]: a sum over tiles of W's rows.
    gemm<double>(false, false, N, K, nr, 1.0, dy + o0, O, tile.data(), K, 1.0, dx, K);
  }
}

namespace {

// w as a bf16 matrix whose slices are dequantized on demand (in f32, then rounded to bf16).
Bf16Matrix bf16_slices(const QuantTensor& w, const char* op) {
  check_weight(w, op);
  const Dequant d = make_dequant(w, op);
  const int64_t K = w.shape[1];
  return Bf16Matrix{w.shape[0], K, nullptr, 0,
                    [d, K](int64_t r0, int64_t rows, int64_t c0, int64_t cols, uint16_t* dst, int64_t ld) {
                      thread_local std::vector<float> row;
                      row.resize(size_t(cols));
                      for (int64_t r = 0; r < rows; ++r) {
                        dequant_range(d, (r0 + r) * K + c0, cols, row.data());
                        convert_f32_to_bf16(row.data(), dst + r * ld, size_t(cols));
                      }
                    }};
}

}  // namespace

void qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N) {
  if (N < 0) fail("qmatmul_forward_bf16", "N must be >= 0; got {}", N);
  bf16_xwt(x, bf16_slices(w, "qmatmul_forward_bf16"), y, N, active_isa());
}

void qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N) {
  if (N < 0) fail("qmatmul_dy_w_acc_bf16", "N must be >= 0; got {}", N);
  bf16_dy_w_acc(dy, bf16_slices(w, "qmatmul_dy_w_acc_bf16"), dx, N, active_isa());
}

void dequantize_4bit(const QuantTensor& w, float* out) {
  check_weight(w, "dequantize_4bit");
  make_dequant(w, "dequantize_4bit");
  const std::vector<float> absmax = block_absmax(w);
  dequantize_blocks_4bit(w.codes.data<uint8_t>(), absmax.data(), w.code.data<float>(), w.numel(), w.block_size, out);
}

}  // namespace qlora::cpu
