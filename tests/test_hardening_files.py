"""Issue 11, parts 3-5: traces never lose a confirmed record, no command destroys its input or
answers silently wrong, readers report ``path:line: what`` (exit 2, no traceback), and files
named by users are read safely (regular files only, bounded size)."""

from __future__ import annotations

import json
import os
import threading
import warnings

import numpy as np
import orjson
import pytest
from calibration_synth import make_record, make_records, write_traces
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sample_smart import DecodeConfig
from sample_smart.calibration import (
    build_calibration,
    calibration_from_dict,
    decoder_settings_from_dict,
    derive_decoder_settings,
    fit_grid,
    grid_from_traces,
    load_calibration,
    load_decoder_settings,
    read_pairs,
    save_calibration,
)
from sample_smart.cli import main
from sample_smart.io_checks import CALIBRATION_MAX_BYTES, InputFileError, read_json_file, read_user_file
from sample_smart.traces import TraceFormatError, TraceWriter, completed_ids, iter_teacher_forced, read_records
from sample_smart.traces.schemas import GENERATION, TEACHER_FORCED


def tf_record(ex_id: str) -> dict:
    """A valid teacher-forced record (the calibration tests' synthetic maker, 3 tokens)."""
    return make_record(np.random.default_rng(int.from_bytes(ex_id.encode(), "little") % 2**32), 3, rid=ex_id)


