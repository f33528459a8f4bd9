"""Run a token-by-token model comparison and write its files (transformers backend, exact).

Two modes, every model loaded once (a path given twice is loaded once and shared):

* ``teacher_forced``: every model scores the same (prompt, reference target) token ids, so
  position i of every model predicts the same token after the same prefix; per position the
  statistics of :mod:`.compare` for each model and, for each pair (base = the earlier model
  in ``--model`` order), KL(P_base || P_other), Delta p and same-top, all exact over the full
  vocabulary. The models must share the vocabulary (checked before any model loads).
* ``generation``: each model generates from each prompt (``model.generate`` with
  sample_smart's decoder through ``integrations.transformers.generate_kwargs``; greedy by
  default), then scores its own tokens by teacher forcing on ``prompt + generated``; the
  numbers are of the model's RAW distribution (before the decoder's temperature and
  truncation). Positions do not align across models, so there is no KL.

The per-token work reuses the trace layer: prompts and targets are read and tokenised by
``traces.examples`` (exact prompt/target boundary), logits come from
``TransformersTeacherForcer.target_logits`` (right-padded micro-batches) and the per-position
statistics from ``traces.stats.token_stats``.

Files (``PREFIX = <output_dir>/<experiment>_<UTC time>``; see :func:`run_compare`):
``PREFIX_run.json`` (settings), ``PREFIX_tokens.jsonl`` (one line per finished prompt, the
source of every other file, written by ``traces.writer.TraceWriter``), ``PREFIX_prompts/<id>/``
(one CSV per model and ``texts.json``, written to a temporary folder and renamed before the
JSONL line), ``PREFIX_errors.jsonl`` (prompts reported and skipped), and the aggregates of
:mod:`.compare_tables` and :mod:`.compare_plots`. A crash loses at most the prompt being
written; rerunning the same command (same settings and data) continues the same files.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from sample_smart.io_checks import atomic_dir
from sample_smart.traces.examples import EncodedExample, Example, encode_example, load_examples, render_prompt
from sample_smart.traces.reader import TraceFormatWarning, read_jsonl
from sample_smart.traces.stats import f32_lists
from sample_smart.traces.writer import TraceWriter, dumps_line

from .compare import pair_stats, position_stats
from .compare_tables import write_aggregates, write_atomic

SCHEMA = "sample_smart.compare/1"
MODES = ("teacher_forced", "generation")
EMBEDDED = "embedded"
EMBEDDED_BF16 = "embedded-bf16"
_NAME_RE = re.compile(r"^[A-Za-z0-9._+-]{1,80}$")


# ----------------------------------------------------------------------------- models


def make_bf16_copy(
    src: str | os.PathLike | None = None, dst: str | os.PathLike | None = None, *, force: bool = False
) -> Path:
    """A second real model made from ``src`` (default: the embedded fp32 model): its weights
    cast to bfloat16 (round to nearest even) and saved with its tokenizer.

    Default ``dst``: ``cache_dir()/models/<src name>-bf16``. Written into a temporary sibling
    folder that is renamed when complete (marker file last), so an interrupted call leaves
    nothing half-written; idempotent unless ``force``. Load it back with
    ``dtype=float32`` to score with bf16-rounded weights in fp32 arithmetic.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sample_smart.models import _DONE_MARKER, cache_dir, is_prepared, require_default_model

    src = Path(src) if src is not None else require_default_model()
    dst = Path(dst) if dst is not None else cache_dir() / "models" / f"{src.name.removesuffix('-fp32')}-bf16"
    if is_prepared(dst) and not force:
        return dst
    with atomic_dir(dst) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32).to(torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(tmp))
        (tmp / _DONE_MARKER).write_text(f"bfloat16 cast of {src}\n")
    return dst


def resolve_model(spec: str | os.PathLike | None) -> str:
    """A model folder for ``spec``: ``None``/``"embedded"`` = the embedded model,
    ``"embedded-bf16"`` = :func:`make_bf16_copy` (made on first use), an existing folder with a
    ``config.json``, or a name in the local Hugging Face cache (offline). ValueError otherwise."""
    from sample_smart.models import ModelNotAvailableError, require_default_model

    text = EMBEDDED if spec is None else str(spec)
    try:
        if text == EMBEDDED:
            return str(require_default_model())
        if text == EMBEDDED_BF16:
            return str(make_bf16_copy())
    except ModelNotAvailableError as exc:
        raise ValueError(str(exc)) from None
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model {text!r}: the folder has no config.json (not a transformers model folder)")
        return str(path)
    if path.exists():
        raise ValueError(f"model {text!r}: a file, not a model folder")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(text, local_files_only=True)
    except Exception:
        raise ValueError(
            f"unknown model {text!r}: not a folder and not in the local Hugging Face cache (no network is used); "
            f"give a model folder, {EMBEDDED!r} or {EMBEDDED_BF16!r}"
        ) from None


