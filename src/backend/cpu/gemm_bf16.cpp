// bf16 products on packed operands. Every product is C (M, Nc) = A (M, Kc) · B (Kc, Nc) computed in
// 32×32 output blocks by one inner kernel (AMX or AVX512-BF16) reading:
//   A: bf16 row-major, 32 rows at a time, Kc padded with zeros to a multiple of 32;
//   B: "VNNI" tiles of 16 rows × 16 columns of bf16 pairs, tile row r holding, for each of 16
//      columns, the pair (B[2r][c], B[2r+1][c]) of 32 consecutive contraction indices (1 KiB).
// The forward runs as yᵀ = W · xᵀ, so W's rows are the A operand as stored (a dense bf16 weight is
// read in place, a 4-bit one dequantized 32 rows at a time) and x, transposed into tiles once per
// call, is B; the output block is written back transposed. The backward products contract over
// the rows of W (or of x), whose pairs of rows interleave into tiles per 32-column block.
// Work is split over output blocks with dynamic scheduling, so a descheduled thread (a busy
// machine) leaves its remaining blocks to the others instead of stalling a static partition.
// With the oneDNN engine (gemm_engine) the same products go to oneDNN's matmul on row-major bf16
// operands instead; a 4-bit weight is then dequantized into row panels (panel_rows).
#include "backend/cpu/gemm_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/onednn_gemm.h"
#include "core/dtype.h"
#include "core/error.h"

namespace qlora::cpu {

namespace {

constexpr int64_t kBlock = 32;        // output block edge; also the contraction step of one tile
constexpr int64_t kTileElems = 512;   // bf16 elements in one 16 × 16-pair tile

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// out (32, 32) f32 = A (32 rows from a, row stride lda elements) · the two column tiles b0, b1
// over ks contraction steps (b0 + kk * 512 is step kk's tile).
using BlockKernel = void (*)(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t ks,
                             float* out);

// ---- AMX -------------------------------------------------------------------------------------

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3: the four 16×16 f32 blocks of the output; 4-5: two 16-row slices of A; 6-7: two B tiles.
// The configuration is per thread, and other code in the process (oneDNN's AMX kernels) releases
// the tiles when it is done, so a "configured once" flag per thread goes stale and the next
// tilezero faults (SIGILL, seen with QLORA_CPU_GEMM=onednn then own). Each unit of parallel work
// therefore loads the configuration and releases it at the end (TileScope), which also spares the
// kernel saving 8 KiB of tile state at every context switch on a busy machine.
__attribute__((target("amx-tile"))) void load_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}
__attribute__((target("amx-tile"))) void release_tiles() { _tile_release(); }

// Holds the tile configuration for one unit of parallel work (a strip or column block) on AMX.
class TileScope {
 public:
  explicit TileScope(CpuIsa isa) : amx_(isa == CpuIsa::Amx) {
    if (amx_) load_tile_config();
  }
  ~TileScope() {
    if (amx_) release_tiles();
  }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;

 private:
  bool amx_;
};

__attribute__((target("amx-tile,amx-bf16"))) void amx_block(const uint16_t* a, int64_t lda, const uint16_t* b0,
                                                             const uint16_t* b1, int64_t ks, float* out) {
  const int64_t stride = lda * 2;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kk = 0; kk < ks; ++kk) {
    _tile_loadd(4, a + kk * kBlock, stride);
    _tile_loadd(5, a + 16 * lda + kk * kBlock, stride);
    _tile_loadd(6, b0 + kk * kTileElems, 64);
    _tile_loadd(7, b1 + kk * kTileElems, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 128);
  _tile_stored(1, out + 16, 128);
  _tile_stored(2, out + 16 * 32, 128);
  _tile_stored(3, out + 16 * 32 + 16, 128);
}

// ---- AVX512-BF16 -----------------------------------------------------------------------------

// Eight rows of A against both column tiles: 16 accumulators, one broadcast pair per row and step.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void dpbf16_block(const uint16_t* a, int64_t lda,
                                                                         const uint16_t* b0, const uint16_t* b1,
                                                                         int64_t ks, float* out) {
  for (int64_t i0 = 0; i0 < kBlock; i0 += 8) {
    __m512 acc0[8], acc1[8];
    for (int i = 0; i < 8; ++i) acc0[i] = _mm512_setzero_ps(), acc1[i] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < ks; ++kk) {
      for (int64_t r = 0; r < 16; ++r) {
        const __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + kk * kTileElems + r * 32);
        const __m512bh v1 = (__m512bh)_mm512_loadu_si512(b1 + kk * kTileElems + r * 32);
        for (int i = 0; i < 8; ++i) {
          uint32_t pair;
          std::memcpy(&pair, a + (i0 + i) * lda + kk * kBlock + 2 * r, 4);
          const __m512bh av = (__m512bh)_mm512_set1_epi32(int(pair));
          acc0[i] = _mm512_dpbf16_ps(acc0[i], av, v0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], av, v1);
        }
      }
    }
    for (int i = 0; i < 8; ++i) {
      _mm512_storeu_ps(out + (i0 + i) * 32, acc0[i]);
      _mm512_storeu_ps(out + (i0 + i) * 32 + 16, acc1[i]);
    }
  }
}

