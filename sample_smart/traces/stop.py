"""Where a generation trace stops: stop strings or a regex on the decoded text.

Never token ids (the reference scripts hard-code one tokenizer's ids). The trace
covers the generated tokens up to and including the first token whose decoded prefix
contains a match (of any stop string, or of the regex), plus ``after`` more tokens
(the reference keeps a few tokens after "The answer is" to capture the answer).
Found by binary search over prefix lengths (``O(log n)`` decodes), which is exact when
"the decoded prefix contains a match" only turns true once, as for plain strings and
ordinary patterns (no end anchors or lookaheads).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceStop:
    stop_strings: tuple[str, ...] = ()
    regex: re.Pattern | None = None
    after: int = 0

    @classmethod
    def build(cls, stop_strings: Sequence[str] = (), regex: str | None = None, after: int = 0) -> "TraceStop":
        strings = tuple(stop_strings or ())
        if any(not isinstance(s, str) or not s for s in strings):
            raise ValueError(f"stop strings must be non-empty strings, got {list(strings)!r}")
        if after < 0:
            raise ValueError(f"after (tokens traced past the stop) must be >= 0, got {after}")
        try:
            pattern = re.compile(regex) if regex else None
        except re.error as exc:
            raise ValueError(f"stop regex {regex!r} does not compile: {exc}") from None
        if pattern is not None and pattern.search(""):
            raise ValueError(f"stop regex {regex!r} matches the empty string, so it would stop before any token")
        return cls(strings, pattern, after)

    @property
    def active(self) -> bool:
        return bool(self.stop_strings) or self.regex is not None

    def _match(self, text: str) -> tuple[str, str] | None:
        best: tuple[int, str, str] | None = None
        for s in self.stop_strings:
            i = text.find(s)
            if i >= 0 and (best is None or i + len(s) < best[0]):
                best = (i + len(s), "stop_string", s)
        if self.regex is not None:
            m = self.regex.search(text)
            if m and (best is None or m.end() < best[0]):
                best = (m.end(), "regex", m.group(0))
        return None if best is None else best[1:]

    def cut(self, tokenizer, token_ids: Sequence[int]) -> tuple[int, dict]:
        """``(n_traced, {"reason": ..., "match": ...})`` for a generated sequence."""
        n = len(token_ids)
        decode = lambda k: tokenizer.decode(list(token_ids[:k]), skip_special_tokens=False)
        if not self.active or n == 0 or self._match(decode(n)) is None:
            return n, {"reason": "end", "match": None}
        lo, hi = 1, n  # smallest k in [1, n] whose prefix matches
        while lo < hi:
            mid = (lo + hi) // 2
            if self._match(decode(mid)) is not None:
                hi = mid
            else:
                lo = mid + 1
        reason, match = self._match(decode(lo))
        return min(n, lo + self.after), {"reason": reason, "match": match}