def default_names(paths: list[str]) -> list[str]:
    """File-safe names from the folder names; repeats get ``_2``, ``_3``..."""
    names, seen = [], {}
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(p).name)[:70] or "model"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


# ----------------------------------------------------------------------------- spec


@dataclass
class CompareSpec:
    """One comparison. ``models``: >= 2 model specs (see :func:`resolve_model`); ``names``: one
    per model or None (from the folder names). ``decoder``: a ``DecodeConfig`` for generation
    (None = greedy); ``max_length``: cap on prompt + continuation tokens (default: the smallest
    ``max_position_embeddings`` of the models)."""

    models: list[str]
    data: str
    output_dir: str = "runs/compare"
    names: list[str] | None = None
    mode: str = "teacher_forced"
    experiment_name: str = "compare"
    max_new_tokens: int = 64
    decoder: Any = None
    seed: int = 0
    chat_template: bool = True
    id_field: str = "id"
    prompt_field: str = "prompt"
    target_field: str = "target"
    limit: int | None = None
    batch_size: int = 4
    n_quantiles: int = 10
    max_length: int | None = None
    device: str | None = None
    dtype: str = "float32"
    resume: bool = True

    def check(self) -> None:
        """Refuse bad settings (ValueError naming the field and the allowed range); no model loads."""
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is invalid: allowed {MODES}")
        if len(self.models) < 2:
            raise ValueError(f"models: a comparison needs at least 2 models, got {len(self.models)}")
        if self.names is not None:
            if len(self.names) != len(self.models):
                raise ValueError(f"names: got {len(self.names)} names for {len(self.models)} models (one per model)")
            bad = [n for n in self.names if not _NAME_RE.match(n)]
            if bad:
                raise ValueError(f"names: {bad[0]!r} is invalid: allowed 1-80 characters of A-Z a-z 0-9 . _ + -")
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"names must be distinct, got {self.names}")
        if not _NAME_RE.match(self.experiment_name):
            raise ValueError(
                f"experiment_name={self.experiment_name!r} is invalid: allowed 1-80 characters of A-Z a-z 0-9 . _ + -"
            )
        for key, lo in (("max_new_tokens", 1), ("batch_size", 1), ("n_quantiles", 1), ("limit", 1), ("max_length", 2)):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v < lo):
                raise ValueError(f"{key}={v!r} is invalid: allowed an integer >= {lo}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r} is invalid: allowed float32, bfloat16, float16")
        if not os.path.isfile(self.data):
            raise ValueError(f"data: {self.data!r} is not a file")

    def fingerprint(self, paths: list[str], names: list[str]) -> str:
        """Hash of everything that determines the results (settings, model folders, data bytes)."""
        h = hashlib.sha256()
        with open(self.data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        settings = {k: v for k, v in asdict(self).items() if k not in ("output_dir", "resume", "decoder", "device")}
        settings.update(paths=paths, names=names, decoder=self.decoder.to_dict() if self.decoder else None)
        settings["data"] = h.hexdigest()
        return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


# ----------------------------------------------------------------------------- preflight


@dataclass
class Plan:
    """What :func:`prepare` found before any model loads."""

    spec: CompareSpec
    paths: list[str]
    names: list[str]
    tokenizers: list[Any]
    max_length: int
    prompts: list[tuple[int, Example, list[EncodedExample]]]  # (index, example, one encoding per model)
    errors: list[dict]


def _context(path: str) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _vocab_size(path: str) -> int | None:
    from transformers import AutoConfig

    v = getattr(AutoConfig.from_pretrained(path), "vocab_size", None)
    return v if isinstance(v, int) else None


def _check_vocabularies(paths: list[str], names: list[str], tokenizers: list[Any]) -> None:
    base_vocab, base_size = tokenizers[0].get_vocab(), _vocab_size(paths[0])
    for path, name, tok in zip(paths[1:], names[1:], tokenizers[1:]):
        vocab = tok.get_vocab()
        if vocab != base_vocab or _vocab_size(path) != base_size:
            differ = len(set(vocab.items()) ^ set(base_vocab.items()))
            raise ValueError(
                f"model {name!r} has a different vocabulary from {names[0]!r} ({len(vocab)} vs {len(base_vocab)} "
                f"tokens, {differ} (token, id) entries differ; output size {_vocab_size(path)} vs {base_size}): "
                "teacher-forced comparison needs the same token ids"
            )


def _load_examples(spec: CompareSpec, errors: list[dict]) -> list[Example]:
    target = spec.target_field if spec.mode == "teacher_forced" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = []
        for ex in load_examples(
            spec.data, id_field=spec.id_field, prompt_field=spec.prompt_field, target_field=target, on_error="skip"
        ):
            examples.append(ex)
            if spec.limit is not None and len(examples) >= spec.limit:
                break
    for w in caught:
        if issubclass(w.category, TraceFormatWarning) or str(w.message).startswith("skipping "):
            errors.append({"id": None, "stage": "read", "error": str(w.message).removeprefix("skipping ")})
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not examples:
        what = "no valid lines" if errors else "no examples (empty file)"
        raise ValueError(f"data: {spec.data} has {what}" + (f"; first problem: {errors[0]['error']}" if errors else ""))
    return examples


def prepare(spec: CompareSpec) -> Plan:
    """Check everything that can be checked without loading a model: settings, model folders,
    vocabularies (teacher-forced), prompts and their lengths. Bad prompts are collected in
    ``Plan.errors`` and skipped; ValueError when nothing is left to run."""
    spec.check()
    paths = [resolve_model(m) for m in spec.models]
    from transformers import AutoTokenizer

    names = list(spec.names) if spec.names else default_names(paths)
    tokenizers, cache = [], {}
    for p in paths:
        if p not in cache:
            cache[p] = AutoTokenizer.from_pretrained(p)
        tokenizers.append(cache[p])
    if spec.mode == "teacher_forced":
        _check_vocabularies(paths, names, tokenizers)
    limits = [c for c in (_context(p) for p in paths) if c is not None]
    if spec.max_length is not None:
        limits.append(spec.max_length)
    max_length = min(limits) if limits else 1 << 30
    errors: list[dict] = []
    examples = _load_examples(spec, errors)
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"data: duplicate example id {dup!r}; ids key the per-prompt folders and the resume")
    prompts = []
    for index, ex in enumerate(examples):
        try:
            if spec.mode == "teacher_forced":
                enc = encode_example(tokenizers[0], ex, chat_template=spec.chat_template)
                encs = [enc] * len(paths)
                need = len(enc.input_ids)
            else:
                encs = [
                    EncodedExample(ex.id, render_prompt(t, ex.prompt, chat_template=spec.chat_template), [])
                    for t in tokenizers
                ]
                if not all(e.prompt_ids for e in encs):
                    raise ValueError("the prompt tokenises to no tokens")
                need = max(len(e.prompt_ids) for e in encs) + spec.max_new_tokens
            if need > max_length:
                what = (
                    "prompt + target"
                    if spec.mode == "teacher_forced"
                    else f"prompt + max_new_tokens={spec.max_new_tokens}"
                )
                raise ValueError(f"{what} needs {need} positions, above the context of {max_length} tokens")
        except ValueError as exc:
            errors.append({"id": ex.id, "stage": "encode", "error": str(exc)})
            continue
        prompts.append((index, ex, encs))
    if not prompts:
        raise ValueError(
            f"data: none of the {len(examples)} examples of {spec.data} can run; "
            f"first problem: example {errors[0]['id']!r}: {errors[0]['error']}"
        )
    return Plan(spec, paths, names, tokenizers, max_length, prompts, errors)


