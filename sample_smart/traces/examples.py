"""(prompt, target) examples and their tokenisation with an exact boundary.

Input files are JSONL, one example per line: ``{"id": ..., "prompt": ..., "target": ...}``
(field names configurable). ``prompt`` is a string, or a list of chat messages
(``[{"role": ..., "content": ...}]``) when the chat template is used. A missing id
becomes the example's 0-based index in the file (as a string).

Rendering:

* ``chat_template=True``: the prompt goes through ``tokenizer.apply_chat_template(
  messages, add_generation_prompt=True)`` (a string prompt is one user message) and is
  tokenised without adding special tokens again (the template holds them);
* ``chat_template=False`` (raw): the prompt string is tokenised with the tokenizer's
  own special tokens (e.g. BOS).

The boundary is exact: prompt and target are tokenised **separately** and the ids are
concatenated, so the target tokens decode to exactly the target text and no token
straddles the boundary, even where tokenising ``prompt + target`` as one string would
merge across it ("Hello wor" + "ld" -> "Hello", " world"). If a tokenizer cannot encode
the target alone exactly (SentencePiece adds a leading space), the target is encoded
after a newline anchor and the anchor's tokens are removed; failing that, an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .reader import TraceFormatError, read_jsonl


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str | list[dict[str, Any]]
    target: str | None = None


@dataclass(frozen=True)
class EncodedExample:
    id: str
    prompt_ids: list[int]
    target_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.target_ids


def load_examples(
    path: str | os.PathLike,
    *,
    id_field: str = "id",
    prompt_field: str = "prompt",
    target_field: str | None = "target",
    on_error: str = "raise",
) -> Iterator[Example]:
    """Stream examples from a JSONL file; a bad line raises ``TraceFormatError`` at path:line.

    ``target_field=None``: prompts only (generation); the target is not read."""
    index = -1
    for lineno, rec in read_jsonl(path, on_error=on_error):
        index += 1
        try:
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            for field in (prompt_field, target_field):
                if field is not None and field not in rec:
                    raise ValueError(f"missing field {field!r} (fields present: {sorted(rec)})")
            prompt = rec[prompt_field]
            target = rec[target_field] if target_field is not None else None
            if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt))):
                raise ValueError(f"field {prompt_field!r} must be a string or a list of chat messages")
            if target_field is not None and (not isinstance(target, str) or not target):
                raise ValueError(f"field {target_field!r} must be a non-empty string")
            ex_id = str(rec[id_field]) if rec.get(id_field) is not None else str(index)
        except ValueError as exc:
            if on_error == "raise":
                raise TraceFormatError(path, lineno, str(exc)) from None
            import warnings

            warnings.warn(f"skipping {path}:{lineno}: {exc}", stacklevel=2)
            continue
        yield Example(ex_id, prompt, target)


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def render_prompt(tokenizer, prompt: str | list[dict[str, Any]], *, chat_template: bool) -> list[int]:
    """Token ids of the prompt, through the chat template or raw."""
    if chat_template:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat_template=True but the tokenizer has no chat template; use raw prompts (--raw)")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _ids(tokenizer, text, special=False)
    if not isinstance(prompt, str):
        raise ValueError("a prompt given as chat messages needs the chat template (--chat-template)")
    return _ids(tokenizer, prompt, special=True)


def encode_target(tokenizer, target: str) -> list[int]:
    """Ids that decode to exactly ``target`` (see the module docstring)."""
    ids = _ids(tokenizer, target, special=False)
    if _decode(tokenizer, ids) == target:
        return ids
    anchor = _ids(tokenizer, "\n", special=False)
    both = _ids(tokenizer, "\n" + target, special=False)
    if both[: len(anchor)] == anchor and _decode(tokenizer, both[len(anchor) :]) == target:
        return both[len(anchor) :]
    raise ValueError(f"cannot tokenise the target {target[:40]!r} so that it decodes back exactly")


def encode_example(tokenizer, example: Example, *, chat_template: bool) -> EncodedExample:
    """Tokenise one example with an exact prompt/target boundary."""
    prompt_ids = render_prompt(tokenizer, example.prompt, chat_template=chat_template)
    if example.target is None:
        raise ValueError(f"example {example.id!r} has no target to teacher-force")
    target_ids = encode_target(tokenizer, example.target)
    if not target_ids:
        raise ValueError(f"example {example.id!r}: the target tokenises to no tokens")
    if not prompt_ids:
        raise ValueError(
            f"example {example.id!r}: the prompt tokenises to no tokens (nothing predicts the first target token)"
        )
    return EncodedExample(example.id, prompt_ids, target_ids)