BlockKernel block_kernel(CpuIsa isa) { return isa == CpuIsa::Amx ? amx_block : dpbf16_block; }

// out (32, 64) f32 = A (32 rows) · four column tiles b + t * tile_stride (t = 0..3) over ks steps:
// four rows against four tiles, 16 accumulators, one broadcast per four vdpbf16ps. dpbf16_block's
// one broadcast per two left a third of the FMA issue slots to broadcasts on Zen 4 (measured:
// ~300 of oneDNN's ~430 GFLOP/s on 256×576×576).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void dpbf16_block_wide(const uint16_t* a, int64_t lda,
                                                                              const uint16_t* b, int64_t tile_stride,
                                                                              int64_t ks, float* out) {
  for (int64_t i0 = 0; i0 < kBlock; i0 += 4) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < 4; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < ks; ++kk) {
      const uint16_t* bk = b + kk * kTileElems;
      const uint16_t* ak = a + i0 * lda + kk * kBlock;
      for (int64_t r = 0; r < 16; ++r) {
        __m512bh v[4];
        for (int t = 0; t < 4; ++t) v[t] = (__m512bh)_mm512_loadu_si512(bk + t * tile_stride + r * 32);
        for (int i = 0; i < 4; ++i) {
          uint32_t pair;
          std::memcpy(&pair, ak + i * lda + 2 * r, 4);
          const __m512bh av = (__m512bh)_mm512_set1_epi32(int(pair));
          for (int t = 0; t < 4; ++t) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], av, v[t]);
        }
      }
    }
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < 4; ++t) _mm512_storeu_ps(out + (i0 + i) * 64 + t * 16, acc[i][t]);
  }
}

// ---- output ----------------------------------------------------------------------------------

// dst (16, 16) at row stride ld = the transpose of src (16, 16) at row stride ls: three rounds of
// in-register shuffles (pairs of elements, pairs of pairs, then 128-bit lanes twice).
__attribute__((target("avx512f"))) void transpose16(const float* src, int64_t ls, float* dst, int64_t ld) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ls);
  for (int i = 0; i < 16; i += 2) {  // t[i] = (r[i]0 r[i+1]0 r[i]1 r[i+1]1 | ...) per 128-bit lane
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // four rows' elements k..k+3 (of each 4-column group) together
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));      // column 4q + 0 of rows i..i+3
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));  // column 4q + 1
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));  // column 4q + 2
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));  // column 4q + 3
  }
  // r[4g + c] lane q holds column 4q + c of rows 4g..4g+3. Gather lane q of the four row groups.
  for (int c = 0; c < 4; ++c) {
    // lanes (q0 of g0, q2 of g0, q0 of g1, q2 of g1) and (q1.., q3..), then across g2/g3 likewise.
    const __m512 g01_even = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);   // g0q0 g0q2 g1q0 g1q2
    const __m512 g01_odd = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);    // g0q1 g0q3 g1q1 g1q3
    const __m512 g23_even = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 g23_odd = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_shuffle_f32x4(g01_even, g23_even, 0x88);       // q0: g0 g1 g2 g3 -> column c
    t[8 + c] = _mm512_shuffle_f32x4(g01_even, g23_even, 0xdd);   // q2 -> column 8 + c
    t[4 + c] = _mm512_shuffle_f32x4(g01_odd, g23_odd, 0x88);     // q1 -> column 4 + c
    t[12 + c] = _mm512_shuffle_f32x4(g01_odd, g23_odd, 0xdd);    // q3 -> column 12 + c
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ld, t[i]);
}