# ----------------------------------------------------------------------------- run files


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _safe_id(ex_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", ex_id)[:60]
    if safe != ex_id or safe in ("", ".", ".."):
        safe = f"{safe}-{hashlib.sha1(ex_id.encode()).hexdigest()[:8]}"
    return safe


def find_run(output_dir: str | os.PathLike, experiment: str, fingerprint: str) -> Path | None:
    """PREFIX of the latest run in ``output_dir`` with these settings, or None."""
    found = []
    for p in Path(output_dir).glob(f"{experiment}_*_run.json"):
        try:
            meta = orjson.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if meta.get("fingerprint") == fingerprint and meta.get("experiment_name") == experiment:
            found.append(p)
    if not found:
        return None
    return Path(str(max(found).as_posix()).removesuffix("_run.json"))


def done_ids(tokens_path: Path) -> set[str]:
    """Ids of the prompts with a complete line in the run's tokens JSONL."""
    if not tokens_path.exists():
        return set()
    with warnings.catch_warnings():  # a line cut by a crash: TraceWriter removes it (and says so)
        warnings.simplefilter("ignore", TraceFormatWarning)
        return {
            str(rec["id"])
            for _, rec in read_jsonl(tokens_path, on_error="skip")
            if isinstance(rec, dict) and "id" in rec
        }


# ----------------------------------------------------------------------------- per prompt


def _token_texts(tokenizer, ids: list[int], cache: dict) -> list[str]:
    out = []
    for i in ids:
        if i not in cache:
            cache[i] = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(cache[i])
    return out


def _model_columns(enc: EncodedExample, rows, tokenizer, texts: dict) -> dict[str, Any]:
    st = position_stats(rows, enc.target_ids)
    seq = enc.input_ids
    p = len(enc.prompt_ids)
    current = seq[p - 1 : p - 1 + len(enc.target_ids)]
    top = st.top_ids[:, 0].tolist()
    return {
        "n_tokens": len(st),
        "prompt_tokens": p,
        "current_id": current,
        "next_id": list(enc.target_ids),
        "current_token": _token_texts(tokenizer, current, texts),
        "next_token": _token_texts(tokenizer, list(enc.target_ids), texts),
        "entropy": f32_lists(st.entropy),
        "logprob_next": f32_lists(st.logprob),
        "p_next": f32_lists(st.logprob.exp()),
        "rank_next": st.rank.tolist(),
        "p_max": f32_lists(st.p_max),
        "top_id": top,
        "top_token": _token_texts(tokenizer, top, texts),
    }


PER_TOKEN_COLUMNS = {  # record column -> CSV header (units in the name)
    "current_id": "current_id",
    "current_token": "current_token",
    "next_id": "next_id",
    "next_token": "next_token",
    "entropy": "entropy_nats",
    "p_next": "p_next",
    "logprob_next": "logprob_next_nats",
    "rank_next": "rank_next",
    "p_max": "p_max",
    "top_id": "top_id",
    "top_token": "top_token",
}


def _prompt_folder(prefix: Path, rec: dict) -> Path:
    """Write ``PREFIX_prompts/<id>/`` (one CSV per model, texts.json) atomically."""
    import pandas as pd

    final = Path(f"{prefix}_prompts") / _safe_id(rec["id"])
    with atomic_dir(final) as tmp:  # a folder left by a crash before its JSONL line is replaced
        names = list(rec["models"])
        for name, cols in rec["models"].items():
            df = pd.DataFrame({h: cols[c] for c, h in PER_TOKEN_COLUMNS.items()})
            df.insert(0, "position", range(len(df)))
            for key, pc in rec.get("pairs", {}).items():
                base, other = key.split("|")
                if other == name and base == names[0]:
                    df[f"kl_from_{base}_nats"] = pc["kl"]
                    df[f"delta_p_vs_{base}"] = pc["delta_p"]
                    df[f"same_top_as_{base}"] = pc["same_top"]
            df.to_csv(tmp / f"{name}.csv", index=False)
        texts = {
            "id": rec["id"],
            "mode": rec["mode"],
            "prompt": rec["prompt"],
            "target": rec.get("target"),
            "models": {
                n: {k: c[k] for k in ("text", "n_tokens", "stopped_by_eos") if k in c} for n, c in rec["models"].items()
            },
        }
        (tmp / "texts.json").write_bytes(orjson.dumps(texts, option=orjson.OPT_INDENT_2))
    return final


class _Models:
    """The loaded models (one TransformersTeacherForcer per distinct folder; ``loaded`` is a
    cache {folder: forcer} shared across runs)."""

    def __init__(self, plan: Plan, loaded: dict[str, Any] | None = None):
        from sample_smart.traces.transformers_backend import TransformersTeacherForcer

        spec = plan.spec
        by_path: dict[str, Any] = {} if loaded is None else loaded
        self.forcers = []
        for path, tok in zip(plan.paths, plan.tokenizers):
            if path not in by_path:
                by_path[path] = TransformersTeacherForcer(
                    path, tok, device=spec.device, dtype=spec.dtype, batch_size=spec.batch_size, top_k=1
                )
            self.forcers.append(by_path[path])

    def logits(self, m: int, encs: list[EncodedExample]) -> list:
        """Target-position logits of model ``m`` for ``encs`` (float32, CPU), in order."""
        out: list = [None] * len(encs)
        for i, rows in self.forcers[m].target_logits(encs):
            out[i] = rows.float().cpu().clone()
        return out


def _generate(models: _Models, m: int, enc: EncodedExample, spec: CompareSpec, index: int) -> tuple[list[int], bool]:
    import torch

    from sample_smart.config import DecodeConfig
    from sample_smart.integrations.transformers import generate_kwargs

    f = models.forcers[m]
    cfg = spec.decoder or DecodeConfig(temperature=0.0)
    torch.manual_seed(spec.seed + index)  # prompt i gets seed + i, in every run and for every model
    ids = torch.tensor([enc.prompt_ids], device=f.device)
    with torch.inference_mode():
        out = f.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=spec.max_new_tokens,
            pad_token_id=f.pad_id,
            **generate_kwargs(cfg),
        )
    gen = out[0, len(enc.prompt_ids) :].tolist()
    eos = f.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    stopped = bool(gen) and gen[-1] in eos
    return gen, stopped


