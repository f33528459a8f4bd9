"""DecisionTokenCallback across 2 CPU processes (gloo, torchrun): gathered in dataset order, the
distributed sampler's repeated examples dropped, the same numbers as one process, JSONL on rank 0 only.

Run as a script by torchrun (the worker below); the test starts it (~20 s: two model loads, 6 examples).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

N = 6  # with 2 ranks x batch 2 the sampler pads 6 to 8: the gather must drop the 2 repeats


def _worker(out: str) -> None:
    import warnings

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from sample_smart.analysis.decision import score_batch
    from sample_smart.integrations.transformers import DecisionTokenCallback
    from sample_smart.models import require_default_model
    from sample_smart.tasks import decision_arith

    path = str(require_default_model())
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    feats = decision_arith.sft_features(tok, decision_arith.generate(N, "test"))
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    args = TrainingArguments(
        output_dir=out,
        per_device_eval_batch_size=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo",
    )
    trainer = Trainer(model=lm, args=args, eval_dataset=feats, processing_class=tok, data_collator=collate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DecisionTokenCallback.attach(
            trainer,
            decision_arith.LABELS,
            answer_prefix=decision_arith.ANSWER_PREFIX,
            jsonl_path=os.path.join(out, "decision.jsonl"),
        )
    metrics = trainer.evaluate()
    rank = dist.get_rank()
    entry = [e for e in trainer.state.log_history if "eval_decision_n" in e][-1]
    ref = None
    if rank == 0:  # the single-process reference: every example in one batch
        lm.eval()
        ref = score_batch(
            lm,
            collate([dict(f) for f in feats]),
            trainer.callback_handler.callbacks[-1].label_tokens,
            tokenizer=tok,
            answer_prefix=decision_arith.ANSWER_PREFIX,
        )[2].tolist()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {"world": dist.get_world_size(), "entry": entry, "metrics_n": metrics["eval_decision_n"], "ref": ref}
        )
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_gather_in_order_without_repeats(tmp_path):
    import signal

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: no orphan keeps a core
        _, err = proc.communicate()
        raise AssertionError(f"the 2-process run did not finish in 240 s: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["entry"] == ranks[1]["entry"]  # every rank logs the same gathered numbers
    assert ranks[0]["entry"]["eval_decision_n"] == N and ranks[0]["metrics_n"] == N
    recs = [json.loads(line) for line in (tmp_path / "decision.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in recs] == [str(i) for i in range(N)]  # written once, by rank 0, in order
    for rec, ref in zip(recs, ranks[0]["ref"]):
        assert abs(rec["p_accept"] - ref[0]) < 2e-4 and abs(rec["p_reject"] - ref[1]) < 2e-4


if __name__ == "__main__":
    _worker(sys.argv[1])
