"""The row statistics' exp pass of CPU float32 rows in one C++ loop: chunk maxima, ``s`` and the
entropy's sum, reading each logit from memory once.

For a row ``x`` (raw logits, ``V`` of them), a shift ``c`` and an inverse temperature ``a`` it
returns (:func:`row_exp_sums`):

- ``cmax``: the max of every chunk of ``CHUNK`` raw logits (:func:`~sample_smart.processors.select.chunk_maxima`,
  bit for bit), and ``M``, the raw row max;
- with the tempered row ``y_i = (x_i - c) a`` and its max ``m = (M - c) a`` (the float operations of
  :func:`~sample_smart.processors.plans.thresholds`), ``d_i = y_i - m``:
  ``S = sum_i exp(d_i)`` and ``T = sum_i exp(d_i) d_i`` with ``d_i`` clamped at ``D_MIN = -87``, from which
  :mod:`~sample_smart.processors.stats` gives ``z = m + ln S`` and the entropy ``H = ln S - T / S``
  in nats.

:func:`row_exp_sums_at` gives the same sums of rows whose raw max is already known (one pass of
the exp terms, no chunk maxima): the tempered rows' sums after an untempered pass has given their
max and, through their entropy, their EDT temperature.

Why: inductor compiles the chunk maxima and the exp pass as two loops over the batch, so each row
comes from memory twice, and it keeps a sum of more than 4096 terms in its cascade helper (an
accumulator in memory); two sums made the exp pass 1.5x the one-sum pass (benchmarks/README.md).
Here each row is read in blocks of 16 chunks: the block's chunk maxima (from memory), then its
``exp`` terms (from the L1 cache), summed in float32 lanes within the block (at most 32 terms per
lane) and in float64 across blocks, relative to the running max (``S <- S e^{m_old - m_new}``,
``T <- e^{m_old - m_new} (T + (m_old - m_new) S)`` when a block raises it: the online softmax of
Milakov & Gimelshein, 2018, "Online normalizer calculation for softmax"), so the sums are at least
as accurate as the compiled pass's.

Conventions, where they differ from ``torch.exp``: the ``exp`` is ATen's ``exp_u20`` polynomial
(:mod:`~sample_smart.processors.fast_exp`; relative error below 4e-7) with ``n = rint(d log2 e)``
taken from the float's bits; ``d`` is first clamped to :data:`D_MIN` ``= -87``, just above
``ln FLT_MIN = -87.34``, so every term and product is a normal float (a token that far below the
top, ``-inf`` included, adds ``1.6e-38`` to ``S``, where ``S >= 1``: nothing a float32 sum keeps).
Clamped at ``ln FLT_MIN`` itself, ``exp`` rounds to subnormals, and on x86 every vector operation
on a subnormal takes a microcode assist: rows whose tokens mostly lie that far below the top (a
low EDT temperature) then took ten times as long. ``y_i - m`` is one fused
multiply-add, ``(x_i - c) a - m``. The kernel is part of the library of
:mod:`~sample_smart.processors.native` (built for the machine's vector instructions); without it,
and off the CPU, :func:`row_exp_sums` is the same formulas in torch. Rows run in parallel (OpenMP,
the caller's torch thread count). Logits with NaN are outside the contract (the pipeline refuses
them).
"""

from __future__ import annotations

import ctypes

import torch

from sample_smart.processors import native
from sample_smart.processors.select import CHUNK, chunk_maxima

__all__ = ["SOURCE", "applies", "row_exp_sums", "row_exp_sums_at"]

SOURCE = r"""
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

// the sums over a row whose raw max M is known: no chunk maxima, no rescaling
void row_at(const float* x, int64_t V, float a, float c, float M, float* out) {
  double S = 0.0, T = 0.0;
  const float m = (M - c) * a;
  if (M > -INFINITY) {
    for (int64_t b = 0; b < V; b += 1024) {  // float32 lanes within a block, float64 across blocks
      if (c == 0.0f) add_terms<false>(x, b, std::min(V, b + 1024), c, a, m, S, T);
      else add_terms<true>(x, b, std::min(V, b + 1024), c, a, m, S, T);
    }
  }
  out[0] = M;
  out[1] = static_cast<float>(S);
  out[2] = static_cast<float>(T);
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
    if (!(M > -INFINITY)) continue;
    if (c == 0.0f) add_terms<false>(x, c0 * W, std::min(V, c1 * W), c, a, (M - c) * a, S, T);
    else add_terms<true>(x, c0 * W, std::min(V, c1 * W), c, a, (M - c) * a, S, T);
  }
  out[0] = M;
  out[1] = static_cast<float>(S);
  out[2] = static_cast<float>(T);
}
}  // namespace stats

// known_max: null, or the rows' raw maxima (then cmax is not written: the chunk maxima are known too)
extern "C" int ss_row_exp_sums_f32(const float* x, int64_t B, int64_t V, int64_t W, const float* inv_t,
                                   const float* shift, const float* known_max, float* cmax, float* sums,
                                   int threads) {
  if (B < 0 || V <= 0 || W <= 0) return 1;
  const int64_t C = (V + W - 1) / W;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < B; ++r) {
    if (known_max) stats::row_at(x + r * V, V, inv_t[r], shift[r], known_max[r], sums + 3 * r);
    else stats::row(x + r * V, V, W, C, inv_t[r], shift[r], cmax + r * C, sums + 3 * r);
  }
  return 0;
}
"""

