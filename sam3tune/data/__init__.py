"""COCO / Roboflow datasets as SAM 3 prompt queries, strictly validated.

Pipeline: :func:`find_splits` / :func:`resolve_split` (where the files are) -> :func:`load_split`
(parse + validate, problems counted or raised) -> :func:`plan_queries` (positives, negatives,
prompts) -> :class:`QueryDataset` (transforms, one sample per image) -> :func:`collate` -> :class:`Batch`.
"""

from sam3tune.data.coco import CocoImage, CocoObject, CocoSplit, load_split
from sam3tune.data.collate import Batch, Tokenize, collate
from sam3tune.data.config import DataConfig
from sam3tune.data.dataset import (
    QueryDataset,
    Sample,
    build_eval_dataset,
    build_train_dataset,
    load_plan,
)
from sam3tune.data.layout import SplitFiles, find_splits, resolve_split
from sam3tune.data.problems import CATALOGUE, DataError, ProblemReport
from sam3tune.data.queries import (
    QueryCategory,
    QueryPlan,
    check_prompt_tokens,
    clean_prompt,
    load_prompt_map,
    plan_queries,
)
from sam3tune.data.transforms import Geometry, train_sides

__all__ = [
    "CATALOGUE",
    "Batch",
    "CocoImage",
    "CocoObject",
    "CocoSplit",
    "DataConfig",
    "DataError",
    "Geometry",
    "ProblemReport",
    "QueryCategory",
    "QueryDataset",
    "QueryPlan",
    "Sample",
    "SplitFiles",
    "Tokenize",
    "build_eval_dataset",
    "build_train_dataset",
    "check_prompt_tokens",
    "clean_prompt",
    "collate",
    "find_splits",
    "load_plan",
    "load_prompt_map",
    "load_split",
    "plan_queries",
    "resolve_split",
    "train_sides",
]
