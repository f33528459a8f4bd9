"""Engine arguments: one table, checked against vLLM's own EngineArgs, refused before any engine starts.

No engine starts here: a command that gets as far as building its engine raises (``no_engine``)
with the arguments it was about to use, so each test sees exactly what would reach vLLM.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from click.testing import CliRunner

from sample_smart.cli import main
from sample_smart.integrations.engine_args import (
    ENGINE_FLAGS,
    RESERVED,
    engine_overrides,
    parse_engine_arg,
    split_engine_kwargs,
)


class EngineWouldStart(AssertionError):
    pass


@pytest.fixture
def no_engine(monkeypatch):
    """make_llm and the lm-eval model raise EngineWouldStart(kwargs) instead of starting vLLM."""
    import sample_smart.integrations.lm_eval as lm_eval_mod
    import sample_smart.integrations.vllm_engine as engine_mod

    def refuse(*args, **kwargs):
        raise EngineWouldStart(kwargs)

    monkeypatch.setattr(engine_mod, "make_llm", refuse)
    import sample_smart.integrations.lm_eval_runner as runner

    monkeypatch.setattr(runner, "check_task", lambda task, data_dir=None: task)  # lm-eval's task index: ~20 s
    original = lm_eval_mod.SampleSmartLM.__init__
    monkeypatch.setattr(lm_eval_mod.SampleSmartLM, "__init__", lambda self, **kw: refuse(**kw))
    return original


def _vllm_fields():
    from vllm.engine.arg_utils import EngineArgs

    fields = dataclasses.fields(EngineArgs)
    return {f.name: f.type for f in fields}, {f.name for f in fields}


def _literal_args(hint) -> set:
    if typing.get_origin(hint) is typing.Literal:
        return set(typing.get_args(hint))
    return set().union(*[_literal_args(a) for a in typing.get_args(hint)]) if typing.get_args(hint) else set()


def test_the_table_names_real_engine_args_fields_with_vllms_choices():
    hints, names = _vllm_fields()
    for spec in ENGINE_FLAGS:
        assert spec.key in names, f"{spec.key} is not an EngineArgs field of this vLLM"
        if spec.kind == "choice":  # our click choices are exactly vLLM's Literal
            assert set(spec.choices) == _literal_args(hints[spec.key]), spec.key
    for key in RESERVED:
        assert key in names, key


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--tensor-parallel-size", "0"], "--tensor-parallel-size"),
        (["--pipeline-parallel-size", "-1"], "--pipeline-parallel-size"),
        (["--data-parallel-size", "0"], "--data-parallel-size"),
        (["--gpu-memory-utilization", "0"], "0<x<=1"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["--max-num-seqs", "0"], "--max-num-seqs"),
        (["--dtype", "int8"], "'int8' is not one of"),
        (["--distributed-executor-backend", "slurm"], "--distributed-executor-backend"),
        (["--quantization", "awk"], "did you mean awq"),
        (["--engine-arg", "no_such_field=1"], "no_such_field: unknown engine argument"),
        (["--engine-arg", "enforce_eagr=true"], "did you mean enforce_eager"),
        (["--engine-arg", "tensor_parallel_size=2"], "use --tensor-parallel-size"),
        (["--engine-arg", "model=/tmp/x"], "model: not accepted"),
        (["--engine-arg", "logits_processors=[]"], "logits_processors: not accepted"),
        (["--engine-arg", "max_model_len=1024"], "sets it with --max-model-len"),
        (["--engine-arg", "enforce_eager=maybe"], "vLLM expects bool"),
        (["--engine-arg", "kv_cache_dtype=int3"], "vLLM expects one of"),
        (["--engine-arg", "cpu_offload_gb=1", "--engine-arg", "cpu_offload_gb=2"], "given twice"),
        (["--engine-arg", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_eval_refuses_bad_engine_flags_before_the_engine(no_engine, args, needle):
    result = CliRunner().invoke(main, ["eval", "--limit", "1", *args])
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert needle in result.output, result.output
    assert "Traceback" not in result.output


def test_eval_passes_checked_overrides_to_the_lm_eval_model(no_engine):
    args = [
        "--limit", "1", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8", "--dtype", "bfloat16",
        "--distributed-executor-backend", "ray", "--engine-arg", "enable_prefix_caching=false",
        "--engine-arg", "cpu-offload-gb=1.5", "--engine-arg", "kv_cache_dtype=auto",
    ]  # fmt: skip
    result = CliRunner().invoke(main, ["eval", *args])
    assert isinstance(result.exception, EngineWouldStart), result.output
    engine = result.exception.args[0]["engine_args"]
    assert engine == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "dtype": "bfloat16",
        "distributed_executor_backend": "ray",
        "enable_prefix_caching": False,
        "cpu_offload_gb": 1.5,
        "kv_cache_dtype": "auto",
    }
    result = CliRunner().invoke(main, ["eval", "--limit", "1"])
    assert result.exception.args[0]["engine_args"] == {}  # nothing given: make_llm's defaults


def test_trace_commands_take_the_same_flags(no_engine, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"id": "a", "prompt": "1+1=", "target": "2"}\n')
    base = ["--data", str(data), "--raw", "--no-progress"]
    out = lambda name: ["-o", str(tmp_path / name)]
    r = CliRunner().invoke(main, ["trace", "generate", *base, *out("g.jsonl"), "--engine-arg", "bogus=1"])
    assert r.exit_code == 2 and "bogus: unknown engine argument" in r.output, r.output
    r = CliRunner().invoke(main, ["trace", "generate", *base, *out("g.jsonl"), "--engine-arg", "max_logprobs=50"])
    assert r.exit_code == 2 and "max_logprobs: not accepted" in r.output, r.output
    r = CliRunner().invoke(main, ["trace", "generate", *base, *out("g.jsonl"), "--max-num-seqs", "4"])
    assert isinstance(r.exception, EngineWouldStart), r.output
    assert r.exception.args[0]["max_num_seqs"] == 4 and r.exception.args[0]["logprobs_mode"] == "raw_logprobs"
    tf = ["trace", "teacher-force", *base, *out("t.jsonl")]
    r = CliRunner().invoke(main, [*tf, "--tensor-parallel-size", "2"])  # transformers backend: no engine
    assert r.exit_code == 2 and "apply to --backend vllm only" in r.output, r.output
    r = CliRunner().invoke(main, [*tf, "--backend", "vllm", "--tensor-parallel-size", "2"])
    assert isinstance(r.exception, EngineWouldStart), r.output
    assert r.exception.args[0]["tensor_parallel_size"] == 2 and r.exception.args[0]["max_logprobs"] == 20


def test_lm_eval_model_args_pass_through_and_are_checked(no_engine):
    from lm_eval.utils import simple_parse_args_string

    from sample_smart.config import SETTING_KEYS

    # lm-eval parses --model_args "k=v,..." into typed values; the model splits them
    kwargs = simple_parse_args_string("tensor_parallel_size=2,enforce_eager=true,min_p=0.1,quantization=fp8")
    engine, rest = split_engine_kwargs(kwargs, keep=SETTING_KEYS)
    assert engine == {"tensor_parallel_size": 2, "enforce_eager": True, "quantization": "fp8"}
    assert rest == {"min_p": 0.1}
    init = no_engine  # the real SampleSmartLM.__init__: it refuses before make_llm (which would raise)
    from sample_smart.integrations.lm_eval import SampleSmartLM

    for bad, needle in [
        ({"tensor_parallel_size": 0}, "--tensor-parallel-size (tensor_parallel_size)=0 is invalid"),
        ({"no_such_arg": 1}, "model_args no_such_arg: unknown engine argument"),
        ({"logprobs_mode": "raw_logits"}, "logprobs_mode: not accepted"),
        ({"llm": object(), "max_num_seqs": 2}, "cannot apply to a given llm"),
        ({"max_model_len": 256, "engine_args": {"max_model_len": 512}}, "max_model_len given twice"),
    ]:
        with pytest.raises(ValueError) as info:
            init(SampleSmartLM.__new__(SampleSmartLM), **bad)
        assert needle in str(info.value), (bad, str(info.value))
    with pytest.raises(EngineWouldStart) as started:  # valid: reaches make_llm with the engine arguments
        init(SampleSmartLM.__new__(SampleSmartLM), max_model_len=256, tensor_parallel_size=2, seed=3)
    assert started.value.args[0] == {"tensor_parallel_size": 2, "max_model_len": 256}


def test_overrides_keep_make_llms_cpu_defaults_unless_given():
    from sample_smart.integrations.vllm_engine import CPU_ENGINE_DEFAULTS, engine_kwargs, has_gpu

    assert engine_overrides({f.key: None for f in ENGINE_FLAGS}, ()) == {}
    kw = engine_kwargs("/some/model", **engine_overrides({"dtype": "bfloat16", "max_num_seqs": 8}, ()))
    assert kw["dtype"] == "bfloat16" and kw["max_num_seqs"] == 8
    if not has_gpu():
        assert kw["enforce_eager"] == CPU_ENGINE_DEFAULTS["enforce_eager"]
        assert engine_kwargs("/some/model")["dtype"] == CPU_ENGINE_DEFAULTS["dtype"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max_num_batched_tokens=4096", ("max_num_batched_tokens", 4096)),
        ("cpu_offload_gb=0.5", ("cpu_offload_gb", 0.5)),
        ("enable_prefix_caching=false", ("enable_prefix_caching", False)),
        ("block_size=null", ("block_size", None)),
        ('hf_overrides={"head_dtype": "float32"}', ("hf_overrides", {"head_dtype": "float32"})),
        ("kv_cache_dtype=fp8", ("kv_cache_dtype", "fp8")),  # not JSON: kept as the string
        ("seed=NaN", ("seed", "NaN")),  # Python's json would read NaN; JSON has none
        ("cpu-offload-gb=2", ("cpu_offload_gb", 2)),
    ],
)
def test_engine_arg_values_are_json_where_they_parse(text, expected):
    assert parse_engine_arg(text) == expected


def test_tensor_parallel_2_is_refused_by_vllm_for_the_embedded_model():
    """What docs/scaling.md reports: vLLM's own config check (no worker, no weights) refuses TP=2
    for SmolLM2-135M (9 attention heads), so this machine cannot show TP=2 with its one model."""
    from vllm.engine.arg_utils import EngineArgs

    from sample_smart.integrations.vllm_engine import engine_kwargs
    from sample_smart.models import default_model_path

    kwargs = engine_kwargs(str(default_model_path()), tensor_parallel_size=2)
    kwargs.pop("logits_processors", None)
    with pytest.raises(Exception, match=r"attention heads \(9\) must be divisible by tensor parallel size \(2\)"):
        EngineArgs(**kwargs).create_engine_config()


def test_several_cpu_ranks_get_their_own_cores_and_pipeline_stages_run_compiled(monkeypatch):
    import sample_smart.integrations.vllm_engine as engine_mod

    monkeypatch.setattr(engine_mod, "has_gpu", lambda: False)
    monkeypatch.setattr(engine_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5})
    assert engine_mod.cpu_environment(1)["VLLM_CPU_OMP_THREADS_BIND"] == "0,1,2,3,5"
    assert engine_mod.cpu_environment(2)["VLLM_CPU_OMP_THREADS_BIND"] == "0-2|3,5"
    assert engine_mod.cpu_environment(5)["VLLM_CPU_OMP_THREADS_BIND"] == "0|1|2|3|5"
    with pytest.raises(ValueError, match="6 ranks .* need at least 6 CPU cores"):
        engine_mod.cpu_environment(6)
    assert engine_mod.cpu_ranks({"tensor_parallel_size": 2, "pipeline_parallel_size": 3}) == 6
    assert engine_mod.engine_kwargs("/m", pipeline_parallel_size=2)["enforce_eager"] is False
    assert engine_mod.engine_kwargs("/m", tensor_parallel_size=2)["enforce_eager"] is True
    assert engine_mod.engine_kwargs("/m", pipeline_parallel_size=2, enforce_eager=True)["enforce_eager"] is True
