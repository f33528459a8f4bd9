"""lm-eval's own command line with the ``sample_smart`` model registered.

lm-eval 0.4.13 does not read the ``lm_eval.models`` entry point that the package declares, so
``lm_eval --model sample_smart`` alone cannot find the model. This module imports
:mod:`sample_smart.integrations.lm_eval` (which registers it) and runs lm-eval's CLI unchanged::

    python -m sample_smart.integrations.lm_eval_cli run --model sample_smart \\
        --model_args seed=1 --tasks gsm8k_cot --gen_kwargs min_p=0.1,temperature=1.0
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's CLI (``argv``: its arguments; default the process's) with ``sample_smart`` registered."""
    from lm_eval.__main__ import cli_evaluate

    import sample_smart.integrations.lm_eval  # noqa: F401  (registers the model)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    main()
