"""Running a suite: for each dataset the zero-shot evaluation of the base model, then for each seed a
fine-tune on that seed's K-shot sample and the evaluation of its model, as ordinary run folders.

```
OUT/suite.yaml                   the resolved suite (running again with other settings is refused)
OUT/base_config.yaml             the base TrainConfig it resolved to (a changed base_config file is refused)
OUT/<dataset>/zero-shot/         eval.json, eval.md, predictions.json of the base model on `test`
OUT/<dataset>/seed-<S>/          an ordinary training run (config.yaml, metrics.jsonl, checkpoints/, model/)
OUT/<dataset>/seed-<S>/eval/     eval.json, eval.md, predictions.json of its model on `test`
OUT/results.json, results.md     the aggregated table (written at the end, also after a stop)
```

Resumable: a step whose output is complete is skipped (an ``eval.json`` that parses; a run whose
``model/`` was exported); a run stopped part-way continues from its checkpoint exactly as
``sam3tune train --resume`` does; a run killed before its first checkpoint is moved aside
(``seed-<S>.incomplete-N``, nothing is deleted) and started again. Settings that shape the results
(``SHAPING_KEYS``, each dataset's entry, and the base ``TrainConfig`` the base file and overrides resolve
to) must be those the folder was made with, so a changed suite never mixes old runs into new tables.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from sam3tune.config import ConfigError, as_overrides, load_config, save_config, to_dict
from sam3tune.data import DataConfig, DataError
from sam3tune.devices import resolve_device
from sam3tune.eval.report import REPORT_JSON
from sam3tune.run_dir import RunDir
from sam3tune.suite.aggregate import DatasetResult, markdown_table, summarise
from sam3tune.suite.config import SuiteConfig, SuiteDataset
from sam3tune.suite.reference import load_reference
from sam3tune.train.config import TrainConfig
from sam3tune.train.run_lock import run_lock

SUITE_FILE = "suite.yaml"
BASE_FILE = "base_config.yaml"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
#: Suite keys whose change would mix runs of different settings into one table (``datasets`` entries are
#: compared by name; adding datasets or seeds, or changing ``metric``, ``reference``, ``device``, is fine).
SHAPING_KEYS = (
    "shots",
    "presampled",
    "shots_rule",
    "base_config",
    "base_overrides",
    "eval",
    "datasets_under",
)
INTERRUPTED = "interrupted"


@dataclass
class SuiteOutcome:
    """What :func:`run_suite` did: ``status``, the aggregated ``summary`` (``results.json``) and ``table``
    (``results.md``), the steps that ``failed`` (``"<dataset> <seed>"`` or ``"<dataset> zero-shot"`` ->
    reason: a run that diverged, a dataset whose files are refused); the others ran."""

    status: Literal["completed", "interrupted"]
    summary: dict
    table: str
    failed: dict[str, str] = field(default_factory=dict)


def run_config(suite: SuiteConfig, dataset: SuiteDataset, seed: int) -> TrainConfig:
    """The ``TrainConfig`` of the run of ``dataset`` with ``seed``: the base config, the suite's and the
    dataset's overrides, then the dataset, its K-shot sample and where the run goes."""
    values: dict = {
        "data.root": dataset.root,
        "data.train": dataset.train.format(seed=seed, shots=suite.shots),
        "data.train_images": dataset.train_images,
        "data.shots": None if suite.presampled else suite.shots,
        "data.shots_seed": seed,
        "data.shots_rule": suite.shots_rule,
        "output_dir": str(Path(suite.output_dir) / dataset.name),
        "run_name": f"seed-{seed}",
        "export": True,
        "loop.device": suite.device,
    }
    values.update({"data.val": dataset.val} if dataset.val else {"val.every_epochs": 0})
    overrides = [*suite.base_overrides, *dataset.overrides, *as_overrides(values)]
    return load_config(TrainConfig, suite.base_config, overrides)


