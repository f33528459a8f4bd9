// select.cpp: the C++ kernel of sample_smart/processors/native_select.py (its docstring says what it computes).
// Built with every other .cpp file of this folder into one library by sample_smart/processors/native.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace {
// topk's order: NaN above every number
inline bool nan_first_greater(float a, float b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

void exact_row(const float* x, int64_t V, int64_t k, float* out, std::vector<float>& buf) {
  buf.assign(x, x + V);
  std::partial_sort(buf.begin(), buf.begin() + k, buf.end(), nan_first_greater);
  std::copy(buf.begin(), buf.begin() + k, out);
}

void select_row(const float* x, int64_t V, const float* cm, int64_t C, int64_t W, int64_t k,
                float* out, std::vector<float>& buf) {
  bool has_nan = false;
  for (int64_t c = 0; c < C; ++c) has_nan |= std::isnan(cm[c]);
  if (has_nan) {  // exact, as topk orders NaN
    exact_row(x, V, k, out, buf);
    return;
  }
  float t = -INFINITY;
  if (k < C) {
    buf.assign(cm, cm + C);
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<float>());
    t = buf[k - 1];
  }
  buf.clear();
  for (int64_t c = 0; c < C; ++c) {
    if (!(cm[c] >= t)) continue;
    const int64_t end = std::min(V, (c + 1) * W);
    for (int64_t j = c * W; j < end; ++j) {
      if (x[j] >= t) buf.push_back(x[j]);
    }
  }
  // buf holds at least k values (see the module's docstring) when cm holds the maxima of x; if
  // it does not (maxima computed without NaN, or not of these rows), the exact way, never past buf
  if (static_cast<int64_t>(buf.size()) < k) {
    exact_row(x, V, k, out, buf);
    return;
  }
  std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<float>());
  std::sort(buf.begin(), buf.begin() + k, std::greater<float>());
  std::copy(buf.begin(), buf.begin() + k, out);
}
}  // namespace

extern "C" int ss_largest_values_f32(const float* x, int64_t B, int64_t V, const float* cmax, int64_t C,
                                     int64_t W, const int64_t* rows, int64_t R, int64_t k,
                                     const int64_t* ks, float* out, int threads) {
  if (B < 0 || V <= 0 || C <= 0 || W <= 0 || R < 0 || k < 1 || k > V || (C - 1) * W >= V || C * W < V) return 1;
  if (!rows && R > B) return 1;
  for (int64_t r = 0; r < R; ++r) {  // memory safety: every row of x, every own k, checked first
    if (rows && (rows[r] < 0 || rows[r] >= B)) return 1;
    if (ks && (ks[r] < 1 || ks[r] > k)) return 1;
  }
  int failed = 0;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> buf;
    buf.reserve(static_cast<size_t>(std::min<int64_t>(V, 64 * (k + 64))));
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t own = ks ? ks[r] : k;
      float* row_out = out + r * k;
      try {
        select_row(x + (rows ? rows[r] : r) * V, V, cmax + r * C, C, W, own, row_out, buf);
        std::fill(row_out + own, row_out + k, -INFINITY);  // past the row's own k: nothing
      } catch (...) {
#pragma omp atomic write
        failed = 1;
      }
    }
  }
  return failed ? 2 : 0;
}
