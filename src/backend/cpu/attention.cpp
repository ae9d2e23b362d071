// Attention on the CPU, flash-attention style (Dao 2022, "FlashAttention-2"): the forward
// stores out and lse; the backward recomputes P = exp(S - lse). Work is split into blocks of
// kQueryBlock query rows of one (b, h); each block only looks at the keys [lo, last query] it can
// see (causality, window, and the start of its packed segment), and uses gemm for S = Q·Kᵀ,
// out = P·V and the backward products, with masked scores set to -inf.
// Rows that attend nothing (padding, segment -1) get out = 0, lse = -inf and zero gradients.
// Decoding with a KV cache is the same forward with query positions offset by the cached ones.
// Tested in tests/grad/test_op_grads.cpp and tests/unit/test_train_ops.cpp.
#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <vector>

#include "backend/cpu/fast_exp.h"
#include "backend/cpu/matmul.h"
#include "core/error.h"

namespace qlora::cpu {

namespace {

// Query rows per block: a (64, T) score block stays in L2 for T up to ~2048, and 64-row gemms
// still run near peak.
constexpr int64_t kQueryBlock = 64;
// Below this many multiply-adds (B·H·T²·D) one thread is faster than a fork/join.
constexpr int64_t kParallelMinWork = int64_t(1) << 18;

void check_shape(const AttentionShape& s) {
  if (s.B < 1 || s.T < 1 || s.H < 1 || s.Hkv < 1 || s.D < 1)
    fail("attention", "bad shape B={} T={} H={} Hkv={} D={}", s.B, s.T, s.H, s.Hkv, s.D);
  if (s.H % s.Hkv != 0) fail("attention", "n_heads {} is not a multiple of n_kv_heads {}", s.H, s.Hkv);
  if (s.q_offset < 0 || s.keys() < s.q_offset + s.T)
    fail("attention", "{} keys cannot hold queries at positions [{}, {})", s.keys(), s.q_offset, s.q_offset + s.T);
}

// first[b*T + t]: the first key position query t (at position q_offset + t) may see, from its
// segment's first occurrence (packed examples are contiguous, so this is the example's start) and
// the window; -1 when the row attends nothing (segment < 0). Keys in [first, q_offset + t] still
// go through the exact mask.
std::vector<int64_t> first_keys(const int32_t* segment_ids, const AttentionShape& s) {
  std::vector<int64_t> first(size_t(s.B * s.T));
  std::unordered_map<int32_t, int64_t> seen;
  for (int64_t b = 0; b < s.B; ++b) {
    seen.clear();
    for (int64_t t = 0; t < s.T; ++t) {
      int64_t f = 0;
      if (segment_ids) {
        const int32_t seg = segment_ids[b * s.T + t];
        if (seg < 0) {
          first[size_t(b * s.T + t)] = -1;
          continue;
        }
        f = seen.try_emplace(seg, t).first->second;
      }
      if (s.window > 0) f = std::max(f, s.q_offset + t - s.window + 1);
      first[size_t(b * s.T + t)] = f;
    }
  }
  return first;
}

// Fills scores (nq, nk) for queries [i0, i0 + nq) against keys [lo, lo + nk) of head h of batch b:
// scale · q·kᵀ for allowed pairs, -inf elsewhere.
template <typename T>
void masked_scores(const T* q, const T* k, const int32_t* segment_ids, const std::vector<int64_t>& first,
                   const AttentionShape& s, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t lo, int64_t nk,
                   T* scores) {
  const int64_t kvh = h / (s.H / s.Hkv);
  const T scale = T(1) / std::sqrt(T(s.D));
  const T* qb = q + (b * s.T + i0) * s.H * s.D + h * s.D;
  const T* kb = k + (b * s.keys() + lo) * s.Hkv * s.D + kvh * s.D;
  gemm<T>(false, true, nq, nk, s.D, scale, qb, s.H * s.D, kb, s.Hkv * s.D, T(0), scores, nk);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t t = i0 + r;
    T* row = scores + r * nk;
    const int64_t f = first[size_t(b * s.T + t)];
    if (f < 0) {
      std::fill(row, row + nk, neg_inf);
      continue;
    }
    // Allowed keys lie in [f, q_offset + t]; in columns [f - lo, q_offset + t - lo].
    const int64_t a = std::max<int64_t>(f - lo, 0), e = s.q_offset + t - lo + 1;
    std::fill(row, row + a, neg_inf);
    std::fill(row + e, row + nk, neg_inf);
    if (segment_ids) {
      const int32_t* seg = segment_ids + b * s.T + lo;
      const int32_t own = segment_ids[b * s.T + t];
      for (int64_t c = a; c < e; ++c)
        if (seg[c] != own) row[c] = neg_inf;
    }
  }
}

// The key range of query block [i0, i0 + nq): from the smallest first key to the last query's
// position.
int64_t block_first_key(const std::vector<int64_t>& first, const AttentionShape& s, int64_t b, int64_t i0,
                        int64_t nq) {
  int64_t lo = s.q_offset + i0 + nq - 1;
  for (int64_t t = i0; t < i0 + nq; ++t) {
    const int64_t f = first[size_t(b * s.T + t)];
    if (f >= 0) lo = std::min(lo, f);
  }
  return lo;
}

}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* segment_ids, T* out, T* lse,
                       const AttentionShape& s) {
  check_shape(s);
  if (segment_ids && (s.keys() != s.T || s.q_offset != 0))
    fail("attention", "segment ids need keys = queries (training); got {} keys for {} queries at offset {}", s.keys(),
         s.T, s.q_offset);
  const std::vector<int64_t> first = first_keys(segment_ids, s);
  const int64_t n_blocks = (s.T + kQueryBlock - 1) / kQueryBlock;
  const int64_t n_items = s.B * s.H * n_blocks;
  const int64_t group = s.H / s.Hkv, Tk = s.keys();
#pragma omp parallel if (s.B * s.H * s.T * Tk * s.D > kParallelMinWork)
  {
    std::vector<T> scores(size_t(kQueryBlock * Tk));
    // Items in reverse block order: the late (longest) blocks start first, for dynamic balance.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t blk = n_blocks - 1 - item % n_blocks;
      const int64_t h = (item / n_blocks) % s.H, b = item / (n_blocks * s.H);
      const int64_t i0 = blk * kQueryBlock, nq = std::min(kQueryBlock, s.T - i0);
      const int64_t lo = block_first_key(first, s, b, i0, nq), nk = s.q_offset + i0 + nq - lo;
      masked_scores(q, k, segment_ids, first, s, b, h, i0, nq, lo, nk, scores.data());
      for (int64_t r = 0; r < nq; ++r) {
        T* row = scores.data() + r * nk;
        T* lse_r = lse ? lse + (b * s.H + h) * s.T + i0 + r : nullptr;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < nk; ++c) m = std::max(m, row[c]);
        if (m == -std::numeric_limits<T>::infinity()) {  // attends nothing
          std::fill(row, row + nk, T(0));
          if (lse_r) *lse_r = m;
          continue;
        }
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < nk; ++c) {
          const T p = exp_t(row[c] - m);
          row[c] = p;
          sum += p;
        }
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t c = 0; c < nk; ++c) row[c] *= inv;
        if (lse_r) *lse_r = m + std::log(sum);
      }
      // out block (nq, D) = P (nq, nk) · V (nk, D), written straight into out's strided rows.
      const T* vb = v + (b * Tk + lo) * s.Hkv * s.D + (h / group) * s.D;
      T* ob = out + (b * s.T + i0) * s.H * s.D + h * s.D;
      gemm<T>(false, false, nq, s.D, nk, T(1), scores.data(), nk, vb, s.Hkv * s.D, T(0), ob, s.H * s.D);
    }
  }
}

