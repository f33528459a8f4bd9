"""Hostile and malformed decoder settings (issue 11): refused with a ValueError naming the key at
admission, or accepted with finite output; a served request never makes the server open a path.

Every case of the issue's list is here, plus hypothesis fuzzing of ``DecodeConfig.from_dict``,
``config_from_params``/``validate_params`` (flat keys, the nested dict and its JSON text) and of
``process`` on accepted settings in float32, float16 and bfloat16.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REPO as _REPO
from vllm import SamplingParams

from sample_smart import DecodeConfig, process
from sample_smart.calibration import registry as registry_mod
from sample_smart.calibration.registry import CalibrationRegistry
from sample_smart.config import SETTING_KEYS
from sample_smart.integrations.vllm import SampleSmartLogitsProcessor, config_from_params
from sample_smart.processors import BatchState
from sample_smart.processors.pipeline import validate_logits

REPO = str(_REPO)
CALIBRATION = os.path.join(REPO, "docs", "calibration", "calibration.json")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# ------------------------------------------------------------------ the cases
HOSTILE = [  # (settings, the key the message must name)
    ({"top_k": 1e300}, "top_k"),
    ({"top_k": 2**63}, "top_k"),
    ({"top_k": 10**5000}, "top_k"),
    ({"top_k": "9" * 5000}, "top_k"),
    ({"dynamic_top_k": [2**63] * 10}, "dynamic_top_k"),
    ({"dynamic_top_k": [1e300] * 10}, "dynamic_top_k"),
    ({"min_p": 10**400}, "min_p"),
    ({"prob_threshold": -(10**400)}, "prob_threshold"),
    ({"confidence_bin_only": 10**5000}, "confidence_bin_only"),
    ({"temperature": 1e-39}, "temperature"),
    ({"temperature": 1e300}, "temperature"),
    ({"temperature": 3.4e38}, "temperature"),
    ({"temperature": 1e-7}, "temperature"),
    ({"edt_var": "1,1e300,1"}, "edt_var"),
    ({"edt_var": "2,1,1e-300"}, "edt_var"),
    ({"edt_var": "2,1,1e300"}, "edt_var"),
    ({"cal_acc": "1e300,1,0.1"}, "cal_acc"),
    ({"top_n_sigma": 1e300}, "top_n_sigma"),
    ({"dynamic_top_k": [1] * 10, "temperature": 1e-39}, "temperature"),
    ({"min_p": [[[[[[[[[[[[[[[[[[[[0.1]]]]]]]]]]]]]]]]]]]]}, "min_p"),
    ({"calibration": ["x"] * 100}, "calibration"),
]


@pytest.mark.parametrize("settings_, key", HOSTILE, ids=[h[1] + str(i) for i, h in enumerate(HOSTILE)])
def test_hostile_values_are_refused_naming_the_key(settings_, key):
    with pytest.raises(ValueError, match=key) as err:
        DecodeConfig.from_dict(settings_)
    assert len(str(err.value)) < 400  # a client's megabyte or 5000 digits is not echoed back
    params = _params(extra_args={"sample_smart": settings_})
    if params is not None:
        with pytest.raises(ValueError, match=key):
            SampleSmartLogitsProcessor.validate_params(params)


def _params(**kwargs) -> SamplingParams | None:
    """SamplingParams, or None where vLLM itself refuses them (e.g. ints beyond 64 bits in extra_args:
    vLLM's own client error, so a 400 on the server, before any processor sees the request)."""
    from vllm.exceptions import VLLMClientError

    try:
        return SamplingParams(**kwargs)
    except (ValueError, VLLMClientError):
        return None


def _json_text(value) -> str:
    return json.dumps(value)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # too long
        '{"min_p": ' + "[" * 20_000 + "]" * 20_000 + "}",  # nested deeper than the JSON reader recurses
        '{"top_k": ' + "1" * 5000 + "}",  # an int past Python's digit limit
        '{"min_p": 1e999}',  # float overflow to inf
        '{"min_p": NaN}',
    ],
)
def test_hostile_json_text_is_a_value_error(text):
    with pytest.raises(ValueError, match="sample_smart|min_p|top_k"):
        SampleSmartLogitsProcessor.validate_params(SamplingParams(extra_args={"sample_smart": text}))


def test_vocabulary_of_size_zero_is_refused():
    with pytest.raises(ValueError, match="vocab"):
        validate_logits(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="vocab"):
        process(torch.zeros(2, 0), DecodeConfig(min_p=0.1))


