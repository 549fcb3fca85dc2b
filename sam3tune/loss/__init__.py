"""The SAM 3 training loss (Meta's official recipe), see docs/loss.md.

```python
from sam3tune.loss import Sam3Criterion, CriterionConfig
criterion = Sam3Criterion(CriterionConfig())
result = criterion(outputs, targets)   # result["loss"]: the differentiable weighted total
```
"""

from sam3tune.loss.criterion import (
    CriterionConfig,
    HungarianMatcherConfig,
    LayerMatchings,
    LossKey,
    LossWeights,
    OneToManyMatcherConfig,
    Sam3Criterion,
    split_key,
)
from sam3tune.loss.matcher import HungarianMatcher, Matching, OneToManyMatcher
from sam3tune.loss.targets import PackedTargets, pack_targets

__all__ = [
    "CriterionConfig",
    "HungarianMatcher",
    "HungarianMatcherConfig",
    "LayerMatchings",
    "LossKey",
    "LossWeights",
    "Matching",
    "OneToManyMatcher",
    "OneToManyMatcherConfig",
    "PackedTargets",
    "Sam3Criterion",
    "pack_targets",
    "split_key",
]
