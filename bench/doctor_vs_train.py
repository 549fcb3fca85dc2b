"""The doctor's first step against ``sam3tune train``'s first step on the same config, seed and device.

    PYTHONPATH=. python bench/doctor_vs_train.py [--model small] [key=value ...]

Runs ``diagnose(config)`` and then ``train(config)`` for one optimizer step (fruits_nuts, CPU, no
validation, no export, in a temporary folder) and prints the precision, the first-step loss and gradient
norm of each, and the doctor's activation peak. They are equal when the doctor runs the trainer's step.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sam3tune.config import load_config
from sam3tune.doctor import diagnose
from sam3tune.train.config import TrainConfig
from sam3tune.train.metrics_log import read_metrics
from sam3tune.train.recipe import train
from tests.data.conftest import FRUITS_NUTS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="doctor-vs-train-"))
    config = load_config(
        TrainConfig,
        None,
        [
            f"data.root={FRUITS_NUTS}",
            f"model.name={args.model}",
            "loop.device=cpu",
            "loop.num_workers=0",
            "loop.max_steps=1",
            "val.every_epochs=0",
            "export=false",
            f"output_dir={out}",
            "run_name=one",
            *args.overrides,
        ],
    )
    report = diagnose(config)
    train(config)
    (first,) = [r for r in read_metrics(out / "one" / "metrics.jsonl") if r["kind"] == "train"]
    print(f"precision: {report.setup['precision']}; {report.batch.description}")
    print(f"doctor: loss {report.losses.total!r}  grad_norm {report.grad_norm!r}")
    print(f"train:  loss {first['loss']!r}  grad_norm {first['grad_norm']!r}")
    print(f"equal: {(report.losses.total, report.grad_norm) == (first['loss'], first['grad_norm'])}")
    print(f"doctor activation peak: {report.memory.activations / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
