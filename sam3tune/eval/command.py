"""``sam3tune eval``: evaluate a model (and a baseline) on a dataset split, or a COCO results file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sam3tune.config import ConfigError, load_config, with_shortcuts
from sam3tune.devices import resolve_device
from sam3tune.eval.api import evaluate_model, evaluate_results_file
from sam3tune.eval.config import EvalRunConfig
from sam3tune.eval.report import REPORT_JSON, REPORT_MD
from sam3tune.output_files import claim_output_folder

#: What ``sam3tune eval`` writes in its ``--out`` folder (``--overwrite`` replaces exactly these).
OUTPUTS = (
    REPORT_JSON,
    REPORT_MD,
    "predictions.json",
    "baseline_predictions.json",
    "predictions_exemplar.json",
    "baseline_predictions_exemplar.json",
)


def run_eval_command(
    config: str | None = None,
    overrides: Sequence[str] = (),
    model: str | None = None,
    data: str | None = None,
    predictions: Path | None = None,
    gt: Path | None = None,
    out: Path = Path("eval"),
    overwrite: bool = False,
) -> int:
    """:class:`EvalRunConfig` from the ``config`` file, ``key=value`` overrides, then ``model`` / ``data``
    (which set ``model`` / ``data.root``); evaluate the model (and ``baseline``) on split ``data.val``, or
    the COCO results file ``predictions`` against ``gt``; print the report and write it to ``out`` (a
    folder holding an earlier report is refused unless ``overwrite``, checked before any model runs).
    Exit status 0; bad input raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    settings = load_config(
        EvalRunConfig, config, with_shortcuts(overrides, {"model": model, "data.root": data})
    )
    if predictions is not None or gt is not None:
        if predictions is None or gt is None or settings.model or settings.baseline:
            raise ConfigError("--predictions needs --gt, and neither goes with a model or a baseline")
        claim_output_folder(out, OUTPUTS, overwrite)
        _, markdown = evaluate_results_file(predictions, gt, out, settings)
    elif settings.model is None or settings.data.root is None:
        raise ConfigError("give --model and --data (model=..., data.root=...), or --predictions and --gt")
    else:
        device = resolve_device(settings.device, key="device")
        claim_output_folder(out, OUTPUTS, overwrite)
        _, _, markdown = evaluate_model(
            settings.model, settings.data, out, settings, baseline=settings.baseline, device=device
        )
    print(markdown)
    print(f"reports written to {out / REPORT_JSON} and {out / REPORT_MD}")
    return 0
