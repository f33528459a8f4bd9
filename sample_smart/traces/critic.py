"""Critic calibration on sampled tokens (the engine of ``sample-smart calibrate critic``).

For every supervised (target) position i of a (prompt, target) sequence, teacher-forced
with the transformers backend (prefix = prompt + gold t_1..t_{i-1}):

1. draw one token s_i ~ softmax(z_i) from the model's **raw** distribution: the full
   vocabulary, temperature 1, no truncation, softmax in float32, ``torch.multinomial`` with
   a ``torch.Generator`` seeded per sequence from (seed, sequence index) (``sequence_seed``),
   so a sequence's draws do not depend on batching or on which other sequences ran;
2. score s_i with a critic: ``p_sampled`` = softmax(z_i)[s_i] (the model's own probability
   of the token it drew), ``p_max`` = max_v softmax(z_i)[v], or ``model:PATH`` = a second
   model's probability of s_i given the same prefix. With ``on_sampled`` the critic instead
   sees the sampled sequence prompt + s_1..s_T (every gold token replaced by its draw, one
   forward pass, as the original tool does) and scores s_i given prompt + s_1..s_{i-1};
3. correct_i = [s_i == t_i].

The pairs (score, correct) go into the 100 buckets of :mod:`sample_smart.calibration.buckets`
(fill rule and ECE there); the files are written by
:mod:`sample_smart.calibration.bucket_decoder`. Nothing trains: forwards run in eval mode
under ``torch.inference_mode`` (the teacher forcer's).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.calibration.buckets import N_BUCKETS, BucketCalibrator, bucket_index

from .examples import EncodedExample, Example, encode_example, load_examples

BUILTIN_CRITICS = ("p_sampled", "p_max")
SAMPLED_FROM = {
    "distribution": "raw model distribution (untempered, unprocessed): softmax of the full-vocabulary logits",
    "temperature": 1.0,
    "truncation": None,
    "softmax_dtype": "float32",
    "sampler": "torch.multinomial, one draw per supervised position (teacher-forced gold prefix)",
    "generator": "torch.Generator per sequence, seeded with sequence_seed(seed, index) "
    "(numpy SeedSequence([seed, index]).generate_state(1, uint64)[0])",
}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
TASKS = ("arith_mini", "gsm8k_fewshot")
SPLIT_FILES = {"train": ("train.jsonl",), "val": ("val.jsonl", "validation.jsonl", "test.jsonl")}


# ---- the draw -------------------------------------------------------------------------
def sequence_seed(seed: int, index: int) -> int:
    """The generator seed of sequence ``index`` (0-based, data order) for the run seed ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got {seed}, {index}")
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def softmax_rows(logits: Any):
    """softmax over the last axis in float32 (the distribution that is sampled and scored)."""
    import torch

    return torch.softmax(logits.to(torch.float32), dim=-1)


def sample_rows(logits: Any, generator: Any):
    """One token per row of ``logits`` [T, V], drawn from softmax(row) (T = 1, full vocabulary).

    Returns ``(ids [T] int64, probs [T, V] float32)``."""
    import torch

    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be [T, V] with T >= 1, got shape {tuple(logits.shape)}")
    probs = softmax_rows(logits)
    if not torch.isfinite(probs).all():
        raise ValueError("logits give a non-finite softmax (NaN or all -inf row)")
    return torch.multinomial(probs, 1, replacement=True, generator=generator).squeeze(1), probs


# ---- models ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``folder`` (config + tokenizer), optional checkpoint ``weights``."""

    spec: str
    folder: Path
    weights: Path | None = None
    default_output: Path | None = None

    @property
    def name(self) -> str:
        return str(self.weights or self.folder)


def _missing(folder: Path, groups: dict[str, tuple[str, ...]]) -> list[str]:
    return [
        f"{what} ({' or '.join(names)})"
        for what, names in groups.items()
        if not any((folder / n).is_file() for n in names)
    ]