# ------------------------------------------------------------------ accepted extremes stay finite
EXTREMES = [
    {"temperature": 1e-6},
    {"temperature": 1e6},
    {"temperature": 1e-6, "dynamic_top_k": [1] * 10},
    {"temperature": 1e-4, "min_p": 0.5},
    {"temperature": 1e-6, "top_p": 0.9, "top_k": 2**31 - 1},
    {"edt_var": [1e-300, 1e6, 1e-6]},
    {"edt_var": [1e300, -1e6, 1e6]},
    {"edt_var": [2.0, 1e6, 1e-6], "top_n_sigma": 1e6},
    {"cal_acc": [1e6, 1e-6, 1e6], "cal_acc_base": "e"},
    {"cal_acc": [-1e6, 1e6, 1e-300]},
    {"cal_acc": [0.0, 1e-300, 0.1]},  # the bound on ln p underflows to -inf: the rule keeps everything
    {"top_k": 2**31 - 1, "dynamic_top_k": [2**31 - 1] * 10},
    {"top_n_sigma": 1e6, "hewitt_epsilon": 1.0, "prob_threshold": 1.0},
    {"greedy_threshold": 1.0, "confidence_bin_only": 10},
]


def _hostile_logits(dtype: torch.dtype, vocab: int = 300) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, vocab, generator=g) * 4
    x[1] = 0.0  # flat
    x[2, 40:] = float("-inf")  # masked padding
    x[3] *= 20.0  # spread over ~+-250: overflows fp16 at small temperatures
    x[4, 7] = 60.0  # p_max ~ 1
    x[5] = torch.linspace(-30.0, 30.0, vocab)
    limit = torch.finfo(dtype).max
    return x.clamp(-limit, limit).to(dtype)


def _assert_sane(out: torch.Tensor, logits: torch.Tensor) -> None:
    assert out.dtype == logits.dtype and out.shape == logits.shape
    assert not torch.isnan(out).any(), "NaN in the output"
    assert not torch.isposinf(out).any(), "+inf in the output"
    kept = ~torch.isneginf(out)
    assert (kept.sum(-1) >= 1).all(), "a row keeps nothing"
    assert torch.isfinite(out[kept]).all(), "a kept logit is not finite"
    assert torch.isneginf(out[torch.isneginf(logits)]).all(), "a masked token came back"
    rows = torch.arange(logits.shape[0])
    assert kept[rows, logits.float().argmax(-1)].all(), "the argmax was removed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("settings_", EXTREMES, ids=lambda s: ",".join(s))
def test_accepted_extremes_give_finite_output(settings_, dtype):
    logits = _hostile_logits(dtype)
    out = process(logits, DecodeConfig.from_dict(settings_))
    _assert_sane(out, logits)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_small_temperature_on_half_logits_keeps_the_distribution(dtype):
    logits = _hostile_logits(dtype)
    out = process(logits, DecodeConfig(temperature=0.05))
    want = torch.softmax(logits.double() / 0.05, -1)
    got = torch.softmax(out.double(), -1)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)


# ------------------------------------------------------------------ fuzzing
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e7, max_value=1e7)
    | st.text(max_size=12)
    | st.sampled_from(["1e300", "2**63", "nan", "-inf", "1,2,3", "0.5,1,1", "e", "10"])
)
_values = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=11) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=12
)
_keys = st.sampled_from(sorted(SETTING_KEYS - {"calibration"})) | st.text(max_size=8)
_settings = st.dictionaries(_keys, _values, max_size=4)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _named_keys(settings_: dict) -> list[str]:
    return [str(k) for k in settings_] + [
        "greedy_threshold",
        "confidence_bin_only",
        "prob_threshold",
        "hewitt_epsilon",
        "decoder setting",
        "temperature",
    ]


@FUZZ
@given(_settings, st.sampled_from(DTYPES))
def test_fuzz_from_dict_and_process(settings_, dtype):
    try:
        cfg = DecodeConfig.from_dict(settings_)
    except ValueError as exc:
        assert any(k in str(exc) for k in _named_keys(settings_)), str(exc)
        return
    logits = _hostile_logits(dtype, vocab=97)
    _assert_sane(process(logits, cfg), logits)


@FUZZ
@given(_settings, st.sampled_from(["flat", "nested", "json"]), st.sampled_from([0.0, 0.7, 1.0]))
def test_fuzz_admission_accepts_or_refuses_with_a_value_error(settings_, form, temperature):
    if form == "flat":
        extra = dict(settings_)
    elif form == "nested":
        extra = {"sample_smart": settings_}
    else:
        try:
            extra = {"sample_smart": json.dumps(settings_)}
        except (ValueError, TypeError):  # not JSON-able (NaN is, as a literal): nothing to send
            return
    params = _params(temperature=temperature, extra_args=extra)
    if params is None:
        return
    try:
        SampleSmartLogitsProcessor.validate_params(params)
    except ValueError:
        return
    cfg = config_from_params(params)
    logits = _hostile_logits(torch.float32, vocab=97)
    _assert_sane(process(logits, cfg), logits)