// With S = scale·Q·Kᵀ, P = softmax(S), O = P·V:
//   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP - δ) with δ_t = Σ_d dO_td O_td,
//   dQ = scale · dS·K,  dK = scale · dSᵀ·Q.
// One (b, h) per work item so dQ rows have one writer; dK/dV of a query head go to a private
// (T, D) buffer (or straight into dk/dv without GQA) and the group's heads are summed at the end.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const int32_t* segment_ids, T* dq, T* dk, T* dv, const AttentionShape& s) {
  check_shape(s);
  if (s.keys() != s.T || s.q_offset != 0)
    fail("attention", "the backward takes keys = queries (no KV cache); got {} keys for {} queries at offset {}",
         s.keys(), s.T, s.q_offset);
  const std::vector<int64_t> first = first_keys(segment_ids, s);
  const int64_t group = s.H / s.Hkv, D = s.D;
  const int64_t q_ld = s.H * D, kv_ld = s.Hkv * D;
  const bool direct = group == 1;
  // Per query head dK, dV (B, H, T, D) when heads share a kv head.
  std::vector<T> dk_heads(direct ? 0 : size_t(s.B * s.H * s.T * D));
  std::vector<T> dv_heads(direct ? 0 : size_t(s.B * s.H * s.T * D));
  const int64_t n_blocks = (s.T + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel if (s.B * s.H * s.T * s.T * s.D > kParallelMinWork)
  {
    std::vector<T> p_buf(size_t(kQueryBlock * s.T)), dp_buf(size_t(kQueryBlock * s.T));
    std::vector<T> delta(static_cast<size_t>(kQueryBlock));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < s.B * s.H; ++item) {
      const int64_t b = item / s.H, h = item % s.H, kvh = h / group;
      T* dk_h = direct ? dk + b * s.T * kv_ld + h * D : dk_heads.data() + item * s.T * D;
      T* dv_h = direct ? dv + b * s.T * kv_ld + h * D : dv_heads.data() + item * s.T * D;
      const int64_t ld_h = direct ? kv_ld : D;
      for (int64_t t = 0; t < s.T; ++t) {
        std::fill(dk_h + t * ld_h, dk_h + t * ld_h + D, T(0));
        std::fill(dv_h + t * ld_h, dv_h + t * ld_h + D, T(0));
      }
      const T scale = T(1) / std::sqrt(T(D));
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t i0 = blk * kQueryBlock, nq = std::min(kQueryBlock, s.T - i0);
        const int64_t lo = block_first_key(first, s, b, i0, nq), nk = i0 + nq - lo;
        const T* qb = q + (b * s.T + i0) * q_ld + h * D;
        const T* dob = dout + (b * s.T + i0) * q_ld + h * D;
        const T* kb = k + (b * s.T + lo) * kv_ld + kvh * D;
        const T* vb = v + (b * s.T + lo) * kv_ld + kvh * D;
        T* dqb = dq + (b * s.T + i0) * q_ld + h * D;
        masked_scores(q, k, segment_ids, first, s, b, h, i0, nq, lo, nk, p_buf.data());
        for (int64_t r = 0; r < nq; ++r) {
          T* row = p_buf.data() + r * nk;
          const T l = lse[(b * s.H + h) * s.T + i0 + r];
          if (std::isinf(l)) {  // attends nothing: P = 0, so every gradient of the row is 0
            std::fill(row, row + nk, T(0));
            delta[size_t(r)] = 0;
            continue;
          }
#pragma omp simd
          for (int64_t c = 0; c < nk; ++c) row[c] = exp_t(row[c] - l);
          const T* o = out + (b * s.T + i0 + r) * q_ld + h * D;
          const T* g = dob + r * q_ld;
          T d = 0;
#pragma omp simd reduction(+ : d)
          for (int64_t j = 0; j < D; ++j) d += g[j] * o[j];
          delta[size_t(r)] = d;
        }
        // dV[lo:] += Pᵀ · dO;  dP = dO · Vᵀ.
        gemm<T>(true, false, nk, D, nq, T(1), p_buf.data(), nk, dob, q_ld, T(1), dv_h + lo * ld_h, ld_h);
        gemm<T>(false, true, nq, nk, D, T(1), dob, q_ld, vb, kv_ld, T(0), dp_buf.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          const T* p = p_buf.data() + r * nk;
          T* ds = dp_buf.data() + r * nk;
          const T d = delta[size_t(r)];
#pragma omp simd
          for (int64_t c = 0; c < nk; ++c) ds[c] = p[c] * (ds[c] - d);
        }
        // dQ = scale · dS · K (overwrites);  dK[lo:] += scale · dSᵀ · Q.
        gemm<T>(false, false, nq, D, nk, scale, dp_buf.data(), nk, kb, kv_ld, T(0), dqb, q_ld);
        gemm<T>(true, false, nk, D, nq, scale, dp_buf.data(), nk, qb, q_ld, T(1), dk_h + lo * ld_h, ld_h);
      }
    }
    if (!direct) {
      // Sum the group's query heads into each kv head.
#pragma omp for schedule(static)
      for (int64_t bt = 0; bt < s.B * s.T; ++bt) {
        const int64_t b = bt / s.T, t = bt % s.T;
        for (int64_t kvh = 0; kvh < s.Hkv; ++kvh) {
          T* dk_row = dk + bt * kv_ld + kvh * D;
          T* dv_row = dv + bt * kv_ld + kvh * D;
          std::fill(dk_row, dk_row + D, T(0));
          std::fill(dv_row, dv_row + D, T(0));
          for (int64_t g = 0; g < group; ++g) {
            const int64_t head = (b * s.H + kvh * group + g) * s.T + t;
            const T* sk = dk_heads.data() + head * D;
            const T* sv = dv_heads.data() + head * D;
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) {
              dk_row[j] += sk[j];
              dv_row[j] += sv[j];
            }
          }
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*, const int32_t*, float*, float*,
                                       const AttentionShape&);
template void attention_forward<double>(const double*, const double*, const double*, const int32_t*, double*,
                                        double*, const AttentionShape&);
template void attention_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                        const float*, const int32_t*, float*, float*, float*, const AttentionShape&);
template void attention_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, const double*, const int32_t*, double*, double*, double*,
                                         const AttentionShape&);

}  // namespace qlora::cpu