def resolve_model(spec: str) -> ModelSource:
    """A model folder, a checkpoint file (weights; config and tokenizer in its folder), ``-``
    for the embedded model, or a hub name already in the local cache. Checked, not loaded."""
    if spec == "-":
        from sample_smart.models import ModelNotAvailableError, require_default_model

        try:
            folder = require_default_model()
        except ModelNotAvailableError as exc:
            raise ValueError(str(exc)) from None
        return ModelSource(spec, Path(folder), None, Path(folder) / "critic_calibration.json")
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = _missing(path, {"config": ("config.json",), "weights": WEIGHT_FILES, "tokenizer": TOKENIZER_FILES})
        if missing:
            raise ValueError(f"model folder {path}: missing {', '.join(missing)}")
        return ModelSource(spec, path.absolute(), None, path.absolute() / "critic_calibration.json")
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"model {path}: a checkpoint file must end in {', '.join(CHECKPOINT_SUFFIXES)}")
        missing = _missing(path.parent, {"config": ("config.json",), "tokenizer": TOKENIZER_FILES})
        if missing:
            raise ValueError(
                f"checkpoint {path}: its folder {path.parent} lacks {', '.join(missing)} "
                "(the architecture and tokenizer of the weights)"
            )
        return ModelSource(spec, path.parent.absolute(), path.absolute(), path.absolute().with_suffix(".json"))
    if path.suffix or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ValueError(f"model {spec!r}: no such file or folder ({path.absolute()})")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(spec, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any hub error means: not in the local cache
        raise ValueError(f"model {spec!r}: not a file or folder, and not in the local hub cache ({exc})") from None
    return ModelSource(spec, folder, None, None)


def load_model(source: ModelSource, dtype: str = "float32"):
    """``(model, tokenizer)`` from a :class:`ModelSource`, on CPU, eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source.folder)
    if source.weights is None:
        return AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch_dtype).eval(), tokenizer
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source.folder), dtype=torch_dtype)
    if source.weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source.weights))
    else:
        try:
            state = torch.load(source.weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors of every kind
            raise ValueError(f"checkpoint {source.weights}: cannot be read as a torch state dict ({exc})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"checkpoint {source.weights}: expected a state dict of tensors (or one under "
            "'model'/'state_dict'/'model_state_dict')"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {source.weights}: does not fit the config in {source.folder}: {str(exc).splitlines()[0]}"
        ) from None
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model.eval(), tokenizer


# ---- data ------------------------------------------------------------------------------
@dataclass
class DataSource:
    description: dict
    examples: Callable[[int], list[Example]] = field(repr=False)
    path: Path | None = None


def _jsonl_source(path: Path, kind: str, fields: dict) -> DataSource:
    def take(n: int) -> list[Example]:
        return list(itertools.islice(load_examples(path, **fields), n))

    return DataSource({"kind": kind, "path": str(path), **fields}, take, path)


def resolve_data(
    data: str,
    split: str = "val",
    data_dir: str | os.PathLike | None = None,
    *,
    id_field: str = "id",
    prompt_field: str = "prompt",
    target_field: str = "target",
) -> DataSource:
    """DATA as a JSONL file of prompt/target pairs, a folder with ``train.jsonl``/``val.jsonl``
    (``split`` picks; for val also ``validation.jsonl``, ``test.jsonl``), or a task name
    (``arith_mini``: generated, question -> solution; ``gsm8k_fewshot``: ``data_dir`` or
    $SAMPLE_SMART_GSM8K_DIR with train.jsonl/test.jsonl, question -> answer, val = test).
    Relative paths resolve against the working directory."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    fields = {"id_field": id_field, "prompt_field": prompt_field, "target_field": target_field}
    path = Path(data).expanduser().absolute()
    if path.is_file():
        return _jsonl_source(path, "jsonl", fields)
    if path.is_dir():
        tried = [path / name for name in SPLIT_FILES[split]]
        for f in tried:
            if f.is_file():
                return _jsonl_source(f, f"folder ({split})", fields)
        raise ValueError(f"DATA folder {path}: no {split} split; looked for {', '.join(map(str, tried))}")
    if data == "arith_mini":
        from sample_smart.tasks import arith

        name = "train" if split == "train" else "test"

        def take(n: int) -> list[Example]:
            return [Example(d["id"], d["question"], d["solution"]) for d in arith.generate(name, n)]

        return DataSource(
            {"kind": "task", "task": data, "split": name, "prompt": "question", "target": "solution"}, take
        )
    if data == "gsm8k_fewshot":
        from sample_smart.tasks import gsm8k

        try:
            folder = gsm8k.local_dir(data_dir)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        if folder is None:
            raise ValueError(
                f"DATA gsm8k_fewshot: give --data-dir (a folder with train.jsonl and test.jsonl) "
                f"or set ${gsm8k.ENV_VAR}; the hub is not used here"
            )
        f = folder.absolute() / ("train.jsonl" if split == "train" else "test.jsonl")
        src = _jsonl_source(f, "task", {"id_field": "id", "prompt_field": "question", "target_field": "answer"})
        src.description.update(task=data, split=f.stem)
        return src
    raise ValueError(
        f"DATA {data!r} matches nothing: looked for the file {path}, the folder {path} holding "
        f"{' / '.join(SPLIT_FILES[split])}, and a task name ({', '.join(TASKS)})"
    )


# ---- critics ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Critic:
    """``name`` in p_sampled, p_max, model; ``prefix`` gold or sampled; ``path`` for model critics."""

    name: str
    prefix: str = "gold"
    path: str | None = None

    @classmethod
    def parse(cls, spec: str, on_sampled: bool = False) -> "Critic":
        prefix = "sampled" if on_sampled else "gold"
        if spec in BUILTIN_CRITICS:
            return cls(spec, prefix)
        if spec.startswith("model:") and spec[len("model:") :].strip():
            return cls("model", prefix, spec[len("model:") :].strip())
        raise ValueError(f"critic must be one of {', '.join(BUILTIN_CRITICS)} or model:PATH, got {spec!r}")

    def describe(self, critic_model_name: str | None = None) -> dict:
        score = {
            "p_sampled": "the model's probability of the sampled token",
            "p_max": "the model's largest token probability at the position",
            "model": "a second model's probability of the sampled token",
        }[self.name]
        seen = (
            "the gold prefix prompt + t_1..t_{i-1} (the one the token was sampled at)"
            if self.prefix == "gold"
            else "the sampled sequence prompt + s_1..s_{i-1} (gold tokens replaced by the draws)"
        )
        out = {"name": self.name, "prefix": self.prefix, "score": f"{score}, given {seen}; raw softmax, T = 1"}
        if self.name == "model":
            out["model"] = critic_model_name or self.path
        return out


# ---- the run ---------------------------------------------------------------------------
@dataclass
class CriticResult:
    counts: np.ndarray
    correct: np.ndarray
    score_sums: np.ndarray
    scores: np.ndarray
    hits: np.ndarray
    n_sequences: int
    n_correct_samples: int
    draws_sha256: str
    sampled: dict[str, list[int]] = field(repr=False)

    @property
    def n_positions(self) -> int:
        return int(self.hits.shape[0])

    @property
    def overall_accuracy_samples(self) -> float:
        return self.n_correct_samples / self.n_positions

    def calibrator(self) -> BucketCalibrator:
        return BucketCalibrator().fit(self.scores, self.hits)


def encode_all(tokenizer, examples: Iterable[Example], chat_template: bool) -> list[EncodedExample]:
    """Encode every example (errors name the example); refuses a data set with no supervised token."""
    out = [encode_example(tokenizer, ex, chat_template=chat_template) for ex in examples]
    if not out or sum(len(e.target_ids) for e in out) == 0:
        raise ValueError("the data hold no supervised (target) token")
    return out


def _forcer(model, tokenizer, batch_size: int):
    from .transformers_backend import TransformersTeacherForcer

    return TransformersTeacherForcer(model, tokenizer, batch_size=batch_size, model_name="critic-calibration")


def run_critic_calibration(
    encoded: list[EncodedExample],
    model: Any,
    tokenizer: Any,
    *,
    critic: Critic,
    critic_model: Any = None,
    seed: int = 0,
    batch_size: int = 4,
    progress: bool = True,
    verbose_every: int = 0,
    echo: Callable[[str], Any] = print,
) -> CriticResult:
    """Sample, score and bucket (module doc). ``critic_model`` (a model object sharing the
    tokenizer's vocabulary) is required for ``critic.name == "model"``; with ``verbose_every``
    the non-empty buckets are printed every that many sequences."""
    import torch
    from tqdm.auto import tqdm

    if critic.name == "model" and critic_model is None:
        raise ValueError("a model critic needs critic_model")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    base = _forcer(model, tokenizer, batch_size)
    judge = None
    if critic.name == "model":
        judge = _forcer(critic_model, tokenizer, batch_size)
        v_model = base.model.get_output_embeddings().weight.shape[0]
        v_critic = judge.model.get_output_embeddings().weight.shape[0]
        if v_model != v_critic:
            raise ValueError(f"the critic model's vocabulary ({v_critic}) differs from the model's ({v_model})")
    elif critic.prefix == "sampled":
        judge = base
    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    correct = np.zeros(N_BUCKETS, dtype=np.int64)
    sums = np.zeros(N_BUCKETS, dtype=np.float64)
    all_scores: list[np.ndarray] = []
    all_hits: list[np.ndarray] = []
    sampled: dict[str, list[int]] = {}
    n_correct = 0
    digest = hashlib.sha256()
    chunk = max(batch_size * 4, 1)
    bar = tqdm(total=len(encoded), disable=not progress, unit="seq", desc=f"critic [{critic.name}]")
    done = 0
    try:
        for start in range(0, len(encoded), chunk):
            items = encoded[start : start + chunk]
            draws: dict[int, Any] = {}
            scores: dict[int, Any] = {}
            for i, rows in base.target_logits(items):
                g = torch.Generator().manual_seed(sequence_seed(seed, start + i))
                ids, probs = sample_rows(rows, g)
                draws[i] = ids
                if judge is None:
                    scores[i] = (
                        probs.gather(1, ids[:, None]).squeeze(1)
                        if critic.name == "p_sampled"
                        else probs.max(dim=1).values
                    )
            if judge is not None:
                seen = (
                    items
                    if critic.prefix == "gold"
                    else [EncodedExample(e.id, e.prompt_ids, draws[i].tolist()) for i, e in enumerate(items)]
                )
                for i, rows in judge.target_logits(seen):
                    probs = softmax_rows(rows)
                    scores[i] = (
                        probs.max(dim=1).values
                        if critic.name == "p_max"
                        else probs.gather(1, draws[i][:, None]).squeeze(1)
                    )
            for i, e in enumerate(items):
                s = scores[i].double().numpy()
                ids = draws[i].numpy()
                hit = ids == np.asarray(e.target_ids)
                b = bucket_index(s)
                counts += np.bincount(b, minlength=N_BUCKETS)
                correct += np.bincount(b, weights=hit.astype(np.float64), minlength=N_BUCKETS).astype(np.int64)
                sums += np.bincount(b, weights=s, minlength=N_BUCKETS)
                n_correct += int(hit.sum())
                all_scores.append(s)
                all_hits.append(hit)
                sampled[e.id] = ids.tolist()
                digest.update(ids.astype("<i8").tobytes())
                done += 1
                if verbose_every and done % verbose_every == 0:
                    _echo_buckets(echo, done, counts, correct)
            bar.update(len(items))
    finally:
        bar.close()
    return CriticResult(
        counts,
        correct,
        sums,
        np.concatenate(all_scores),
        np.concatenate(all_hits),
        done,
        n_correct,
        digest.hexdigest(),
        sampled,
    )


def _echo_buckets(echo: Callable[[str], Any], done: int, counts: np.ndarray, correct: np.ndarray) -> None:
    rows = [
        f"  [{k / 100:.2f}, {(k + 1) / 100:.2f}{']' if k == 99 else ')'} n={counts[k]} acc={correct[k] / counts[k]:.4f}"
        for k in np.flatnonzero(counts)
    ]
    echo(f"after {done} sequences, {int(counts.sum())} positions, non-empty buckets:\n" + "\n".join(rows))
