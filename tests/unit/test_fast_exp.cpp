// backend/cpu/fast_exp.h: fast_expf agrees with std::exp to a few ulp over its whole range, gives 0
// below it and +inf-free saturation above, and returns NaN for NaN (the NaN/Inf guard of the
// trainer relies on a NaN logit reaching the loss). Built with -fsanitize=float-cast-overflow
// (tests/CMakeLists.txt), so converting the NaN to int (undefined behaviour) aborts the test.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/cpu/fast_exp.h"

namespace qlora {
namespace {

using cpu::fast_expf;

// The polynomial is Cephes' (about 1 ulp), the range reduction adds at most 1 ulp of r: 4 ulp,
// that is 4 * 2^-23 relative, bounds both with margin (measured: under 2 ulp).
constexpr double kRelTol = 4.0 * 1.1920929e-7;

TEST(FastExp, MatchesStdExpOverItsRange) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(double(x));
    const double rel = std::abs(double(fast_expf(x)) - want) / want;
    worst = std::max(worst, rel);
    ASSERT_LE(rel, kRelTol) << "x = " << x;
  }
  EXPECT_GT(worst, 0.0);  // the comparison saw real differences, not a copy of std::exp
}

TEST(FastExp, NaNAndInfinities) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isnan(fast_expf(nan)));
  EXPECT_TRUE(std::isnan(fast_expf(-nan)));
  EXPECT_EQ(fast_expf(-inf), 0.0f);
  EXPECT_EQ(fast_expf(-100.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(fast_expf(inf)));  // saturates at exp(88), as the softmaxes expect
  EXPECT_EQ(fast_expf(0.0f), 1.0f);
  // A vectorised loop with a NaN among finite values: only that lane is NaN.
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = i == 5 ? nan : float(i) - 8.0f;
  for (float& x : v) x = fast_expf(x);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(std::isnan(v[i]), i == 5) << i;
}

}  // namespace
}  // namespace qlora
