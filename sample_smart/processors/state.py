"""Per-row parameters of a batch, prepared once into tensors.

An engine builds a :class:`BatchState` when requests join, leave or move, and reuses it at
every decode step: :func:`~sample_smart.processors.pipeline.process_core` then reads only
tensors, and the *code path* (which rules run) is fixed by the host-side flags below, so no
step ever reads a device value back to the host.

Rows whose config does not use a knob get that knob's neutral value: a threshold of -inf in
log space (nothing removed), k = 0 for top-k, 1.0 for temperature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from sample_smart.config import DecodeConfig

__all__ = ["BatchState"]

_NEG_INF = -math.inf


def _log_or_neg_inf(x: float | None) -> float:
    return math.log(x) if x else _NEG_INF


@dataclass(frozen=True)
class BatchState:
    """Row parameters as device tensors plus host flags saying which rules any row uses.

    Tensors (all ``[B]`` unless noted, float32 unless noted):

    - ``temperature``: T of the row (1.0 when unset); ``edt``: bool, the row uses EDT;
      ``edt_log_n``, ``edt_theta``, ``edt_log_t0``: EDT parameters in log form;
    - ``greedy``: bool, keep only the argmax (temperature == 0);
    - ``top_k``: int64, 0 = off; ``dyn_k``: ``[B, 10]`` int64, dynamic top-k per p_max decile,
      **index 0 = highest decile** (as the reference scripts list them); ``dyn_on``: bool;
    - ``top_p``: nucleus mass (1.0 = off);
    - ``log_min_p``, ``log_eps``, ``log_eta``: natural logs of min_p, epsilon and eta's epsilon
      (-inf = off);
    - ``cal_log_p``: the calibrated-epsilon bound on ln p, (ln thr - A ln base) / B (-inf = off);
    - ``greedy_threshold`` (0 = off), ``conf_bin`` (int64, 1..10, 0 = off);
    - ``n_sigma`` (0 = off).
    """

    batch_size: int
    device: torch.device
    # host flags: which rules run (fixed per batch, never read from the device)
    any_temperature: bool
    any_edt: bool
    any_greedy: bool
    max_top_k: int  # largest k any row's top_k or dynamic_top_k may ask for (0 = no top-k rule)
    any_top_k: bool
    any_dynamic_top_k: bool
    any_top_p: bool
    any_min_p: bool
    any_eps: bool
    any_eta: bool
    any_cal: bool
    any_greedy_threshold: bool
    any_conf_bin: bool
    any_n_sigma: bool
    # device tensors
    temperature: torch.Tensor
    edt: torch.Tensor
    edt_log_n: torch.Tensor
    edt_theta: torch.Tensor
    edt_log_t0: torch.Tensor
    greedy: torch.Tensor
    top_k: torch.Tensor
    dyn_k: torch.Tensor
    dyn_on: torch.Tensor
    top_p: torch.Tensor
    log_min_p: torch.Tensor
    log_eps: torch.Tensor
    log_eta: torch.Tensor
    cal_log_p: torch.Tensor
    greedy_threshold: torch.Tensor
    conf_bin: torch.Tensor
    n_sigma: torch.Tensor

    @property
    def is_noop(self) -> bool:
        """No row changes anything: ``process_core`` returns the logits as they are."""
        return not (
            self.any_temperature or self.any_edt or self.any_greedy or self.any_top_k
            or self.any_dynamic_top_k or self.any_top_p or self.any_min_p or self.any_eps
            or self.any_eta or self.any_cal or self.any_greedy_threshold or self.any_conf_bin
            or self.any_n_sigma
        )

    def rows(self, start: int, stop: int) -> "BatchState":
        """The state of rows ``start:stop`` (tensor views, same host flags, so the same code path);
        cached, since an engine reuses one state for many steps."""
        if start == 0 and stop == self.batch_size:
            return self
        cache = self.__dict__.setdefault("_row_views", {})
        view = cache.get((start, stop))
        if view is None:
            sliced = {f.name: getattr(self, f.name)[start:stop] for f in fields(self)
                      if isinstance(getattr(self, f.name), torch.Tensor)}
            view = replace(self, batch_size=stop - start, **sliced)
            cache[(start, stop)] = view
        return view

    @property
    def needs_logsumexp(self) -> bool:
        return (self.any_eps or self.any_eta or self.any_cal or self.any_greedy_threshold
                or self.any_conf_bin or self.any_dynamic_top_k or self.any_top_p)

    @classmethod
    def from_configs(cls, configs: Sequence[DecodeConfig], device: torch.device | str = "cpu",
                     vocab_size: int | None = None) -> "BatchState":
        """Build the row tensors for ``configs`` (one per row) on ``device``.

        Built on the host from Python values and copied once (``non_blocking`` where the
        device allows): cost is O(B), independent of the vocabulary. With ``vocab_size`` known,
        a ``top_k`` of at least the vocabulary is off and ``dynamic_top_k`` entries are capped at
        it (the same kept sets), so a huge k never makes the batch select the whole vocabulary.
        """
        device = torch.device(device)
        rows = list(configs)
        for i, c in enumerate(rows):
            if not isinstance(c, DecodeConfig):
                raise TypeError(f"configs[{i}] is a {type(c).__name__}, expected DecodeConfig")
        temperature, edt, edt_log_n, edt_theta, edt_log_t0, greedy = [], [], [], [], [], []
        top_k, dyn_k, dyn_on, top_p = [], [], [], []
        log_min_p, log_eps, log_eta, cal_log_p = [], [], [], []
        greedy_thr, conf_bin, n_sigma = [], [], []
        max_k = 0
        for c in rows:
            t = c.temperature if (c.temperature and c.edt_var is None) else 1.0
            temperature.append(t)
            if c.edt_var is not None:
                n, theta, t0 = c.edt_var
                edt.append(True)
                edt_log_n.append(math.log(n))
                edt_theta.append(theta)
                edt_log_t0.append(math.log(t0))
            else:
                edt.append(False)
                edt_log_n.append(0.0)
                edt_theta.append(0.0)
                edt_log_t0.append(0.0)
            greedy.append(c.is_greedy)
            k = c.top_k or 0
            if vocab_size is not None and k >= vocab_size:
                k = 0  # keeps every token: off
            top_k.append(k)
            max_k = max(max_k, k)
            if c.dynamic_top_k is not None:
                ks = [max(1, k) for k in c.dynamic_top_k]  # K_m = 0 means greedy: keep the top 1
                if vocab_size is not None:
                    ks = [min(k, vocab_size) for k in ks]
                dyn_k.append(ks)
                dyn_on.append(True)
                max_k = max(max_k, max(ks))
            else:
                dyn_k.append([0] * 10)
                dyn_on.append(False)
            top_p.append(c.top_p if c.top_p is not None else 1.0)
            log_min_p.append(_log_or_neg_inf(c.min_p))
            log_eps.append(_log_or_neg_inf(c.prob_threshold))
            log_eta.append(_log_or_neg_inf(c.hewitt_epsilon))
            if c.cal_acc is not None:
                a, b, thr = c.cal_acc
                cal_log_p.append((math.log(thr) - a * math.log(c.cal_acc_base)) / b)
            else:
                cal_log_p.append(_NEG_INF)
            greedy_thr.append(c.greedy_threshold or 0.0)
            conf_bin.append(c.confidence_bin_only or 0)
            n_sigma.append(c.top_n_sigma or 0.0)
        if vocab_size is not None:
            max_k = min(max_k, vocab_size)

        pin = device.type == "cuda"

        def tensor(values, dtype=torch.float32):
            t = torch.tensor(values, dtype=dtype)
            if pin:
                t = t.pin_memory()
            return t.to(device, non_blocking=pin)

        b = len(rows)
        return cls(
            batch_size=b,
            device=device,
            any_temperature=any(t != 1.0 for t in temperature),
            any_edt=any(edt),
            any_greedy=any(greedy),
            max_top_k=max_k,
            any_top_k=any(k > 0 for k in top_k),
            any_dynamic_top_k=any(dyn_on),
            any_top_p=any(p < 1.0 for p in top_p),
            any_min_p=any(v > _NEG_INF for v in log_min_p),
            any_eps=any(v > _NEG_INF for v in log_eps),
            any_eta=any(v > _NEG_INF for v in log_eta),
            any_cal=any(v > _NEG_INF for v in cal_log_p),
            any_greedy_threshold=any(v > 0 for v in greedy_thr),
            any_conf_bin=any(v > 0 for v in conf_bin),
            any_n_sigma=any(v > 0 for v in n_sigma),
            temperature=tensor(temperature),
            edt=tensor(edt, torch.bool),
            edt_log_n=tensor(edt_log_n),
            edt_theta=tensor(edt_theta),
            edt_log_t0=tensor(edt_log_t0),
            greedy=tensor(greedy, torch.bool),
            top_k=tensor(top_k, torch.int64),
            dyn_k=tensor(dyn_k, torch.int64).reshape(b, 10),
            dyn_on=tensor(dyn_on, torch.bool),
            top_p=tensor(top_p),
            log_min_p=tensor(log_min_p),
            log_eps=tensor(log_eps),
            log_eta=tensor(log_eta),
            cal_log_p=tensor(cal_log_p),
            greedy_threshold=tensor(greedy_thr),
            conf_bin=tensor(conf_bin, torch.int64),
            n_sigma=tensor(n_sigma),
        )
