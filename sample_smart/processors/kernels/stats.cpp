// stats.cpp: the C++ kernel of sample_smart/processors/native_stats.py (its docstring says what it computes).
// Built with every other .cpp file of this folder into one library by sample_smart/processors/native.py.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace stats {
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4)));  // an unaligned load
constexpr int64_t L = 16;  // float lanes of vf
constexpr float D_MIN = -87.0f;  // exp(D_MIN) = 1.6e-38 > FLT_MIN: no subnormals

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline vf splat(float v) { return vf{} + v; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// exp(v) for v >= D_MIN: 2^n P(r), n = rint(v log2 e) (the low bits of v log2 e + 1.5 2^23),
// r = v - n ln 2 in [-ln2/2, ln2/2], P ATen's exp_u20 polynomial
inline vf vexp(vf v) {
  const float magic = 12582912.0f;
  const vf y = v * 1.44269502f + magic;
  const vf r = v - (y - magic) * 0.693147182f;
  vf p = r * 0.00828929059f + 0.0418978221f;
  p = r * p + 0.166676521f;
  p = r * p + 0.499991506f;
  p = r * p + 0.999999701f;
  p = r * p + 1.0f;
  vi bits;
  std::memcpy(&bits, &y, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

#if defined(__clang__)
#define SS_SWAP(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define SS_SWAP(v, ...) __builtin_shuffle(v, vi{__VA_ARGS__})
#endif
inline float hmax(vf v) {  // a butterfly: every lane ends with the max
  v = vmax(v, SS_SWAP(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v = vmax(v, SS_SWAP(v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  v = vmax(v, SS_SWAP(v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  v = vmax(v, SS_SWAP(v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return v[0];
}

inline double hsum(vf v) {
  double s = 0.0;
  for (int64_t l = 0; l < L; ++l) s += v[l];
  return s;
}

// max of x[b, e): the order of a chunk's comparisons never changes a max (no NaN)
inline float chunk_max(const float* x, int64_t b, int64_t e) {
  float mx = -INFINITY;
  int64_t j = b;
  if (e - b >= L) {
    vf acc = load(x + j);
    for (j += L; j + L <= e; j += L) acc = vmax(load(x + j), acc);
    mx = hmax(acc);
  }
  for (; j < e; ++j) mx = x[j] > mx ? x[j] : mx;
  return mx;
}

// S += sum exp(d), T += sum exp(d) d over x[b, e), d = max((x - c) a - m, D_MIN); instantiated
// without the subtraction for c = 0 (x - 0 is x bit for bit)
template <bool SHIFTED>
inline void add_terms(const float* x, int64_t b, int64_t e, float c_, float a, float m, double& S, double& T) {
  const float c = SHIFTED ? c_ : 0.0f;
  const vf lo = splat(D_MIN);
  vf s0{}, s1{}, t0{}, t1{};
  int64_t j = b;
  for (; j + 2 * L <= e; j += 2 * L) {
    const vf d0 = vmax((load(x + j) - c) * a - m, lo), d1 = vmax((load(x + j + L) - c) * a - m, lo);
    const vf e0 = vexp(d0), e1 = vexp(d1);
    s0 += e0;
    s1 += e1;
    t0 += e0 * d0;
    t1 += e1 * d1;
  }
  for (; j + L <= e; j += L) {
    const vf d0 = vmax((load(x + j) - c) * a - m, lo);
    const vf e0 = vexp(d0);
    s0 += e0;
    t0 += e0 * d0;
  }
  S += hsum(s0 + s1);
  T += hsum(t0 + t1);
  for (; j < e; ++j) {
    const vf d = vmax(splat((x[j] - c) * a - m), lo);
    const vf ed = vexp(d);
    S += ed[0];
    T += ed[0] * d[0];
  }
}

// add_terms over x[b, e) at the raw max M, without the subtraction when c = 0
inline void add_block(const float* x, int64_t b, int64_t e, float c, float a, float M, double& S, double& T) {
  const float m = (M - c) * a;  // the tempered max, as plans.thresholds computes it
  if (c == 0.0f) add_terms<false>(x, b, e, c, a, m, S, T);
  else add_terms<true>(x, b, e, c, a, m, S, T);
}

inline void write_sums(float M, double S, double T, float* out) {
  out[0] = M;
  out[1] = static_cast<float>(S);
  out[2] = static_cast<float>(T);
}

// the sums over a row whose raw max M is known: no chunk maxima, no rescaling
void row_at(const float* x, int64_t V, float a, float c, float M, float* out) {
  double S = 0.0, T = 0.0;
  if (M > -INFINITY) {  // blocks of 1024: float32 lanes within one, float64 across them
    for (int64_t b = 0; b < V; b += 1024) add_block(x, b, std::min(V, b + 1024), c, a, M, S, T);
  }
  write_sums(M, S, T, out);
}

void row(const float* x, int64_t V, int64_t W, int64_t C, float a, float c, float* cm, float* out) {
  const int64_t per_block = std::max<int64_t>(1, 1024 / W);  // chunks read per block
  float M = -INFINITY;  // the raw max so far
  double S = 0.0, T = 0.0;  // relative to the tempered max so far
  for (int64_t c0 = 0; c0 < C; c0 += per_block) {
    const int64_t c1 = std::min(C, c0 + per_block);
    float bm = -INFINITY;
    for (int64_t k = c0; k < c1; ++k) {
      cm[k] = chunk_max(x, k * W, std::min(V, (k + 1) * W));
      bm = cm[k] > bm ? cm[k] : bm;
    }
    if (bm > M) {
      if (M > -INFINITY) {  // the sums so far, relative to the new max
        const double delta = static_cast<double>((M - c) * a) - static_cast<double>((bm - c) * a);
        const double f = std::exp(delta);
        T = f * (T + delta * S);
        S = f * S;
      }
      M = bm;
    }
    if (M > -INFINITY) add_block(x, c0 * W, std::min(V, c1 * W), c, a, M, S, T);
  }
  write_sums(M, S, T, out);
}
}  // namespace stats

// known_max: null, or the rows' raw maxima (then cmax is not written: the chunk maxima are known too).
// rows: null (row r of the output is row r of x), or B row numbers of x, each below X, the rows of x
// (row r of the output is row rows[r] of x; the caller's index, checked here before anything is read).
extern "C" int ss_row_exp_sums_f32(const float* x, int64_t X, const int64_t* rows, int64_t B, int64_t V, int64_t W,
                                   const float* inv_t, const float* shift, const float* known_max, float* cmax,
                                   float* sums, int threads) {
  if (B < 0 || V <= 0 || W <= 0 || X < 0 || (!rows && B > X)) return 1;
  if (rows) {
    for (int64_t r = 0; r < B; ++r) {
      if (rows[r] < 0 || rows[r] >= X) return 1;
    }
  }
  const int64_t C = (V + W - 1) / W;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < B; ++r) {
    const float* row = x + (rows ? rows[r] : r) * V;
    if (known_max) stats::row_at(row, V, inv_t[r], shift[r], known_max[r], sums + 3 * r);
    else stats::row(row, V, W, C, inv_t[r], shift[r], cmax + r * C, sums + 3 * r);
  }
  return 0;
}