def line(rec) -> bytes:
    return json.dumps(rec, ensure_ascii=False).encode() + b"\n"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_reported(res, *needles):
    """Exit 2, one ``Error:`` line with every needle, no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    for needle in needles:
        assert needle in res.output, res.output


# ---- part 3: traces never lose a confirmed record --------------------------------------
@pytest.fixture(scope="module")
def hf():
    from sample_smart.models import require_default_model
    from sample_smart.traces.transformers_backend import TransformersTeacherForcer

    return TransformersTeacherForcer(require_default_model(), top_k=5, batch_size=6)


def test_rerun_keeps_a_last_record_without_its_newline(hf, tmp_path):
    from sample_smart.traces.examples import Example
    from sample_smart.traces.teacher_forcing import run_teacher_forcing

    examples = [Example(f"e{i}", f"Say {i}.", f" {i} is a number.") for i in range(6)]
    out = tmp_path / "tf.jsonl"
    first = run_teacher_forcing(examples[:3], hf, out, chat_template=False, progress=False)
    assert first["written"] == 3
    data = out.read_bytes()
    out.write_bytes(data[:-1])  # e2 is complete but lost its final newline
    with pytest.warns(RuntimeWarning, match="no final newline; added it"):
        again = run_teacher_forcing(examples, hf, out, chat_template=False, progress=False)
    assert again == {**again, "written": 3, "skipped": 3}
    ids = [r["id"] for r in iter_teacher_forced(out)]
    assert ids == [f"e{i}" for i in range(6)]  # today's code left e0, e1, e3, e4, e5
    assert out.read_bytes().startswith(data)


def test_cr_only_and_crlf_files_are_never_truncated(tmp_path):
    cr = tmp_path / "cr.jsonl"
    body = b"\r".join(orjson.dumps(tf_record(str(i))) for i in range(3)) + b"\r"
    cr.write_bytes(body)
    with pytest.raises(ValueError, match="CR-only line endings"):
        TraceWriter(cr)
    assert cr.read_bytes() == body  # today: truncated to 0 bytes
    with pytest.raises(TraceFormatError, match=r"cr\.jsonl:1: .*bare carriage return"):
        list(read_records(cr))
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(
        b"".join(orjson.dumps(tf_record(str(i))) + b"\r\n" for i in range(2)) + orjson.dumps(tf_record("2")) + b"\r"
    )  # a CRLF file that lost its last LF
    with pytest.warns(RuntimeWarning, match="added it"):
        w = TraceWriter(crlf)
    with w:
        w.write(tf_record("3"))
    assert [r["id"] for r in iter_teacher_forced(crlf)] == ["0", "1", "2", "3"]


def test_completed_ids_counts_only_valid_records_of_the_schema(tmp_path):
    path = tmp_path / "t.jsonl"
    off = {k: v for k, v in tf_record("b").items() if k != "gold_rank"}
    gen = {"schema": GENERATION, "id": "c"}
    path.write_bytes(line(tf_record("a")) + line(off) + line(gen) + line(["d"]) + line({"id": "e"}))
    with pytest.warns(UserWarning) as seen:
        done = completed_ids(path, schema=TEACHER_FORCED)
    assert done == {"a"}  # today: {"a", "b", "c", "e"}
    messages = " ".join(str(w.message) for w in seen)
    for n in (2, 3, 4, 5):
        assert f"t.jsonl:{n}:" in messages
    with pytest.warns(UserWarning):
        assert completed_ids(path) == {"a"}  # each record checked against its own schema


GOOD = b"".join(line(tf_record(str(i))) for i in range(4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_is_reported_never_raised_otherwise(tmp_path, data):
    """Random byte edits of a trace file: the reader raises only TraceFormatError naming path:line;
    reopening with the writer never loses a line that was complete JSON."""
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] = data.draw(
                st.sampled_from([0x0D, 0x0A, 0xFF, 0xEF, 0x22, 0x7D, 0x00, 0xE2, data.draw(st.integers(0, 255))])
            )
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"\r", b"\n", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"\x80", b"{"]))
    path = tmp_path / "c.jsonl"
    path.write_bytes(bytes(raw))
    try:
        list(iter_teacher_forced(path))
    except TraceFormatError as exc:
        assert str(exc).startswith(f"{path}:{exc.line}: ") and exc.line >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(iter_teacher_forced(path, on_error="skip"))
        completed_ids(path)
    before = bytes(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TraceWriter(path).close()
    except ValueError as exc:
        assert "CR-only" in str(exc) and path.read_bytes() == before
        return
    after = path.read_bytes()
    kept = before.split(b"\n")
    # every complete line stays; an unterminated tail stays (+ newline) unless it was not JSON
    assert after in (before, before + b"\n", b"\n".join(kept[:-1]) + (b"\n" if len(kept) > 1 else b""))
    if after != before + b"\n" and after != before:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(kept[-1].removeprefix(b"\xef\xbb\xbf") if len(kept) == 1 else kept[-1])


# ---- part 4: no command destroys its input or answers silently wrong -------------------
@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    write_traces(d / "t.jsonl", make_records(seed=3, n_records=10, n_tokens=60))
    grid = grid_from_traces([d / "t.jsonl"])
    grid.save(d / "grid.json")
    fit = fit_grid(grid, base=10, n_boot=0)
    save_calibration(d / "calib.json", build_calibration(grid, fit, epsilon_threshold=0.05))
    (d / "pairs.jsonl").write_bytes(b"".join(line({"confidence": c / 10, "correct": c % 2 == 0}) for c in range(10)))
    return d


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_calibrate_refuses_to_write_over_an_input(calib, tmp_path, how):
    trace = tmp_path / "t.jsonl"
    trace.write_bytes((calib / "t.jsonl").read_bytes())
    grid = tmp_path / "g.json"
    grid.write_bytes((calib / "grid.json").read_bytes())
    pairs = tmp_path / "p.jsonl"
    pairs.write_bytes((calib / "pairs.jsonl").read_bytes())

    def alias(p):
        if how == "same":
            return p
        q = p.with_name("alias_" + p.name)
        os.symlink(p, q) if how == "symlink" else os.link(p, q)
        return q

    before = {p: p.read_bytes() for p in (trace, grid, pairs)}
    t2, g2, p2 = alias(trace), alias(grid), alias(pairs)
    assert_reported(cli("calibrate", "grid", trace, "-o", t2), "would overwrite the input")  # today: exit 0
    assert_reported(cli("calibrate", "fit", grid, "-o", g2), "would overwrite the input")
    assert_reported(cli("calibrate", "buckets", pairs, "-o", p2), "would overwrite the input")
    assert_reported(cli("calibrate", "plot", "grid", grid, "-o", g2), "would overwrite the input")
    assert_reported(cli("calibrate", "plot", "reliability", pairs, "-o", p2), "would overwrite the input")
    assert {p: p.read_bytes() for p in before} == before


def test_calibrate_grid_refuses_the_same_records_twice(calib, tmp_path):
    t = calib / "t.jsonl"
    res = cli("calibrate", "grid", t, t, "-o", tmp_path / "g.json")
    assert_reported(res, "given twice")  # today: every token counted twice, exit 0
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(t.read_bytes())
    res = cli("calibrate", "grid", t, copy, "-o", tmp_path / "g.json")
    assert_reported(res, "10 record(s) repeat an example", "'0' (model 'synthetic')", "copy.jsonl")
    assert not (tmp_path / "g.json").exists()
    # same ids but other examples (another data file numbered 0, 1, ...) all count
    other = tmp_path / "other.jsonl"
    write_traces(other, make_records(seed=4, n_records=10, n_tokens=60))
    assert grid_from_traces([t, other]).n_tokens == 2 * grid_from_traces([t]).n_tokens


def test_trace_and_analyze_refuse_to_write_over_an_input(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(line({"id": "a", "prompt": "p", "target": "t"}))
    before = data.read_bytes()
    assert_reported(cli("trace", "teacher-force", "--data", data, "-o", data, "--no-progress"), "would overwrite")
    assert_reported(
        cli(
            "trace",
            "teacher-force",
            "--data",
            data,
            "-o",
            tmp_path / "o.jsonl",
            "--reference-out",
            data,
            "--no-progress",
        ),
        "would overwrite",
    )
    assert data.read_bytes() == before
    m = tmp_path / "confidence_bin_curves.json"
    m.write_text(
        json.dumps({"decoder": {"confidence_bin_only": 3}, "metrics": {"maj_at_k": {"1": 0.5}, "accuracy": 0.5}})
    )
    before = m.read_bytes()
    assert_reported(cli("analyze", "bins", m, "-o", tmp_path), "would overwrite the input")
    assert m.read_bytes() == before


def _samples(tmp_path, rows, raw_lines=()):
    """A samples file and its traces (one generation record per sample)."""
    s = tmp_path / "run_samples.jsonl"
    t = tmp_path / "run_traces.jsonl"
    body = b"".join(line(r) for r in rows) + b"".join(raw_lines)
    s.write_bytes(body)
    recs = []
    for r in rows:
        n = 2
        recs.append(
            {
                "schema": GENERATION,
                "request_id": r["trace_id"],
                "prompt_id": r["trace_id"],
                "sample_index": 0,
                "model": "m",
                "backend": "vllm",
                "logprobs_mode": "raw_logprobs",
                "config": {},
                "top_k": 1,
                "log_base": "e",
                "n_generated": n,
                "n_tokens": n,
                "stop": {"reason": "end", "match": None},
                "text": "x",
                "token_id": [1] * n,
                "rank": [1] * n,
                "logprob": [-0.5] * n,
                "p_max": [0.3, 0.9],
                "top_ids": [[1]] * n,
                "top_logprobs": [[-0.5]] * n,
            }
        )
    t.write_bytes(b"".join(line(r) for r in recs))
    return s


def _row(i, correct):
    return {"task": "t", "doc_id": i, "repeat": 0, "answer": "1", "gold": "1", "correct": correct, "trace_id": f"r{i}"}


def test_low_conf_correct_must_be_a_json_boolean(tmp_path):
    s = _samples(tmp_path, [_row(0, True), _row(1, False), _row(2, 1)])
    res = cli("analyze", "low-conf", s)
    assert res.exit_code == 0, res.output
    study = json.loads((tmp_path / "run_low_conf.json").read_text())
    assert sum(b["n_correct"] for b in study["bins"]) == 2 and study["n_samples"] == 3
    s = _samples(tmp_path, [_row(0, True), _row(1, "false")])
    res = cli("analyze", "low-conf", s)  # today: "false" counted as correct, exit 0
    assert_reported(res, "run_samples.jsonl:2: field 'correct': must be a JSON boolean", "'false'")


# ---- part 5: readers report, never trace back ------------------------------------------
def _metrics(**over):
    m = {
        "label": "x",
        "wall_time_s": 1.0,
        "decoder": {"confidence_bin_only": 3},
        "metrics": {
            "repeats": 2,
            "accuracy": 0.5,
            "maj_at_k": {"1": 0.5, "2": 0.5},
            "pass_at_k": {"1": 0.5, "2": 0.7},
            "mean_distinct_answers": 1.0,
            "invalid_rate": 0.0,
        },
    }
    for k, v in over.items():
        m[k] = v
    return m


def test_analyze_reports_bad_files(tmp_path):
    good = tmp_path / "good_metrics.json"
    good.write_text(json.dumps(_metrics(), indent=1))
    res = cli("analyze", "table", good)
    assert res.exit_code == 0 and "x" in res.output
    trunc = tmp_path / "trunc_metrics.json"
    trunc.write_text(good.read_text()[:60])
    assert_reported(cli("analyze", "table", trunc), f"{trunc}:", "not valid JSON")  # today: JSONDecodeError
    nokey = tmp_path / "nokey_metrics.json"
    nokey.write_text(json.dumps({k: v for k, v in _metrics().items() if k != "wall_time_s"}))
    assert_reported(cli("analyze", "table", nokey), "missing field 'wall_time_s'")  # today: KeyError
    bin3 = tmp_path / "bin3_metrics.json"
    bin3.write_text(json.dumps(_metrics(decoder={"confidence_bin_only": "3"})))
    assert_reported(
        cli("analyze", "bins", bin3, "-o", tmp_path / "o"),  # today: TypeError
        "field 'decoder.confidence_bin_only': must be an int in 1..10",
    )
    s = _samples(tmp_path, [_row(0, True)], [b'["a list"]\n'])
    assert_reported(cli("analyze", "low-conf", s), "run_samples.jsonl:2: expected a JSON object")  # AttributeError
    s = _samples(tmp_path, [_row(0, True), {k: v for k, v in _row(1, True).items() if k != "correct"}])
    assert_reported(cli("analyze", "low-conf", s), "run_samples.jsonl:2: missing field 'correct'")  # KeyError
    latin = tmp_path / "latin_metrics.json"
    latin.write_bytes(json.dumps(_metrics(label="caf\xe9"), ensure_ascii=False).encode("latin-1"))
    assert_reported(cli("analyze", "table", latin), f"{latin}:1: not UTF-8")


def test_calibration_file_with_bad_fields(calib, tmp_path):
    data = json.loads((calib / "calib.json").read_text())
    bad = tmp_path / "bad.json"
    cases = [
        (("grid", "bins"), "0.1,0.2", "field 'bins'"),  # today: AttributeError
        (("grid", "counts"), "ten", "field 'counts'"),
        (("grid", "hits"), [[1.5] * 20] * 10, "field 'hits'"),
        (("fit", "weighted"), "false", "field 'weighted'"),
        (("fit", "A"), "1.0", "field 'A'"),
        (("defaults",), "x", "field 'defaults'"),
        (("defaults", "topk_threshold"), "0.5", "field 'defaults.topk_threshold'"),
        (("defaults", "min_samples"), 2.5, "field 'defaults.min_samples'"),
        (("bins",), [], "field 'bins'"),
        (("log_base",), 2, "field 'log_base'"),
    ]
    for keys, value, needle in cases:
        d = json.loads(json.dumps(data))
        target = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        bad.write_text(json.dumps(d))
        for mode in ("topk", "epsilon"):
            with pytest.raises(ValueError, match=str(bad)) as info:
                load_decoder_settings(bad, mode, 0.1)
            assert needle in str(info.value), (keys, str(info.value))
            with pytest.raises(ValueError, match="could not be loaded|bad.json"):
                DecodeConfig.from_calibration(str(bad), mode, 0.1)
            with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
                decoder_settings_from_dict(d, mode, 0.1, source="name-only")
    assert_reported(cli("calibrate", "plot", "grid", bad, "-o", tmp_path / "x.png"), "bad.json")
    res = cli("eval", "--calibration", bad, "--limit", 1)
    assert res.exit_code == 2 and "bad.json" in res.output and "Traceback" not in res.output
    for mode, threshold in (("topk", 1.5), ("topk", True), ("topk", "0.1"), ("median", None)):
        with pytest.raises(ValueError, match="threshold|mode"):
            load_decoder_settings(calib / "calib.json", mode, threshold)


def test_decoder_settings_from_dict_equals_loading_the_file(calib):
    data = json.loads((calib / "calib.json").read_text())
    validated = calibration_from_dict(data, "c")
    for mode, threshold in (("topk", None), ("topk", 0.2), ("epsilon", None), ("epsilon", 0.3)):
        from_file = load_decoder_settings(calib / "calib.json", mode, threshold)
        assert decoder_settings_from_dict(data, mode, threshold, source="c") == from_file
        assert derive_decoder_settings(validated, mode, threshold, source="c") == from_file
    with pytest.raises(ValueError, match="^c: no threshold given"):
        derive_decoder_settings((validated[0], validated[1], {}), "topk", source="c")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fuzzed_calibration_dicts_give_settings_or_value_error(calib, data):
    base = json.loads((calib / "calib.json").read_text())
    d = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3))):
        target, keys = d, []
        while isinstance(target, dict) and target and data.draw(st.booleans()):
            k = data.draw(st.sampled_from(sorted(target)))
            keys.append(k)
            if not isinstance(target[k], dict):
                break
            target = target[k]
        if isinstance(target, dict) and keys and not isinstance(target.get(keys[-1]), dict):
            target[keys[-1]] = data.draw(JSON)
        elif isinstance(target, dict) and target:
            target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    mode = data.draw(st.sampled_from(["topk", "epsilon"]))
    try:
        out = decoder_settings_from_dict(d, mode, data.draw(st.none() | st.floats(0.01, 1.0)))
    except ValueError:
        return
    DecodeConfig.from_dict(out)  # whatever is accepted is a valid decoder setting


def test_encodings_bom_and_line_separators(calib, tmp_path):
    # non-UTF-8: the file is named, no traceback
    lat = tmp_path / "lat.jsonl"
    lat.write_bytes(line(tf_record("a")) + b'{"id": "caf\xe9"}\n')
    with pytest.raises(TraceFormatError, match=r"lat\.jsonl:2: not UTF-8"):
        list(read_records(lat))
    latcsv = tmp_path / "lat.csv"
    latcsv.write_bytes(b"confidence,correct,note\n0.5,1,caf\xe9\n")
    with pytest.raises(ValueError, match=r"lat\.csv:2: not UTF-8"):
        read_pairs(latcsv)
    # BOM: accepted in trace files, calibration files, pairs (JSONL and CSV)
    bom = b"\xef\xbb\xbf"
    tb = tmp_path / "bom.jsonl"
    tb.write_bytes(bom + line(tf_record("a")))
    assert [r["id"] for r in read_records(tb)] == ["a"]
    cb = tmp_path / "bom_calib.json"
    cb.write_bytes(bom + (calib / "calib.json").read_bytes())
    assert load_decoder_settings(cb, "topk") == load_decoder_settings(calib / "calib.json", "topk")
    assert load_calibration(cb)[0].n_tokens == 600
    pb = tmp_path / "bom.csv"
    pb.write_bytes(bom + b"confidence,correct\n0.5,1\n")
    assert read_pairs(pb)[0].tolist() == [0.5]
    pj = tmp_path / "bom_pairs.jsonl"
    pj.write_bytes(bom + line({"confidence": 0.25, "correct": True}))
    assert read_pairs(pj)[0].tolist() == [0.25]
    # U+2028 inside a JSON string does not split the line (str.splitlines did)
    sep = tmp_path / "sep.jsonl"
    sep.write_bytes(
        line({"confidence": 0.5, "correct": True, "note": "a\u2028b\u2029c\x85d"})
        + line({"confidence": 0.75, "correct": False})
    )
    assert read_pairs(sep)[0].tolist() == [0.5, 0.75]  # today: "not valid JSON"
    res = cli("calibrate", "buckets", sep, "-o", tmp_path / "sep.json")
    assert res.exit_code == 0, res.output


# ---- safe reading of files named by users ----------------------------------------------
def test_read_user_file_opens_regular_files_only_and_bounded(tmp_path):
    with pytest.raises(InputFileError, match="is a device"):
        read_user_file("/dev/zero")
    with pytest.raises(InputFileError, match="is a directory"):
        read_user_file(tmp_path)
    with pytest.raises(InputFileError, match="no such file"):
        read_user_file(tmp_path / "missing.json")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = {}
    th = threading.Thread(
        target=lambda: result.setdefault("err", pytest.raises(ValueError, load_decoder_settings, fifo, "topk"))
    )
    th.start()
    th.join(10)
    assert not th.is_alive(), "opening a FIFO blocked"
    assert "is a FIFO" in str(result["err"].value)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(CALIBRATION_MAX_BYTES + 1)  # sparse: no disk use
    with pytest.raises(ValueError, match=f"larger than the limit of {CALIBRATION_MAX_BYTES} bytes"):
        load_decoder_settings(big, "topk")
    small = tmp_path / "s.json"
    small.write_bytes(b"[1, 2]")
    assert read_json_file(small, max_bytes=6) == [1, 2]
    with pytest.raises(InputFileError, match="larger than the limit of 5 bytes"):
        read_json_file(small, max_bytes=5)
    for path in ("/dev/zero", fifo, tmp_path):
        with pytest.raises(ValueError, match="only regular files|is a directory"):
            load_decoder_settings(path, "epsilon")
        assert_reported(cli("calibrate", "plot", "grid", path, "-o", tmp_path / "x.png"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_trace_records_are_reported_with_path_and_line(tmp_path, data):
    """Any JSON value in any field of a record: the schema check reports it as path:line, nothing else."""
    rec = tf_record("a")
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(rec)))
        rec[key] = data.draw(JSON | st.lists(JSON, min_size=3, max_size=3))
    path = tmp_path / "f.jsonl"
    path.write_bytes(line(tf_record("ok")) + line(rec))
    try:
        got = list(iter_teacher_forced(path))
    except TraceFormatError as exc:
        assert exc.line == 2 and str(exc).startswith(f"{path}:2: ")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert completed_ids(path, schema=TEACHER_FORCED) == {"ok"}
    else:
        assert len(got) == 2


def _corrupt(data, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = data.draw(
                st.sampled_from(
                    [
                        b"\r",
                        b"\n",
                        b"\xef\xbb\xbf",
                        b"\xe2\x80\xa8",
                        b"\xff",
                        b'"',
                        b"]",
                        b"[[[[",
                        b"-1",
                        b"1e999",
                        b"null",
                        b"true",
                    ]
                )
            )
    return bytes(buf)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_inputs_never_trace_back_in_the_cli(calib, tmp_path, data):
    """Byte-corrupted grid, calibration, metrics and pairs files: exit 0 or a one-line exit 2."""
    kind = data.draw(st.sampled_from(["fit", "table", "buckets", "settings", "samples"]))
    src = {"fit": calib / "grid.json", "settings": calib / "calib.json", "buckets": calib / "pairs.jsonl"}.get(kind)
    raw = src.read_bytes() if src else json.dumps(_metrics(), indent=1).encode()
    if kind == "samples":
        raw = b"".join(line(_row(i, i % 2 == 0)) for i in range(3))
    bad = tmp_path / f"in_{kind}{src.suffix if src else '.json'}"
    bad.write_bytes(_corrupt(data, raw))
    if kind == "samples":
        from sample_smart.analysis.studies import VOTE_FIELDS, load_samples

        try:
            rows = load_samples(bad, VOTE_FIELDS)
        except InputFileError as exc:
            assert str(exc).startswith(f"{bad}")
        else:
            assert all(isinstance(r["correct"], bool) for r in rows)
        return
    if kind == "settings":
        for mode in ("topk", "epsilon"):
            try:
                DecodeConfig.from_dict(load_decoder_settings(bad, mode))
            except ValueError as exc:
                assert str(bad) in str(exc)
        return
    args = {
        "fit": ("calibrate", "fit", bad, "-o", tmp_path / "c.json", "--n-boot", 0),
        "table": ("analyze", "table", bad),
        "buckets": ("calibrate", "buckets", bad, "-o", tmp_path / "b.json"),
    }[kind]
    res = cli(*args)
    assert res.exit_code in (0, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        assert res.output.startswith("Error: ") or res.output.startswith("Usage:"), res.output