// rows [0, nr) × columns [0, orows) of dst (row stride ld) = the transpose of out (32, nr): out
// row i holds output column i. Whole 16 × 16 quarters go through transpose16; ragged edges loop.
// out has row stride lo (32 or 64) and is whole (32 rows × lo).
void write_transposed(const float* out, int64_t lo, int64_t nr, int64_t orows, float* dst, int64_t ld) {
  alignas(64) float tmp[16 * 16];
  for (int64_t j0 = 0; j0 < nr; j0 += 16)
    for (int64_t i0 = 0; i0 < orows; i0 += 16) {
      const int64_t nj = std::min<int64_t>(16, nr - j0), ni = std::min<int64_t>(16, orows - i0);
      if (nj == 16 && ni == 16) {
        transpose16(out + i0 * lo + j0, lo, dst + j0 * ld + i0, ld);
        continue;
      }
      transpose16(out + i0 * lo + j0, lo, tmp, 16);
      for (int64_t j = 0; j < nj; ++j) std::memcpy(dst + (j0 + j) * ld + i0, tmp + j * 16, size_t(ni) * sizeof(float));
    }
}

// ---- packing ---------------------------------------------------------------------------------

// dst (rows, ld) = bf16(src (rows, cols), row stride src_ld), zero in columns [cols, ld).
void convert_rows(const float* src, int64_t src_ld, int64_t rows, int64_t cols, uint16_t* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    convert_f32_to_bf16(src + r * src_ld, dst + r * ld, size_t(cols));
    std::fill(dst + r * ld + cols, dst + (r + 1) * ld, uint16_t(0));
  }
}

// A operand (round_up(M, 32), round_up(Kc, 32)) = bf16(src), src (M, Kc) row-major or, when
// transposed, src (Kc, M) row-major read as its transpose. Zero-padded.
const uint16_t* pack_a(const float* src, int64_t M, int64_t Kc, bool transposed, std::vector<uint16_t>& buf,
                       int64_t& lda) {
  const int64_t Mp = round_up(M, kBlock);
  lda = round_up(std::max<int64_t>(Kc, 1), kBlock);
  buf.assign(size_t(Mp * lda), 0);
  uint16_t* dst = buf.data();
  if (!transposed) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) convert_rows(src + m * Kc, Kc, 1, Kc, dst + m * lda, lda);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < Kc; ++k) dst[m * lda + k] = f32_to_bf16(src[k * M + m]);
  }
  return dst;
}

// Two column tiles × ks steps from a (ks * 32, 32) bf16 slice (row = contraction index): tile t's
// row r of step kk interleaves slice rows kk*32 + 2r and kk*32 + 2r + 1 over columns t*16 ... +16.
__attribute__((target("avx512f,avx512bw"))) void interleave_row_pairs(const uint16_t* slice, int64_t ks,
                                                                      uint16_t* tiles) {
  alignas(64) static constexpr uint16_t lo_idx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                       8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t hi_idx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                       24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  uint16_t* t0 = tiles;
  uint16_t* t1 = tiles + ks * kTileElems;
  for (int64_t kk = 0; kk < ks; ++kk)
    for (int64_t r = 0; r < 16; ++r) {
      const uint16_t* even = slice + (kk * kBlock + 2 * r) * kBlock;
      const __m512i e = _mm512_loadu_si512(even), o = _mm512_loadu_si512(even + kBlock);
      _mm512_storeu_si512(t0 + kk * kTileElems + r * 32, _mm512_permutex2var_epi16(e, lo, o));
      _mm512_storeu_si512(t1 + kk * kTileElems + r * 32, _mm512_permutex2var_epi16(e, hi, o));
    }
}

