"""Kept-set sizes per confidence bin (notebook 02): the counts against an independent count of the
textbook rules, the binning against p_max_bin, and real next-token rows of the embedded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import make_logits

from sample_smart.analysis.kept_sets import (
    CHUNK_ROWS,
    kept_set_sizes,
    kept_size_by_bin,
    plot_kept_sizes,
    raw_p_max,
    teacher_forced_logits,
)
from sample_smart.calibration import p_max_bin
from sample_smart.tasks.arith import generate
from sample_smart.traces.examples import Example, encode_example


def _rows() -> torch.Tensor:
    # more rows than one chunk, with confidences spread over the deciles
    return make_logits("peaked", CHUNK_ROWS + 72, 3000, seed=3).float()


def test_sizes_follow_the_rules_across_chunks():
    x = _rows()
    sizes = kept_set_sizes(x, {"top-k 7": {"top_k": 7}, "min-p 0.1": {"min_p": 0.1}, "plain": {}})
    assert (sizes["top-k 7"] == 7).all()
    assert (sizes["plain"] == x.shape[1]).all()
    p = torch.softmax(x.double(), -1)
    expected = (p >= 0.1 * p.amax(-1, keepdim=True)).sum(-1).numpy()
    near = (p - 0.1 * p.amax(-1, keepdim=True)).abs().amin(-1).numpy() < 1e-6
    assert (sizes["min-p 0.1"][~near] == expected[~near]).all()
    assert len(set(sizes["min-p 0.1"].tolist())) > 3  # the sizes really vary with the row


def test_by_bin_groups_by_the_raw_p_max_decile():
    x = _rows()
    sizes = kept_set_sizes(x, {"min-p 0.2": {"min_p": 0.2}})
    p_max = raw_p_max(x)
    np.testing.assert_allclose(p_max, torch.softmax(x.double(), -1).amax(-1).numpy(), rtol=1e-9)
    study = kept_size_by_bin(p_max, sizes)
    rows = study["decoders"]["min-p 0.2"]
    bins = p_max_bin(p_max)
    assert sum(r["n"] for r in rows) == study["n_positions"] == len(x)
    for r in rows:
        sel = sizes["min-p 0.2"][bins == r["bin"] - 1]
        assert r["n"] == sel.size
        if sel.size:
            assert r["mean"] == pytest.approx(sel.mean()) and r["max"] == sel.max()
        else:
            assert r["mean"] is None
    assert sum(r["n"] > 0 for r in rows) >= 4


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="positions"):
        kept_size_by_bin([0.5, 0.6], {"d": [1, 2, 3]})
    with pytest.raises(ValueError, match="N >= 1"):
        kept_set_sizes(torch.zeros(0, 5), {"d": {}})
    with pytest.raises(ValueError, match="p_max"):
        kept_size_by_bin([1.5], {"d": [1]})
    study = kept_size_by_bin([0.5], {"d": [3]})
    with pytest.raises(ValueError, match="stat"):
        plot_kept_sizes(study, tmp_path / "x.png", stat="max")


def test_real_rows_of_the_embedded_model(tmp_path):
    from sample_smart.traces.transformers_backend import TransformersTeacherForcer

    backend = TransformersTeacherForcer(top_k=5, batch_size=4)
    docs = generate("train", 3)
    examples = [Example(d["id"], [{"role": "user", "content": d["question"]}], d["solution"]) for d in docs]
    logits = teacher_forced_logits(backend, examples)
    records = backend.score([encode_example(backend.tokenizer, e, chat_template=True) for e in examples])
    assert logits.shape == (sum(r["n_tokens"] for r in records), backend.model.config.vocab_size)
    np.testing.assert_allclose(raw_p_max(logits), np.concatenate([r["p_max"] for r in records]), rtol=1e-4)
    study = kept_size_by_bin(raw_p_max(logits), kept_set_sizes(logits, {"top-p 0.9": {"top_p": 0.9}}))
    assert (tmp_path / "k.png") == plot_kept_sizes(study, tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000
