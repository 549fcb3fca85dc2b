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