def _records_for_chunk(
    plan: Plan, models: _Models, chunk: list, texts: list[dict]
) -> list[tuple[Any, dict | Exception]]:
    """(example, record or the exception that stopped it) for each prompt of ``chunk``."""
    spec, names = plan.spec, plan.names
    results: list[tuple[Any, dict | Exception]] = []
    if spec.mode == "teacher_forced":
        encs = [c[2][0] for c in chunk]
        try:
            logits, by_forcer = [], {}  # a folder given twice is one model: score it once
            for m in range(len(names)):
                key = id(models.forcers[m])
                if key not in by_forcer:
                    by_forcer[key] = models.logits(m, encs)
                logits.append(by_forcer[key])
        except Exception:  # one bad prompt must not take the chunk down: redo them one by one
            if len(chunk) == 1:
                raise
            out = []
            for c in chunk:
                try:
                    out += _records_for_chunk(plan, models, [c], texts)
                except Exception as exc:  # noqa: BLE001 - reported and skipped
                    out.append((c[1], exc))
            return out
        for j, (index, ex, enc_list) in enumerate(chunk):
            enc = enc_list[0]
            try:
                rec = _base_record(
                    plan, ex, index, plan.tokenizers[0].decode(enc.prompt_ids, skip_special_tokens=False)
                )
                for m, name in enumerate(names):
                    rec["models"][name] = _model_columns(enc, logits[m][j], plan.tokenizers[m], texts[m])
                    rec["models"][name]["text"] = ex.target
                rec["pairs"] = {}
                for a in range(len(names)):
                    for b in range(a + 1, len(names)):
                        ps = pair_stats(logits[a][j], logits[b][j], enc.target_ids)
                        rec["pairs"][f"{names[a]}|{names[b]}"] = {k: v.tolist() for k, v in ps.items()}
                results.append((ex, rec))
            except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
                results.append((ex, exc))
        return results
    for index, ex, enc_list in chunk:
        try:
            rec = _base_record(
                plan, ex, index, plan.tokenizers[0].decode(enc_list[0].prompt_ids, skip_special_tokens=False)
            )
            for m, name in enumerate(names):
                gen, stopped = _generate(models, m, enc_list[m], spec, index)
                if not gen:
                    raise ValueError(f"model {name!r} generated no token")
                enc = EncodedExample(ex.id, enc_list[m].prompt_ids, gen)
                cols = _model_columns(enc, models.logits(m, [enc])[0], plan.tokenizers[m], texts[m])
                cols["text"] = plan.tokenizers[m].decode(gen, skip_special_tokens=False)
                cols["stopped_by_eos"] = stopped
                rec["models"][name] = cols
            results.append((ex, rec))
        except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
            results.append((ex, exc))
    return results