D_MIN = -87.0  # the clamp of d (module docstring), as the kernel's
I64, PTR = ctypes.c_int64, ctypes.c_void_p
ARGTYPES = [PTR, I64, I64, I64, PTR, PTR, PTR, PTR, PTR, ctypes.c_int]


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`row_exp_sums` of ``x`` runs the native kernel: float32 rows on the CPU, the
    library loaded, and at least one chunk per row."""
    return native.available() and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2


@torch.library.custom_op("sample_smart::row_exp_sums", mutates_args=(), device_types="cpu")
def row_exp_sums(x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cmax, sums)`` of the rows of ``x`` ([B, V] float32): ``cmax`` [B, ceil(V / CHUNK)] the raw
    chunk maxima, ``sums`` [B, 3] the columns ``(M, S, T)`` (module docstring) for the tempered rows
    ``(x - shift) * inv_t`` (``inv_t``, ``shift``: float32 [B]). An operator of its own, so a
    compiled program calls it as one opaque kernel."""
    fn = native.function("ss_row_exp_sums_f32", ARGTYPES) if applies(x) else None
    if fn is None:
        return _torch_sums(x, inv_t, shift)
    x = x.contiguous()
    inv_t, shift = (t.to(torch.float32).contiguous() for t in (inv_t, shift))
    batch, vocab = x.shape
    cmax = torch.empty(batch, -(-vocab // CHUNK), dtype=torch.float32)
    sums = torch.empty(batch, 3, dtype=torch.float32)
    status = fn(
        x.data_ptr(),
        batch,
        vocab,
        CHUNK,
        inv_t.data_ptr(),
        shift.data_ptr(),
        None,
        cmax.data_ptr(),
        sums.data_ptr(),
        torch.get_num_threads(),
    )
    if status != 0:  # a shape the kernel refuses (it checks before reading anything)
        return _torch_sums(x, inv_t, shift)
    return cmax, sums


@torch.library.custom_op("sample_smart::row_exp_sums_at", mutates_args=(), device_types="cpu")
def row_exp_sums_at(x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor, raw_max: torch.Tensor) -> torch.Tensor:
    """:func:`row_exp_sums`' ``sums`` [B, 3] of rows whose raw max ``raw_max`` (float32 [B], its
    ``M`` column, e.g. from an earlier call on the same rows) is known: one pass of the exp terms,
    no chunk maxima (EDT on every row: the tempered sums after the untempered ones)."""
    fn = native.function("ss_row_exp_sums_f32", ARGTYPES) if applies(x) else None
    if fn is None:
        return _torch_sums(x, inv_t, shift, raw_max)[1]
    x = x.contiguous()
    inv_t, shift, raw_max = (t.to(torch.float32).contiguous() for t in (inv_t, shift, raw_max))
    batch, vocab = x.shape
    sums = torch.empty(batch, 3, dtype=torch.float32)
    status = fn(
        x.data_ptr(),
        batch,
        vocab,
        CHUNK,
        inv_t.data_ptr(),
        shift.data_ptr(),
        raw_max.data_ptr(),
        None,
        sums.data_ptr(),
        torch.get_num_threads(),
    )
    return sums if status == 0 else _torch_sums(x, inv_t, shift, raw_max)[1]


@row_exp_sums_at.register_fake
def _(x, inv_t, shift, raw_max):
    return x.new_empty(x.shape[0], 3)


@row_exp_sums.register_fake
def _(x, inv_t, shift):
    batch, vocab = x.shape
    return x.new_empty(batch, -(-vocab // CHUNK)), x.new_empty(batch, 3)


def _torch_sums(
    x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor, raw_max: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`row_exp_sums` in torch (no library, another device): the same formulas, ``torch.exp``."""
    cmax = chunk_maxima(x)
    big = cmax.amax(dim=-1) if raw_max is None else raw_max
    m = (big - shift) * inv_t
    d = ((x - shift.unsqueeze(-1)) * inv_t.unsqueeze(-1) - m.unsqueeze(-1)).clamp(min=D_MIN)
    e = d.exp()
    return cmax, torch.stack([big, e.sum(dim=-1), (e * d).sum(dim=-1)], dim=-1)
