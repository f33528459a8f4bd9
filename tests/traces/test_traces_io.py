"""Trace files: streaming writer and reader, crash safety, line-numbered errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import orjson
import pytest

from sample_smart.traces import (
    TraceFormatError,
    TraceWriter,
    completed_ids,
    iter_teacher_forced,
    read_records,
)
from sample_smart.traces.schemas import TEACHER_FORCED, SchemaError, validate_teacher_forced


def tf_record(ex_id: str, n: int = 3, k: int = 4) -> dict:
    return {
        "schema": TEACHER_FORCED,
        "id": ex_id,
        "model": "m",
        "backend": "transformers",
        "top_k": k,
        "entropy_scope": "full",
        "log_base": "e",
        "n_tokens": n,
        "gold_id": [5] * n,
        "gold_rank": [2] * n,
        "gold_logprob": [-1.5] * n,
        "p_max": [0.4] * n,
        "entropy": [1.2] * n,
        "top_ids": [[1, 5, 7, 9]] * n,
        "top_logprobs": [[-0.9, -1.5, -2.0, -3.0]] * n,
    }


def test_roundtrip_streams_records_in_order(tmp_path):
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        for i in range(5):
            w.write(tf_record(str(i)))
    assert w.closed
    got = list(iter_teacher_forced(path))
    assert [r["id"] for r in got] == ["0", "1", "2", "3", "4"]
    assert got[2] == tf_record("2")
    # appending continues the file
    with TraceWriter(path) as w:
        w.write(tf_record("5"))
    assert [r["id"] for r in read_records(path)] == [str(i) for i in range(6)]
    assert completed_ids(path) == {str(i) for i in range(6)}


def test_corrupt_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [orjson.dumps(tf_record(str(i))) for i in range(4)]
    lines[2] = lines[2][:40] + b"#garbage"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(TraceFormatError) as info:
        list(read_records(path))
    assert info.value.line == 3 and info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:3: invalid JSON")
    with pytest.warns(UserWarning, match=r":3: invalid JSON"):
        got = list(read_records(path, on_error="skip"))
    assert [r["id"] for r in got] == ["0", "1", "3"]


def test_blank_lines_are_ignored_but_keep_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(orjson.dumps(tf_record("a")) + b"\n\n[1, 2]\n")
    with pytest.raises(TraceFormatError, match=r":3: expected a JSON object"):
        list(read_records(path))


def test_schema_violation_names_line_and_field(tmp_path):
    path = tmp_path / "t.jsonl"
    bad = tf_record("b")
    bad["gold_rank"] = [2, 0, 1]
    with TraceWriter(path) as w:
        w.write(tf_record("a"))
        w.write(bad)
    with pytest.raises(TraceFormatError, match=r":2: field 'gold_rank': step 1: rank must be an int >= 1"):
        list(iter_teacher_forced(path))
    with pytest.raises(SchemaError, match="'top_ids'"):
        validate_teacher_forced({**tf_record("c"), "top_ids": [[1, 2]] * 3})
    other = tmp_path / "o.jsonl"
    other.write_bytes(orjson.dumps({"schema": "sample_smart.generation/1"}) + b"\n")
    with pytest.raises(TraceFormatError, match=r":1: expected schema 'sample_smart.teacher_forced/1'"):
        list(iter_teacher_forced(other))


def test_truncated_tail_reported_then_repaired_by_the_next_writer(tmp_path):
    path = tmp_path / "t.jsonl"
    full = b"".join(orjson.dumps(tf_record(str(i))) + b"\n" for i in range(3))
    path.write_bytes(full + orjson.dumps(tf_record("3"))[:57])
    with pytest.raises(TraceFormatError, match=r":4: truncated last line"):
        list(read_records(path))
    assert completed_ids(path) == {"0", "1", "2"}  # resume ignores the partial line
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        w = TraceWriter(path)
    with w:
        w.write(tf_record("3"))
    assert [r["id"] for r in iter_teacher_forced(path)] == ["0", "1", "2", "3"]


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="on_error must be one of"):
        list(read_records(tmp_path / "x.jsonl", on_error="ignore"))
    with pytest.raises(ValueError, match="fsync_every"):
        TraceWriter(tmp_path / "y.jsonl", fsync_every=0)
    w = TraceWriter(tmp_path / "z.jsonl")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write({})


CHILD = textwrap.dedent(
    """
    import sys
    from sample_smart.traces import TraceWriter
    # big records so that the kill is likely to land while a line is being produced
    payload = list(range(20000))
    with TraceWriter(sys.argv[1]) as w:
        i = 0
        while True:
            w.write({"id": str(i), "payload": payload, "tail": "end"})
            i += 1
    """
)


def test_sigkilled_writer_leaves_only_complete_readable_lines(tmp_path):
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer subprocess produced no records")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    data = path.read_bytes()
    n_complete = data.count(b"\n")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        got = list(read_records(path, on_error="skip"))
    assert len(got) == n_complete >= 20
    assert [r["id"] for r in got] == [str(i) for i in range(n_complete)]
    assert all(r["tail"] == "end" and len(r["payload"]) == 20000 for r in got)
    if not data.endswith(b"\n"):  # killed mid-line: the partial line is reported, by line number
        with pytest.raises(TraceFormatError, match=rf":{n_complete + 1}: truncated last line"):
            list(read_records(path))
    # a resumed writer continues after the last complete record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TraceWriter(path) as w:
            w.write({"id": "next", "payload": [], "tail": "end"})
    assert [r["id"] for r in read_records(path)][-2:] == [str(n_complete - 1), "next"]


def test_trace_modules_do_not_import_vllm_or_transformers():
    code = (
        "import sys, importlib, pkgutil, sample_smart.traces as t\n"
        "for m in pkgutil.iter_modules(t.__path__): importlib.import_module('sample_smart.traces.' + m.name)\n"
        "import sample_smart.commands.trace\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('vllm', 'transformers', 'lm_eval')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