// x (N, K) f32 as B tiles of xᵀ: token block jb (16 tokens) × step kk at tiles + (jb * ks + kk) * 512;
// word (r, c) of a tile is the bf16 pair (x[16 jb + c][32 kk + 2r], ... + 1). Zero-padded.
const uint16_t* pack_activation_tiles(const float* x, int64_t N, int64_t K, std::vector<uint16_t>& buf, int64_t& ks) {
  ks = round_up(std::max<int64_t>(K, 1), kBlock) / kBlock;
  const int64_t blocks = round_up(N, kBlock) / 16, Kp = ks * kBlock;
  buf.assign(size_t(blocks * ks * kTileElems), 0);
  uint32_t* tiles = reinterpret_cast<uint32_t*>(buf.data());
#pragma omp parallel for schedule(static)
  for (int64_t jb = 0; jb < blocks; ++jb) {
    thread_local std::vector<uint16_t> rows;
    rows.assign(size_t(16 * Kp), 0);
    const int64_t n0 = jb * 16, nr = std::clamp<int64_t>(N - n0, 0, 16);
    convert_rows(x + n0 * K, K, nr, K, rows.data(), Kp);
    const uint32_t* words = reinterpret_cast<const uint32_t*>(rows.data());  // (16, Kp / 2)
    for (int64_t kk = 0; kk < ks; ++kk) {
      uint32_t* t = tiles + (jb * ks + kk) * 256;
      for (int64_t c = 0; c < 16; ++c)
        for (int64_t r = 0; r < 16; ++r) t[r * 16 + c] = words[c * (Kp / 2) + kk * 16 + r];
    }
  }
  return buf.data();
}

// C (M, Nc) += A · B with A packed (pack_a; lda >= Kc rounded up to 32, may be a column offset into
// a wider packing) and B read from b (Kc, Nc) 32 columns at a time.
void gemm_contract_rows(const uint16_t* A, int64_t lda, int64_t M, int64_t Kc, const Bf16Matrix& b, float* C,
                        int64_t ldc, CpuIsa isa) {
  const BlockKernel kernel = block_kernel(isa);
  // AVX512-BF16 takes 64 columns per block (dpbf16_block_wide), AMX 32.
  const int64_t width = isa == CpuIsa::Avx512Bf16 ? 2 * kBlock : kBlock;
  const int64_t Nc = b.cols, ks = round_up(std::max<int64_t>(Kc, 1), kBlock) / kBlock;
  const int64_t col_blocks = round_up(Nc, width) / width;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t cb = 0; cb < col_blocks; ++cb) {
    const TileScope tiles_held(isa);
    thread_local std::vector<uint16_t> slice, tiles;
    thread_local std::vector<float> out;
    const int64_t n0 = cb * width, nc = std::min(width, Nc - n0);
    slice.resize(size_t(ks * kBlock * kBlock));
    tiles.assign(size_t(2 * (width / kBlock) * ks * kTileElems), 0);
    out.resize(size_t(kBlock * width));
    // Each 32-column half: read (zero-padded), then interleaved into two tiles.
    for (int64_t h = 0; h * kBlock < nc; ++h) {
      std::fill(slice.begin(), slice.end(), uint16_t(0));
      b.read(0, Kc, n0 + h * kBlock, std::min(kBlock, nc - h * kBlock), slice.data(), kBlock);
      interleave_row_pairs(slice.data(), ks, tiles.data() + 2 * h * ks * kTileElems);
    }
    for (int64_t m0 = 0; m0 < M; m0 += kBlock) {
      if (width == kBlock) kernel(A + m0 * lda, lda, tiles.data(), tiles.data() + ks * kTileElems, ks, out.data());
      else dpbf16_block_wide(A + m0 * lda, lda, tiles.data(), ks * kTileElems, ks, out.data());
      const int64_t mr = std::min(kBlock, M - m0);
      for (int64_t i = 0; i < mr; ++i) {
        float* c = C + (m0 + i) * ldc + n0;
        const float* o = out.data() + i * width;
        for (int64_t j = 0; j < nc; ++j) c[j] += o[j];
      }
    }
  }
}