@FUZZ
@given(st.lists(_settings, min_size=1, max_size=6))
def test_fuzz_processor_apply_never_raises_on_admitted_requests(batch):
    """The v1 processor's apply on a batch of admitted requests: no exception, sane rows."""
    from vllm.config import VllmConfig
    from vllm.v1.sample.logits_processor import BatchUpdate

    admitted = []
    for s in batch:
        params = _params(extra_args={"sample_smart": s})
        try:
            if params is None:
                continue
            SampleSmartLogitsProcessor.validate_params(params)
        except ValueError:
            continue
        admitted.append(params)
    if not admitted:
        return
    proc = SampleSmartLogitsProcessor(VllmConfig(), torch.device("cpu"), False)
    added = [(i, p, [1, 2], []) for i, p in enumerate(admitted)]
    proc.update_state(BatchUpdate(batch_size=len(admitted), removed=[], added=added, moved=[]))
    logits = _hostile_logits(torch.float32, vocab=97)[: len(admitted)].clone()
    if len(admitted) > logits.shape[0]:
        logits = logits.repeat(2, 1)[: len(admitted)]
    original = logits.clone()
    _assert_sane(proc.apply(logits), original)


def test_processor_survives_an_unexpected_error(monkeypatch, caplog):
    from vllm.config import VllmConfig
    from vllm.v1.sample.logits_processor import BatchUpdate

    proc = SampleSmartLogitsProcessor(VllmConfig(), torch.device("cpu"), False)
    proc.update_state(
        BatchUpdate(batch_size=1, removed=[], moved=[], added=[(0, SamplingParams(extra_args={"min_p": 0.5}), [1], [])])
    )

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(proc._rows, "process_core", broken)
    logits = torch.randn(1, 50)
    with caplog.at_level("ERROR"):
        out = proc.apply(logits)
    assert out is logits and "processing failed" in caplog.text


# ------------------------------------------------------------------ calibrations: names, never paths
def test_a_request_never_opens_a_path(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.delenv(registry_mod.ENV_VAR, raising=False)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    messages = []
    for target in [
        str(fifo),
        "/dev/zero",
        "/etc/passwd",
        str(tmp_path / "missing.json"),
        CALIBRATION,
        {"path": "/dev/zero"},
        {"name": "/etc/passwd", "mode": "topk"},
    ]:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="calibration") as err:
            SampleSmartLogitsProcessor.validate_params(SamplingParams(extra_args={"calibration": target}))
        assert time.monotonic() - t0 < 5
        messages.append(str(err.value).replace(repr(target), "<X>"))
    assert not opened, opened
    # the answer is the same whether the path exists or not: nothing to learn about the file system
    assert len(set(messages[:5])) == 1, messages
    for word in ("exist", "no such", "JSON", "directory", "permission"):
        assert word not in messages[0]


def test_served_calibrations_by_name_are_read_once(tmp_path, monkeypatch):
    served = tmp_path / "gsm8k.json"
    served.write_bytes(open(CALIBRATION, "rb").read())
    monkeypatch.setenv(registry_mod.ENV_VAR, str(tmp_path))
    registry_mod._registry_for.cache_clear()
    try:
        SampleSmartLogitsProcessor(__import__("vllm.config").config.VllmConfig(), torch.device("cpu"), False)
        served.unlink()  # loaded at start-up: requests never touch the file again
        for mode in ("epsilon", "topk"):
            params = SamplingParams(extra_args={"calibration": {"name": "gsm8k", "mode": mode, "threshold": 0.05}})
            SampleSmartLogitsProcessor.validate_params(params)
            assert config_from_params(params) == DecodeConfig.from_calibration(CALIBRATION, mode, 0.05)
        with pytest.raises(ValueError, match="serves: gsm8k"):
            config_from_params(SamplingParams(extra_args={"calibration": "math"}))
        with pytest.raises(ValueError, match="calibration"):  # a path is refused even when served names exist
            config_from_params(SamplingParams(extra_args={"calibration": {"path": CALIBRATION}}))
    finally:
        registry_mod._registry_for.cache_clear()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gsm8k=/nonexistent/c.json", "gsm8k"),
        ("bad name=x.json", "name"),
        ("a=", "name=path"),
    ],
)
def test_a_bad_calibration_specification_stops_start_up(spec, message):
    with pytest.raises(ValueError, match=message):
        CalibrationRegistry.from_spec(spec)


def test_offline_calibration_paths_must_be_regular_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero", str(tmp_path)):
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="calibration"):
            DecodeConfig.from_dict({"calibration": path})
        assert time.monotonic() - t0 < 5


def test_state_with_vocab_turns_huge_k_off():
    state = BatchState.from_configs(
        [DecodeConfig(top_k=2**31 - 1), DecodeConfig(dynamic_top_k=[2**31 - 1] * 10)], vocab_size=100
    )
    assert state.candidates == 100 and not state.uses("top_k")
    assert int(state.params["dyn_k"].max()) == 100
    assert math.isfinite(float(state.temperature.sum()))
