"""DecodeConfig: reference keys and formats, validation errors that name key, value and range."""

import math

import pytest

from sample_smart import DecodeConfig


def test_reference_formats_are_accepted():
    cfg = DecodeConfig.from_dict(
        {
            "temperature": "0.7",
            "top_k": 50,
            "top_p": 0.95,
            "min_p": 0.1,
            "prob_threshold": 3e-4,
            "dynamic_top_k": "1,2,3,4,5,6,7,8,9,10",
            "edt_var": "0.8,1.0,1.0",
            "hewitt_epsilon": 9e-4,
            "greedy_threshold": 0.3,
            "confidence_bin_only": 4,
            "cal_acc": "-0.5,0.7,0.05",
            "top_n_sigma": 1.0,
        }
    )
    assert cfg.dynamic_top_k == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    assert cfg.edt_var == (0.8, 1.0, 1.0)
    assert cfg.cal_acc == (-0.5, 0.7, 0.05) and cfg.cal_acc_base == 10.0
    assert cfg.temperature == 0.7
    assert DecodeConfig.from_dict(cfg.to_dict()) == cfg
    assert DecodeConfig.from_dict({"dynamic_top_k": list(range(10))}).dynamic_top_k == tuple(range(10))


def test_aliases_and_none_values():
    cfg = DecodeConfig.from_dict({"selgreedy_thresh": 0.2, "sample_only_bin": 2, "top_k": None})
    assert cfg.greedy_threshold == 0.2 and cfg.confidence_bin_only == 2 and cfg.top_k is None


def test_off_values_normalise_to_unset():
    assert DecodeConfig.from_dict({"top_k": -1, "top_p": 1.0, "min_p": 0}).is_noop
    assert not DecodeConfig(temperature=0).is_noop
    assert DecodeConfig(temperature=1.0).is_noop


def test_config_is_immutable():
    cfg = DecodeConfig(min_p=0.1)
    with pytest.raises(Exception):
        cfg.min_p = 0.2  # type: ignore[misc]


def test_cal_acc_base():
    cfg = DecodeConfig.from_dict({"cal_acc": [0.1, 0.5, 0.2], "cal_acc_base": "e"})
    assert cfg.cal_acc_base == math.e
    assert cfg.to_dict()["cal_acc_base"] == "e"


BAD = [
    ({"temperature": -0.1}, "temperature", "0 (greedy) or 1e-06 <= T <= 1e+06"),
    ({"temperature": "hot"}, "temperature", "1e-06 <= T"),
    ({"temperature": float("inf")}, "temperature", "T <= 1e+06"),
    ({"top_p": 1.5}, "top_p", "0 < top_p <= 1"),
    ({"top_p": 0}, "top_p", "0 < top_p <= 1"),
    ({"min_p": -0.1}, "min_p", "0 <= min_p <= 1"),
    ({"prob_threshold": 2}, "prob_threshold", "<= 1"),
    ({"hewitt_epsilon": -1}, "hewitt_epsilon", "<= 1"),
    ({"greedy_threshold": 1.2}, "greedy_threshold", "<= 1"),
    ({"top_k": -2}, "top_k", "1..2147483647"),
    ({"top_k": 2.5}, "top_k", "integer"),
    ({"top_k": True}, "top_k", "integer"),
    ({"dynamic_top_k": [1] * 9}, "dynamic_top_k", "got 9 values"),
    ({"dynamic_top_k": [1] * 11}, "dynamic_top_k", "got 11 values"),
    ({"dynamic_top_k": "1,2,3,4,5,6,7,8,9,-1"}, "dynamic_top_k", "0..2147483647"),
    ({"confidence_bin_only": 0}, "confidence_bin_only", "1..10"),
    ({"confidence_bin_only": 11}, "confidence_bin_only", "1..10"),
    ({"edt_var": "0.8,1,0"}, "edt_var", "1e-06 <= T0 <= 1e+06"),
    ({"edt_var": "0,1,1"}, "edt_var", "N > 0"),
    ({"edt_var": "1,1"}, "edt_var", "got 2 values"),
    ({"cal_acc": "1,-0.5,0.1"}, "cal_acc", "0 < B"),
    ({"cal_acc": "1,0.5,0"}, "cal_acc", "0 < thr"),
    ({"cal_acc": [1, 0.5, 0.1], "cal_acc_base": 2}, "cal_acc_base", "10 or 'e'"),
    ({"top_n_sigma": 0}, "top_n_sigma", "0 < n"),
    ({"tempreature": 0.5}, "tempreature", "allowed keys"),
]


@pytest.mark.parametrize("d,key,allowed", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_name_key_value_and_range(d, key, allowed):
    with pytest.raises(ValueError) as err:
        DecodeConfig.from_dict(d)
    msg = str(err.value)
    assert key in msg and allowed in msg
    value = next(iter(d.values()))
    if not isinstance(value, (list, float)):
        assert str(value) in msg


def test_non_mapping_rejected():
    with pytest.raises(ValueError, match="mapping"):
        DecodeConfig.from_dict([("top_k", 1)])


def test_calibration_key_loads_a_file(tmp_path):
    from sample_smart.calibration import load_decoder_settings

    path = "docs/calibration/calibration.json"
    topk = DecodeConfig.from_dict({"calibration": {"path": path, "mode": "topk", "threshold": 0.05}})
    assert list(topk.dynamic_top_k) == load_decoder_settings(path, "topk", 0.05)["dynamic_top_k"]
    eps = DecodeConfig.from_dict({"calibration": {"path": path, "threshold": 0.05}, "temperature": 0.8})
    assert eps.cal_acc is not None and eps.temperature == 0.8
    assert DecodeConfig.from_dict(eps.to_dict()) == eps
    with pytest.raises(ValueError, match="calibration=.*missing.json"):
        DecodeConfig.from_dict({"calibration": str(tmp_path / "missing.json")})
    with pytest.raises(ValueError, match="no threshold given"):  # this file has no default c_min
        DecodeConfig.from_dict({"calibration": path})
    with pytest.raises(ValueError, match="calibration.threshold"):
        DecodeConfig.from_dict({"calibration": {"path": path, "threshold": 2}})
    with pytest.raises(ValueError, match="both directly"):
        DecodeConfig.from_dict({"calibration": {"path": path, "mode": "topk"}, "dynamic_top_k": [1] * 10})


def test_the_calibration_key_goes_to_the_callers_resolver():
    """DecodeConfig opens no file: the `calibration` value goes to the resolver its caller chose
    (a server's registry of names; offline, CalibrationFiles), with the parsed mode and threshold."""
    from sample_smart.calibration.registry import CalibrationRegistry

    calls = []

    class Names:
        key = "name"

        def settings(self, target, mode, threshold):
            calls.append((target, mode, threshold))
            return {"min_p": 0.25}

    cfg = DecodeConfig.from_dict({"calibration": {"name": "gsm8k", "mode": "topk", "threshold": 0.1}}, Names())
    assert cfg.min_p == 0.25 and calls == [("gsm8k", "topk", 0.1)]
    with pytest.raises(ValueError, match="calibration"):  # a served resolver takes names, not paths
        DecodeConfig.from_dict({"calibration": {"path": "docs/calibration/calibration.json"}}, Names())
    with pytest.raises(ValueError, match="unknown calibration name"):  # an existing file is still only a name
        DecodeConfig.from_dict({"calibration": "docs/calibration/calibration.json"}, CalibrationRegistry())