// ---- f32 fallback (no bf16 instructions): the same operands, bf16-rounded, through sgemm ----

// Rows of W widened per sgemm call: 256 x K f32 stays in L2 for K up to ~4096.
constexpr int64_t kFallbackPanelRows = 256;

// Calls fn(o0, rows, panel) for each panel of rows of w (rows, cols), widened to f32.
template <typename Fn>
void for_each_f32_panel(const Bf16Matrix& w, Fn&& fn) {
  std::vector<uint16_t> raw(size_t(std::min(kFallbackPanelRows, w.rows) * w.cols));
  std::vector<float> panel(raw.size());
  for (int64_t o0 = 0; o0 < w.rows; o0 += kFallbackPanelRows) {
    const int64_t rows = std::min(kFallbackPanelRows, w.rows - o0);
    w.read(o0, rows, 0, w.cols, raw.data(), w.cols);
    convert_bf16_to_f32(raw.data(), panel.data(), size_t(rows * w.cols));
    fn(o0, rows, panel.data());
  }
}

}  // namespace

std::vector<float> bf16_rounded_copy(const float* src, int64_t n) {
  std::vector<float> out(src, src + n);
  round_to_bf16(out.data(), size_t(n));
  return out;
}

void Bf16Matrix::read(int64_t r0, int64_t nrows, int64_t c0, int64_t ncols, uint16_t* dst, int64_t dst_ld) const {
  if (data) {
    for (int64_t r = 0; r < nrows; ++r) std::memcpy(dst + r * dst_ld, data + (r0 + r) * ld + c0, size_t(ncols) * 2);
    return;
  }
  slice(r0, nrows, c0, ncols, dst, dst_ld);
}

namespace {

// ---- the oneDNN engine -------------------------------------------------------------------------

// x (rows, cols) f32 as a row-major bf16 array (or, transposed, its transpose (cols, rows)).
const uint16_t* bf16_rows(const float* x, int64_t rows, int64_t cols, bool transposed, std::vector<uint16_t>& buf) {
  buf.resize(size_t(rows * cols));
  uint16_t* dst = buf.data();
  if (!transposed) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; ++r) convert_f32_to_bf16(x + r * cols, dst + r * cols, size_t(cols));
  } else {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = f32_to_bf16(x[r * cols + c]);
  }
  return dst;
}

// Rows per dequantized panel of a 4-bit weight (a multiple of 32, or all O): about 4 MiB of bf16
// (it stays in L2/L3 while it is used), and at least 512 rows, so a contraction over the panel's
// rows runs >= 16 steps per output block before the block is added into the result (with 128-row
// panels, 256×11008×4096 dx ran at half the speed: the (N, K) result was re-read per panel).
int64_t panel_rows(int64_t O, int64_t K) {
  const int64_t rows = std::max<int64_t>(512, (int64_t(1) << 21) / std::max<int64_t>(K, 1) / kBlock * kBlock);
  return std::min(O, rows);
}

// For each panel of w's rows [o0, o0 + n): fn(o0, n, panel (n, K) row-major bf16, its row stride).
// A plain bf16 array is one panel read in place; a slice producer is read panel by panel, in
// parallel over 32-row strips.
template <typename Fn>
void for_each_bf16_panel(const Bf16Matrix& w, Fn&& fn) {
  const int64_t O = w.rows, K = w.cols;
  if (w.data) return fn(int64_t(0), O, w.data, w.ld);
  thread_local std::vector<uint16_t> panel;
  const int64_t P = panel_rows(O, K);
  panel.resize(size_t(P * K));
  uint16_t* dst = panel.data();  // not `panel` inside the region: each worker has its own thread_local
  for (int64_t o0 = 0; o0 < O; o0 += P) {
    const int64_t n = std::min(P, O - o0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r = 0; r < n; r += kBlock) w.read(o0 + r, std::min(kBlock, n - r), 0, K, dst + r * K, K);
    fn(o0, n, static_cast<const uint16_t*>(dst), K);
  }
}

