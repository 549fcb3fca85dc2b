"""``sam3tune suite``: run (or continue) a benchmark suite and print its table."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK


def run_suite_command(
    config: str | None = None, overrides: Sequence[str] = (), out: Path | None = None
) -> int:
    """Load the :class:`~sam3tune.suite.SuiteConfig` of ``config`` with ``key=value`` overrides (``out`` sets
    ``output_dir``), run what is not finished, print the table. Exit status 0 all runs finished, 1 some
    failed (diverged or bad data; the table shows the others), 130 stopped (run it again to continue); bad
    input raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from sam3tune.suite import SuiteConfig, run_suite

    if config is None:
        raise ConfigError("give the suite file: sam3tune suite --config SUITE.yaml")
    settings = load_config(SuiteConfig, config, with_shortcuts(overrides, {"output_dir": out}))
    outcome = run_suite(settings, say=lambda line: print(line, file=sys.stderr, flush=True))
    print(outcome.table)
    folder = Path(settings.output_dir)
    print(f"\ntables written to {folder / 'results.md'} and {folder / 'results.json'}")
    if outcome.status == "interrupted":
        print(f"suite stopped: run the same command again to continue ({folder})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_CHECK_FAILED if outcome.failed else EXIT_OK
