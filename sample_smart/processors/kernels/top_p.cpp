// top_p.cpp: the C++ kernel of sample_smart/processors/native_top_p.py (its docstring says what it computes).
// Built with every other .cpp file of this folder into one library by sample_smart/processors/native.py;
// one translation unit in file-name order, so stats.cpp's vector exp (stats::vexp) is defined above.
#include <algorithm>
#include <iterator>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace top_p {
constexpr int BITS = 11;  // radix digits of the 32-bit key: 11 + 11 + 10
constexpr int BINS = 1 << BITS;

// order-preserving map float -> uint32 (no NaN): a < b  <=>  key(a) < key(b)
inline uint32_t key(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

inline float value(uint32_t k) {
  const uint32_t b = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

inline float tempered(float x, float c, float a) { return (x - c) * a; }  // plans._tempered's operations

// key() of 16 floats
inline stats::vi keys(stats::vf y) {
  stats::vi b;
  std::memcpy(&b, &y, sizeof b);
  return b ^ ((b >> 31) | static_cast<int32_t>(0x80000000u));  // sign set: ~b, else b with the sign set
}

// the 16 tempered logits at x[i] (the last, partial group padded with -inf), their keys and terms
// exp(y - m) (the vector exp of stats.cpp, clamped at D_MIN; 0 for -inf)
struct Group {
  stats::vf y, e;
  stats::vi k;
};

inline Group group(const float* x, int64_t i, int64_t V, float c, float a, float m) {
  Group g;
  if (i + stats::L <= V) {
    g.y = (stats::load(x + i) - c) * a;  // tempered(), 16 lanes
  } else {
    for (int64_t l = 0; l < stats::L; ++l) g.y[l] = i + l < V ? tempered(x[i + l], c, a) : -INFINITY;
  }
  g.e = stats::vexp(stats::vmax(g.y - m, stats::splat(stats::D_MIN)));
  g.e = g.y == -INFINITY ? stats::splat(0.0f) : g.e;
  g.k = keys(g.y);
  return g;
}

// the bin where the running mass from the top first reaches target (above: the mass of the bins
// over it, updated); -1 when no bin holds a token (every finite token has a term of at least
// exp(D_MIN) > 0, -inf has 0); when rounding leaves the total a hair short of target, the lowest
// bin holding a token (the crossing is its lowest token)
inline int crossing(const double* mass, double target, double& above) {
  int lowest = -1;
  for (int b = BINS - 1; b >= 0; --b) {
    if (!(mass[b] > 0.0)) continue;
    lowest = b;
    if (above + mass[b] >= target) return b;
    above += mass[b];
  }
  if (lowest >= 0) above -= mass[lowest];  // the lowest bin is taken: its mass goes back
  return lowest;
}

struct Scratch {
  std::vector<double> mass = std::vector<double>(BINS);
  std::vector<std::pair<uint32_t, float>> band;
};

// tau = max { y_j : sum_{y_i >= y_j} exp(y_i - m) >= target } of one row (radix select on the
// keys, masses summed in float64); -inf when the row holds no finite token
float row_tau(const float* x, int64_t V, float c, float a, float m, double target, Scratch& w) {
  // pass 1: every token's mass by its key's top 11 bits (-inf adds its 0 to bin 0)
  std::fill(w.mass.begin(), w.mass.end(), 0.0);
  for (int64_t i = 0; i < V; i += stats::L) {
    const Group g = group(x, i, V, c, a, m);
    for (int64_t l = 0; l < stats::L; ++l) w.mass[static_cast<uint32_t>(g.k[l]) >> (32 - BITS)] += g.e[l];
  }
  double above = 0.0;
  const int b1 = crossing(w.mass.data(), target, above);
  if (b1 < 0) return -INFINITY;
  // pass 2: the tokens of that bin, kept with their terms
  w.band.clear();
  for (int64_t i = 0; i < V; i += stats::L) {
    const Group g = group(x, i, V, c, a, m);
    const stats::vi hit = (g.k >> (32 - BITS) & (BINS - 1)) == b1 & (g.y != -INFINITY);
    bool any = false;
    for (int64_t l = 0; l < stats::L; ++l) any |= hit[l] != 0;
    if (!any) continue;
    for (int64_t l = 0; l < stats::L; ++l) {
      if (hit[l]) w.band.emplace_back(static_cast<uint32_t>(g.k[l]), g.e[l]);
    }
  }
  // the band by the keys' next 11 bits, then the tokens sharing those 22 bits, largest first,
  // equal keys as one value
  std::fill(w.mass.begin(), w.mass.end(), 0.0);
  for (const auto& t : w.band) w.mass[(t.first >> (32 - 2 * BITS)) & (BINS - 1)] += t.second;
  const int b2 = crossing(w.mass.data(), target, above);
  const uint32_t prefix = (static_cast<uint32_t>(b1) << BITS) | static_cast<uint32_t>(b2);
  const auto end = std::partition(w.band.begin(), w.band.end(),
                                  [prefix](const auto& t) { return (t.first >> (32 - 2 * BITS)) == prefix; });
  std::sort(w.band.begin(), end, [](const auto& u, const auto& v) { return u.first > v.first; });
  for (auto j = w.band.begin(); j != end;) {
    const uint32_t k = j->first;
    for (; j != end && j->first == k; ++j) above += j->second;
    if (above >= target) return value(k);
  }
  return value(std::prev(end)->first);  // rounding: the crossing is the band's smallest value
}
}  // namespace top_p

// The top-p threshold of R rows of x ([X, V] float32 raw logits; rows: R row numbers below X, the
// caller's index, checked here before anything is read), each tempered as (x - shift) * inv_t,
// with m its tempered max, s = sum exp(y - m) and p its top-p: tau_out[r] = max(tau_in[r],
// min(row tau, m[r])). write != 0: each such row is written in place, y where y >= tau_out, else -inf.
extern "C" int ss_top_p_rows_f32(float* x, int64_t X, const int64_t* rows, int64_t R, int64_t V,
                                 const float* inv_t, const float* shift, const float* m, const float* s,
                                 const float* p, const float* tau_in, float* tau_out, int write, int threads) {
  if (R < 0 || V <= 0 || X < 0 || !rows) return 1;
  for (int64_t r = 0; r < R; ++r) {
    if (rows[r] < 0 || rows[r] >= X) return 1;
  }
  int failed = 0;
#pragma omp parallel num_threads(threads)
  {
    top_p::Scratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < R; ++r) {
      float* row = x + rows[r] * V;
      const float c = shift[r], a = inv_t[r];
      try {
        const double target = static_cast<double>(p[r] * s[r]);  // the float product the programs take
        const float found = top_p::row_tau(row, V, c, a, m[r], target, scratch);
        const float tau = std::max(tau_in[r], std::min(found, m[r]));
        tau_out[r] = tau;
        if (write) {
          for (int64_t i = 0; i < V; ++i) {
            const float y = top_p::tempered(row[i], c, a);
            row[i] = y >= tau ? y : -INFINITY;
          }
        }
      } catch (...) {
#pragma omp atomic write
        failed = 1;
      }
    }
  }
  return failed ? 2 : 0;
}