void onednn_xwt(const float* x, const Bf16Matrix& w, float* y, int64_t N) {
  const int64_t O = w.rows, K = w.cols;
  thread_local std::vector<uint16_t> xbuf;
  const uint16_t* x16 = bf16_rows(x, N, K, false, xbuf);
  for_each_bf16_panel(w, [&](int64_t o0, int64_t n, const uint16_t* p, int64_t ld) {
    // y[:, o0 : o0 + n] = x · Pᵀ: Pᵀ (K, n) is P read with swapped strides.
    onednn_matmul(N, n, K, x16, K, 1, p, 1, ld, y + o0, O, false);
  });
}

void onednn_dy_w_acc(const float* dy, const Bf16Matrix& w, float* dx, int64_t N) {
  const int64_t O = w.rows, K = w.cols;
  thread_local std::vector<uint16_t> dybuf;
  const uint16_t* dy16 = bf16_rows(dy, N, O, false, dybuf);
  for_each_bf16_panel(w, [&](int64_t o0, int64_t n, const uint16_t* p, int64_t ld) {
    onednn_matmul(N, K, n, dy16 + o0, O, 1, p, ld, 1, dx, K, true);  // dx += dy[:, o0 : o0 + n] · P
  });
}

void onednn_dyt_x_acc(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) {
  thread_local std::vector<uint16_t> dybuf, xbuf;
  const uint16_t* dyt16 = bf16_rows(dy, N, O, true, dybuf);  // dyᵀ (O, N), row-major
  const uint16_t* x16 = bf16_rows(x, N, K, false, xbuf);
  onednn_matmul(O, K, N, dyt16, N, 1, x16, K, 1, dw, K, true);
}

}  // namespace

GemmEngine gemm_engine(CpuIsa isa) {
  if (!has_bf16_kernel(isa)) return GemmEngine::Own;
  const char* env = std::getenv("QLORA_CPU_GEMM");
  const std::string_view name = env ? env : "";
  if (name == "own") return GemmEngine::Own;
  if (name == "onednn") {
    if (!onednn_built()) fail("cpu", "QLORA_CPU_GEMM=onednn, but this build has no oneDNN (install libdnnl-dev)");
    return GemmEngine::OneDnn;
  }
  if (!name.empty()) fail("cpu", "QLORA_CPU_GEMM='{}' is not one of own, onednn", name);
  // Ours by default, on AMX too, where oneDNN's brgemm is 1.3-2.9x faster alone and a training step
  // 6-7% faster: oneDNN's results depend on its thread count (SmolLM2 LoRA bf16, first loss
  // 13.57614 at 1 thread, 13.57920 at 2; ours 13.57920 at either, f32 13.57975), and the thread
  // count follows the machine's load (threads.h), so runs would stop being reproducible.
  return GemmEngine::Own;
}

void bf16_xwt(const float* x, const Bf16Matrix& w, float* y, int64_t N, CpuIsa isa) {
  const int64_t O = w.rows, K = w.cols;
  if (N <= 0 || O <= 0) return;
  if (gemm_engine(isa) == GemmEngine::OneDnn) return onednn_xwt(x, w, y, N);
  if (!has_bf16_kernel(isa)) {
    const std::vector<float> xr = bf16_rounded_copy(x, N * K);
    for_each_f32_panel(w, [&](int64_t o0, int64_t rows, const float* panel) {
      gemm<float>(false, true, N, rows, K, 1.0f, xr.data(), K, panel, K, 0.0f, y + o0, O);
    });
    return;
  }
  const BlockKernel kernel = block_kernel(isa);
  const bool wide = isa == CpuIsa::Avx512Bf16;
  thread_local std::vector<uint16_t> xbuf;
  int64_t ks = 0;
  const uint16_t* xt = pack_activation_tiles(x, N, K, xbuf, ks);
  const int64_t Kp = ks * kBlock, strips = round_up(O, kBlock) / kBlock;
  // W's rows are read in place when whole tiles fit: K a multiple of 32 and a full 32-row strip.
  const bool in_place = w.data && K % kBlock == 0;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t s = 0; s < strips; ++s) {
    const TileScope tiles_held(isa);
    thread_local std::vector<uint16_t> strip;
    thread_local std::vector<float> out;
    out.resize(size_t(kBlock * 2 * kBlock));  // (32, 64) for the wide kernel
    const int64_t o0 = s * kBlock, orows = std::min(kBlock, O - o0);
    const uint16_t* a;
    int64_t lda;
    if (in_place && orows == kBlock) {
      a = w.data + o0 * w.ld, lda = w.ld;
    } else {
      strip.assign(size_t(kBlock * Kp), 0);
      w.read(o0, orows, 0, K, strip.data(), Kp);
      a = strip.data(), lda = Kp;
    }
    for (int64_t n0 = 0; n0 < N;) {
      const uint16_t* b0 = xt + (n0 / 16) * ks * kTileElems;
      if (wide && round_up(N, kBlock) - n0 >= 2 * kBlock) {  // 64 tokens (tiles zero-padded to 32)
        dpbf16_block_wide(a, lda, b0, ks * kTileElems, ks, out.data());
        write_transposed(out.data(), 2 * kBlock, std::min(2 * kBlock, N - n0), orows, y + n0 * O + o0, O);
        n0 += 2 * kBlock;
        continue;
      }
      kernel(a, lda, b0, b0 + ks * kTileElems, ks, out.data());
      write_transposed(out.data(), kBlock, std::min(kBlock, N - n0), orows, y + n0 * O + o0, O);
      n0 += kBlock;
    }
  }
}