def _base_record(plan: Plan, ex: Example, index: int, prompt_text: str) -> dict:
    return {
        "schema": SCHEMA,
        "id": ex.id,
        "index": index,
        "mode": plan.spec.mode,
        "log_base": "e",
        "prompt": prompt_text,
        "target": ex.target,
        "models": {},
    }


# ----------------------------------------------------------------------------- driver


def run_compare(
    spec: CompareSpec, *, progress: bool = True, plan: Plan | None = None, loaded: dict[str, Any] | None = None
) -> dict:
    """Run ``spec`` (see the module docstring); return ``{"prefix", "files", "counts", "errors"}``.

    Resume: with ``spec.resume`` (default) a run in ``output_dir`` with the same fingerprint
    (settings, model folders, data bytes) is continued: prompts with a line in its tokens JSONL
    are skipped, the others done; otherwise a new timestamped run starts. ``plan``: the result
    of :func:`prepare` if already made; ``loaded``: {model folder: TransformersTeacherForcer}
    reused (and filled) so several runs load each model once (its batch size and dtype are kept).
    """
    from tqdm.auto import tqdm

    plan = plan or prepare(spec)
    fp = spec.fingerprint(plan.paths, plan.names)
    out_dir = Path(spec.output_dir)
    prefix = find_run(out_dir, spec.experiment_name, fp) if spec.resume else None
    resumed = prefix is not None
    if prefix is None:
        stamp, n = _utc_stamp(), 1
        prefix = out_dir / f"{spec.experiment_name}_{stamp}"
        while Path(f"{prefix}_run.json").exists():  # another run started in the same second
            n += 1
            prefix = out_dir / f"{spec.experiment_name}_{stamp}-{n}"
    data = Path(spec.data).resolve()
    if data.parent == out_dir.resolve() and data.name.startswith(f"{prefix.name}_"):
        raise ValueError(f"data: {spec.data} is a file of this run's output; the run would overwrite its input")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Path(f"{prefix}_run.json")
    if not manifest.exists():
        meta = {
            "schema": "sample_smart.compare_run/1",
            "experiment_name": spec.experiment_name,
            "fingerprint": fp,
            "created": _utc_stamp(),
            "mode": spec.mode,
            "models": dict(zip(plan.names, plan.paths)),
            "backend": "transformers",
            "settings": {k: v for k, v in asdict(spec).items() if k != "decoder"},
            "decoder": spec.decoder.to_dict()
            if spec.decoder
            else ({"temperature": 0.0} if spec.mode == "generation" else None),
            "max_length": plan.max_length,
        }
        write_atomic(manifest, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    tokens_path = Path(f"{prefix}_tokens.jsonl")
    done = done_ids(tokens_path)
    todo = [c for c in plan.prompts if c[1].id not in done]
    errors = list(plan.errors)
    counts = {"prompts": len(plan.prompts), "skipped_done": len(plan.prompts) - len(todo), "written": 0, "failed": 0}
    if todo:
        models = _Models(plan, loaded)
        texts: list[dict] = [{} for _ in plan.names]
        size = spec.batch_size if spec.mode == "teacher_forced" else 1
        bar = tqdm(
            total=len(plan.prompts),
            initial=counts["skipped_done"],
            disable=not progress,
            unit="prompt",
            desc=f"compare [{spec.mode}]",
        )
        try:
            with TraceWriter(tokens_path) as writer:
                for start in range(0, len(todo), size):
                    for ex, result in _records_for_chunk(plan, models, todo[start : start + size], texts):
                        if isinstance(result, Exception):
                            errors.append({"id": ex.id, "stage": "run", "error": f"{type(result).__name__}: {result}"})
                            counts["failed"] += 1
                            warnings.warn(f"prompt {ex.id!r} skipped: {result}", RuntimeWarning, stacklevel=2)
                        else:
                            _prompt_folder(prefix, result)
                            writer.write(result)
                            counts["written"] += 1
                        bar.update(1)
        finally:
            bar.close()
    write_atomic(Path(f"{prefix}_errors.jsonl"), b"".join(dumps_line(e) for e in errors))
    files = write_aggregates(prefix, n_quantiles=spec.n_quantiles, errors=errors)
    return {"prefix": str(prefix), "resumed": resumed, "files": files, "counts": counts, "errors": errors}
