"""Benchmark suites: the few-shot protocol (zero-shot vs K-shot fine-tuned, several seeds) over a list of
datasets, as ordinary run folders, resumable, aggregated into one table beside published figures
(``docs/suite.md``)."""

from sam3tune.suite.config import SuiteConfig, SuiteDataset
from sam3tune.suite.runner import SuiteOutcome, run_suite

__all__ = ["SuiteConfig", "SuiteDataset", "SuiteOutcome", "run_suite"]