void bf16_dy_w_acc(const float* dy, const Bf16Matrix& w, float* dx, int64_t N, CpuIsa isa) {
  const int64_t O = w.rows, K = w.cols;
  if (N <= 0 || K <= 0 || O <= 0) return;
  if (gemm_engine(isa) == GemmEngine::OneDnn) return onednn_dy_w_acc(dy, w, dx, N);
  if (!has_bf16_kernel(isa)) {
    const std::vector<float> dyr = bf16_rounded_copy(dy, N * O);
    for_each_f32_panel(w, [&](int64_t o0, int64_t rows, const float* panel) {
      gemm<float>(false, false, N, K, rows, 1.0f, dyr.data() + o0, O, panel, K, 1.0f, dx, K);
    });
    return;
  }
  thread_local std::vector<uint16_t> abuf;
  int64_t lda = 0;
  const uint16_t* A = pack_a(dy, N, O, false, abuf, lda);
  // A dense weight's column strips are read in place. A 4-bit one is dequantized in row panels
  // first (rows [o0, o0 + n), all columns, once each) and contracted panel by panel: reading its
  // 32-column strips through the slice producer dequantized 32 values per call (256×1536×576:
  // 247-277 GFLOP/s that way, 319-351 by panels).
  if (w.data) return gemm_contract_rows(A, lda, N, O, w, dx, K, isa);
  for_each_bf16_panel(w, [&](int64_t o0, int64_t n, const uint16_t* p, int64_t ld) {
    gemm_contract_rows(A + o0, lda, N, n, Bf16Matrix{n, K, p, ld, {}}, dx, K, isa);
  });
}

void bf16_dyt_x_acc(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K, CpuIsa isa) {
  if (N <= 0 || K <= 0 || O <= 0) return;
  if (gemm_engine(isa) == GemmEngine::OneDnn) return onednn_dyt_x_acc(dy, x, dw, N, O, K);
  if (!has_bf16_kernel(isa)) {
    const std::vector<float> dyr = bf16_rounded_copy(dy, N * O), xr = bf16_rounded_copy(x, N * K);
    gemm<float>(true, false, O, K, N, 1.0f, dyr.data(), O, xr.data(), K, 1.0f, dw, K);
    return;
  }
  thread_local std::vector<uint16_t> abuf;
  int64_t lda = 0;
  const uint16_t* A = pack_a(dy, O, N, true, abuf, lda);  // dyᵀ (O, N)
  Bf16Matrix xm{N, K, nullptr, 0,
                [x, K](int64_t r0, int64_t rows, int64_t c0, int64_t cols, uint16_t* dst, int64_t ld) {
                  convert_rows(x + r0 * K + c0, K, rows, cols, dst, ld);
                }};
  gemm_contract_rows(A, lda, O, N, xm, dw, K, isa);
}

}  // namespace qlora::cpu
