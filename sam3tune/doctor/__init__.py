"""``sam3tune doctor``: the first training step explained and checked before a GPU-hour is spent.

```python
from sam3tune.config import load_config
from sam3tune.doctor import diagnose, format_report
from sam3tune.train import TrainConfig

report = diagnose(load_config(TrainConfig, "run.yaml", ["data.root=datasets/fruits"]))
print(format_report(report))
assert "total_out_of_range" not in report.codes()
```
See docs/doctor.md for every flag, the expected-total derivation and the memory method.
"""

from sam3tune.doctor.data_report import DataReport, Distribution
from sam3tune.doctor.diagnosis import BatchSummary, DoctorReport, diagnose, diagnose_batch
from sam3tune.doctor.expected_loss import ExpectedTotal, expected_total, uninformed_outputs
from sam3tune.doctor.flags import CATALOGUE, Flag, FlagKind
from sam3tune.doctor.learning_rates import LearningRateGroup
from sam3tune.doctor.loss_table import LossTable, LossTerm, loss_table
from sam3tune.doctor.memory import LiveTensorMeter, MemoryEstimate
from sam3tune.doctor.target_checks import target_flags
from sam3tune.doctor.text_report import format_report

__all__ = [
    "CATALOGUE",
    "BatchSummary",
    "DataReport",
    "Distribution",
    "DoctorReport",
    "ExpectedTotal",
    "Flag",
    "FlagKind",
    "LearningRateGroup",
    "LiveTensorMeter",
    "LossTable",
    "LossTerm",
    "MemoryEstimate",
    "diagnose",
    "diagnose_batch",
    "expected_total",
    "format_report",
    "loss_table",
    "target_flags",
    "uninformed_outputs",
]
