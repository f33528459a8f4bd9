"""`sample-smart demo`: what each decoder keeps on a real batch.

Runs the embedded model (transformers, CPU) on a few prompts, takes the next-token logits of
each prompt as one batch, and prints, decoder by decoder, how many tokens each row keeps and
the most probable of them. One call of ``process`` handles the whole batch per decoder, and a
last call mixes a different decoder in every row.
"""

from __future__ import annotations

import time

import click

PROMPTS = [
    "The capital of France is",
    "Q: What is 17 + 25?\nA: Let's think step by step.",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n   ",
]

DECODERS = {
    "plain sampling (T=1)": {},
    "temperature 0.7": {"temperature": 0.7},
    "top-k 40": {"top_k": 40},
    "top-p 0.9": {"top_p": 0.9},
    "min-p 0.1": {"min_p": 0.1},
    "epsilon 3e-4": {"prob_threshold": 3e-4},
    "eta 9e-4": {"hewitt_epsilon": 9e-4},
    "EDT (0.8, 1, 1)": {"edt_var": "0.8,1.0,1.0"},
    "top-a 0.2": {"top_a": 0.2},
    "top-n-sigma 1.0": {"top_n_sigma": 1.0},
    "Greedy-Threshold 0.3 + min-p 0.1": {"greedy_threshold": 0.3, "min_p": 0.1},
    "Calibrated-TopK (example list)": {"dynamic_top_k": "8,6,4,3,3,2,2,1,1,1"},
    "Calibrated-epsilon (example fit, base 10)": {"cal_acc": "-0.3,0.6,0.05"},
}


def next_token_logits(model_dir: str, prompts: list[str]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**batch).logits[:, -1, :].float()
    return tok, logits


def _describe(tok, processed_row, shown: int = 4) -> str:
    import torch

    probs = torch.softmax(processed_row, -1)  # the distribution the sampler would draw from
    kept = torch.isfinite(processed_row)
    ids = torch.nonzero(kept).flatten()
    order = ids[torch.argsort(probs[ids], descending=True)][:shown]
    words = ", ".join(f"{tok.decode([int(i)])!r} {float(probs[i]):.2f}" for i in order)
    return f"{int(kept.sum()):6d} kept  [{words}{', ...' if len(ids) > shown else ''}]"


@click.command()
@click.option("--model", "model_dir", default=None, help="model folder (default: the embedded SmolLM2-135M)")
def demo(model_dir: str | None) -> None:
    """Show what each decoder keeps on a real batch of next-token logits (embedded model)."""
    import torch

    from sample_smart import DecodeConfig, process
    from sample_smart.models import require_default_model

    model_dir = model_dir or str(require_default_model())
    t0 = time.perf_counter()
    tok, logits = next_token_logits(model_dir, PROMPTS)
    click.echo(
        f"model: {model_dir}\nbatch: {len(PROMPTS)} prompts x vocab {logits.shape[-1]} "
        f"(forward pass {time.perf_counter() - t0:.1f} s)"
    )
    probs = torch.softmax(logits, -1)
    for i, prompt in enumerate(PROMPTS):
        p_max = float(probs[i].max())
        click.echo(f"  row {i}: p_max={p_max:.3f} (decile bin {min(int(p_max * 10), 9) + 1}/10)  {prompt!r}")
    click.echo("\nkept tokens per row, with their probabilities after the decoder (renormalised):")
    for name, settings in DECODERS.items():
        out = process(logits, DecodeConfig.from_dict(settings))
        click.echo(f"\n{name}  {settings}")
        for i in range(len(PROMPTS)):
            click.echo(f"  row {i}: " + _describe(tok, out[i]))
    mixed = [DecodeConfig.from_dict(s) for s in list(DECODERS.values())[-len(PROMPTS) :]]
    out = process(logits, mixed)
    click.echo("\none mixed batch (row i uses the i-th of the last four decoders above):")
    for i, cfg in enumerate(mixed):
        click.echo(f"  row {i}: " + _describe(tok, out[i]) + f"  {cfg.to_dict()}")
