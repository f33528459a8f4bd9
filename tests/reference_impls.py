"""Textbook implementations of every knob, one row at a time, in float64 numpy.

Written straight from the definitions (the README's semantics and each method's paper), with
no shared code with ``sample_smart.processors``. Each rule returns ``(keep, near)``: the kept
set and the tokens whose decision sits within a relative 1e-4 of the rule's boundary, where a
float32 implementation may legitimately decide the other way.
"""

from __future__ import annotations

import math

import numpy as np

REL = 1e-4


def softmax(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    m = x[finite].max()
    e = np.where(finite, np.exp(np.where(finite, x - m, 0.0)), 0.0)
    return e / e.sum()


def entropy(x: np.ndarray) -> float:
    p = softmax(x)
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def _threshold(q: np.ndarray, thr: float):
    """keep q >= thr; near when log q within REL of log thr."""
    keep = q >= thr
    with np.errstate(divide="ignore"):
        near = np.abs(np.log(np.maximum(q, 1e-300)) - math.log(max(thr, 1e-300))) < REL
    return keep, near


def temperature_logits(x: np.ndarray, cfg: dict) -> np.ndarray:
    if cfg.get("edt_var") is not None:
        n, theta, t0 = cfg["edt_var"]
        h = entropy(x)
        t = t0 * n ** (theta / h)
        return x / t
    t = cfg.get("temperature")
    if t is not None and t > 0:
        return x / t
    return x


def kept_set(x: np.ndarray, cfg: dict):
    """Kept set of one row (float64 logits, -inf allowed) under a from_dict-style config."""
    x = temperature_logits(np.asarray(x, dtype=np.float64), cfg)
    v = x.shape[0]
    p = softmax(x)
    pmax = p.max()
    keep = np.ones(v, dtype=bool)
    near = np.zeros(v, dtype=bool)

    def inter(k, n):
        nonlocal keep, near
        keep &= k
        near |= n

    def greedy():
        k = np.zeros(v, dtype=bool)
        k[p == pmax] = True
        return k, np.zeros(v, dtype=bool)

    def top_k(k):
        order = np.sort(x)[::-1]
        kth = order[min(k, v) - 1]
        with np.errstate(invalid="ignore"):
            return x >= kth, np.abs(x - kth) < REL * max(1.0, abs(kth))

    decile = min(math.floor(10 * pmax), 9)
    near_decile = abs(10 * pmax - round(10 * pmax)) < 1e-5
    if cfg.get("temperature") == 0 and cfg.get("edt_var") is None:
        inter(*greedy())
    if cfg.get("top_k"):
        inter(*top_k(cfg["top_k"]))
    if cfg.get("dynamic_top_k") is not None:
        k = max(1, cfg["dynamic_top_k"][9 - decile])
        kk, nn = top_k(k)
        inter(kk, nn | (near_decile & ~(p == pmax)))
    if cfg.get("top_p") is not None and cfg["top_p"] < 1:
        order = np.argsort(-p, kind="stable")
        before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
        k = np.zeros(v, dtype=bool)
        n = np.zeros(v, dtype=bool)
        k[order] = before < cfg["top_p"]
        n[order] = np.abs(before - cfg["top_p"]) < 2e-5  # fp32 cumsum error
        # ties with the last kept token's probability are kept too
        last = p[order][k[order]].min()
        k |= p >= last
        inter(k, n | (np.abs(p - last) < REL * last))
    if cfg.get("min_p"):
        inter(*_threshold(p, cfg["min_p"] * pmax))
    if cfg.get("prob_threshold"):
        inter(*_threshold(p, cfg["prob_threshold"]))
    if cfg.get("hewitt_epsilon"):
        eps = cfg["hewitt_epsilon"]
        h = entropy(x)
        inter(*_threshold(p, min(eps, math.sqrt(eps) * math.exp(-h))))
    if cfg.get("cal_acc") is not None:
        a, b, thr = cfg["cal_acc"]
        base = {"e": math.e, 10: 10.0}[cfg.get("cal_acc_base", 10)]  # 10.0 looks up 10
        with np.errstate(divide="ignore"):
            acc = base**a * p**b
        inter(*_threshold(acc, thr))
    if cfg.get("greedy_threshold"):
        if abs(pmax - cfg["greedy_threshold"]) < REL:
            near |= p != pmax
        if pmax < cfg["greedy_threshold"]:
            inter(*greedy())
    if cfg.get("confidence_bin_only"):
        if near_decile:
            near |= p != pmax
        if decile + 1 != cfg["confidence_bin_only"]:
            inter(*greedy())
    if cfg.get("top_n_sigma"):
        fin = x[np.isfinite(x)]
        sigma = fin.std()
        thr = x.max() - cfg["top_n_sigma"] * sigma
        inter(x >= thr, np.abs(x - thr) < REL * max(1.0, abs(thr)))
    if cfg.get("top_a"):
        inter(*_threshold(p, cfg["top_a"] * pmax**2))
    keep[p == pmax] = True  # the argmax is never removed
    keep &= np.isfinite(x)
    return keep, near, x