def eval_data(suite: SuiteConfig, dataset: SuiteDataset) -> DataConfig:
    """The ``test`` split of ``dataset`` as the evaluations read it (the base config's prompt map etc.)."""
    data = run_config(suite, dataset, suite.seeds[0]).data
    images = Path(dataset.test_images) if dataset.test_images else None
    return dataclasses.replace(data, val=dataset.test, val_images=images, shots=None)


def run_suite(suite: SuiteConfig, say: Callable[[str], None] = print) -> SuiteOutcome:
    """Run every step of ``suite`` that is not finished (module docstring), then aggregate. ``say``
    receives the progress lines. Raises ``ConfigError`` when ``OUT`` holds a suite of other settings."""
    out = Path(suite.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[tuple[str, str], str] = {}
    status: Literal["completed", "interrupted"] = "completed"
    with ExitStack() as held:
        held.enter_context(run_lock(out))
        base = load_config(TrainConfig, suite.base_config, suite.base_overrides)
        _check_same_suite(out, suite, base)
        save_config(suite, out / SUITE_FILE)
        save_config(base, out / BASE_FILE)
        steps = _steps(suite)
        left = [s for s in steps if not s.done(suite)]
        say(
            f"suite {out}: {len(suite.all_datasets())} dataset(s) x {len(suite.seeds)} seed(s), "
            f"{suite.shots}-shot; {len(steps)} steps, {len(steps) - len(left)} finished, {len(left)} to run"
        )
        try:
            for number, step in enumerate(left, start=1):
                say(f"[{number}/{len(left)}] {step.describe()} ...")
                clock = time.perf_counter()
                try:
                    problem = step.run(suite, say)
                except DataError as err:  # this dataset's files: the others can still run
                    problem = f"bad data: {err}"
                if problem == INTERRUPTED:
                    status = "interrupted"
                    break
                if problem:
                    failed[(step.dataset.name, step.failure_key())] = problem
                    say(f"    {step.describe()} failed: {problem}")
                else:
                    say(f"    done in {time.perf_counter() - clock:.0f} s")
        except KeyboardInterrupt:
            status = "interrupted"
        summary = summarise(
            _collect(suite, failed), suite.seeds, suite.metric, suite.shots, _reference(suite)
        )
        table = markdown_table(summary)
        (out / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
        (out / RESULTS_MD).write_text(table + "\n")
    return SuiteOutcome(status, summary, table, {f"{name} {key}": why for (name, key), why in failed.items()})


def _reference(suite: SuiteConfig):
    return load_reference(suite.reference) if suite.reference else None


def _check_same_suite(out: Path, suite: SuiteConfig, base: TrainConfig) -> None:
    """Refuse to continue ``out`` with settings that shape the results differently from its suite.yaml and
    base_config.yaml."""
    saved_file = out / SUITE_FILE
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text()) or {}
    new = to_dict(suite)
    changed = [k for k in SHAPING_KEYS if saved.get(k) != new.get(k)]
    if (out / BASE_FILE).is_file():
        saved_base = yaml.safe_load((out / BASE_FILE).read_text()) or {}
        changed += [f"base TrainConfig {k}" for k in _differing(saved_base, to_dict(base))]
    before = {d.get("name"): d for d in saved.get("datasets") or []}
    changed += [
        f"datasets[{d['name']}]" for d in new["datasets"] if d["name"] in before and before[d["name"]] != d
    ]
    if changed:
        raise ConfigError(
            f"{out} holds a suite run with other settings ({', '.join(changed)} differ from {saved_file}): "
            "choose another --out, or restore those settings to continue it"
        )


def _differing(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


@dataclass(frozen=True)
class _Step:
    kind: Literal["zero-shot", "fine-tune", "eval"]
    dataset: SuiteDataset
    seed: int | None = None

    def describe(self) -> str:
        where = f"{self.dataset.name}" + (f" seed {self.seed}" if self.seed is not None else "")
        return {
            "zero-shot": f"{where}: zero-shot evaluation",
            "fine-tune": f"{where}: fine-tune",
            "eval": f"{where}: evaluation of the tuned model",
        }[self.kind]

    def failure_key(self) -> str:
        """How a failure of this step shows in the table: ``zero-shot`` or the seed."""
        return "zero-shot" if self.seed is None else str(self.seed)

    def folder(self, suite: SuiteConfig) -> Path:
        base = Path(suite.output_dir) / self.dataset.name
        return base / "zero-shot" if self.seed is None else base / f"seed-{self.seed}"

    def done(self, suite: SuiteConfig) -> bool:
        folder = self.folder(suite)
        if self.kind == "fine-tune":
            return (RunDir(folder).model_dir / "config.json").is_file()
        return _read_eval(folder if self.kind == "zero-shot" else folder / "eval") is not None

    def run(self, suite: SuiteConfig, say: Callable[[str], None]) -> str | None:
        """Run the step; returns None when it finished, :data:`INTERRUPTED`, or why it failed."""
        if self.kind == "fine-tune":
            return _fine_tune(suite, self.dataset, self.seed, self.folder(suite), say)
        tuned = RunDir(self.folder(suite)).model_dir
        if self.kind == "eval" and not tuned.is_dir():
            return "no tuned model (its fine-tune did not finish)"
        from sam3tune.eval.api import evaluate_model  # heavy: the model package

        base = run_config(suite, self.dataset, suite.seeds[0]).model.name
        model = base if self.kind == "zero-shot" else str(tuned)
        folder = self.folder(suite) if self.kind == "zero-shot" else self.folder(suite) / "eval"
        device = resolve_device(suite.device, key="device")
        evaluate_model(model, eval_data(suite, self.dataset), folder, suite.eval, device=device)
        return None


def _steps(suite: SuiteConfig) -> list[_Step]:
    steps = []
    for dataset in suite.all_datasets():
        steps.append(_Step("zero-shot", dataset))
        for seed in suite.seeds:
            steps += [_Step("fine-tune", dataset, seed), _Step("eval", dataset, seed)]
    return steps


def _fine_tune(
    suite: SuiteConfig, dataset: SuiteDataset, seed: int, run_dir: Path, say: Callable[[str], None]
) -> str | None:
    """Train (or continue) the run of ``dataset`` with ``seed`` in ``run_dir``."""
    from sam3tune.train.loop import TrainingDivergedError
    from sam3tune.train.recipe import train

    config = run_config(suite, dataset, seed)
    resume = None
    run = RunDir(run_dir)
    if run_dir.exists():
        if run.checkpoints_dir.is_dir() and run.is_run():
            config = run.config()  # as `sam3tune train --resume`: the run's resolved config
            resume = run_dir
            say(f"    continuing {run_dir} from its last checkpoint")
        else:
            aside = _aside(run_dir)
            run_dir.rename(aside)
            say(f"    {run_dir} stopped before its first checkpoint: moved to {aside}, starting again")
    try:
        result = train(config, resume=resume)
    except TrainingDivergedError as err:
        return f"training diverged ({err})"
    return None if result.status == "completed" else INTERRUPTED


def _aside(run_dir: Path) -> Path:
    number = 1
    while run_dir.with_name(f"{run_dir.name}.incomplete-{number}").exists():
        number += 1
    return run_dir.with_name(f"{run_dir.name}.incomplete-{number}")


def _read_eval(folder: Path) -> dict | None:
    """The summary of ``folder/eval.json`` when it is complete, else None."""
    try:
        data = json.loads((folder / REPORT_JSON).read_text())
        return data["model"]["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _collect(suite: SuiteConfig, failed: dict[tuple[str, str], str]) -> list[DatasetResult]:
    """The metric of every finished evaluation, per dataset."""
    results = []
    for dataset in suite.all_datasets():
        base = Path(suite.output_dir) / dataset.name
        zero = _read_eval(base / "zero-shot")
        tuned = {}
        for seed in suite.seeds:
            summary = _read_eval(base / f"seed-{seed}" / "eval")
            if summary is not None:
                tuned[seed] = summary.get(suite.metric)
        reasons = {step: why for (name, step), why in failed.items() if name == dataset.name}
        results.append(DatasetResult(dataset.name, zero.get(suite.metric) if zero else None, tuned, reasons))
    return results
