"""The ``README.md`` model card of an exported run: base model, data, training config, the evaluation
against zero-shot (per category), the loss curve, how to use it; the licence is left for the user."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam3tune.eval.report import markdown_table, percent, percent_change
from sam3tune.eval.verdict import verdict_from_records
from sam3tune.model.hub import is_hub_id, model_label
from sam3tune.train.config import TrainConfig

# Summary rows of the evaluation table: (key of EvalMetrics.summary(), label).
EVAL_ROWS = (
    ("bbox_AP", "box AP"),
    ("bbox_AP50", "box AP50"),
    ("segm_AP", "mask AP"),
    ("segm_AP50", "mask AP50"),
    ("bbox_cgF1", "box cgF1"),
    ("segm_cgF1", "mask cgF1"),
    ("bbox_IL_MCC", "image-level MCC"),
    ("false_fire_rate", "false-fire rate (absent prompts)"),
)


@dataclass
class ModelCardInputs:
    """What the card is made of; every part may be missing except the run's config."""

    run_name: str
    config: TrainConfig  # the run's resolved config.yaml
    records: list[dict[str, Any]]  # metrics.jsonl
    data: dict[str, Any] | None  # `sam3tune data inspect --json` report of the run's dataset
    eval_report: dict[str, Any] | None  # eval.json of `sam3tune eval --model ... baseline=<start>`
    weights: str  # "merged" or "adapters"
    has_loss_curve: bool


def render_model_card(inputs: ModelCardInputs) -> str:
    """The card's Markdown with a YAML front matter (the ``license`` left for the user to fill)."""
    config = inputs.config
    base = model_label(config.model.name)
    mode = config.model.finetune.mode
    lines = _front_matter(config.model.name, inputs.weights)
    lines += [
        f"# {inputs.run_name}: SAM 3 fine-tuned with sam3tune",
        "",
        f"SAM 3 (promptable concept segmentation: a text prompt in, every matching instance's box, mask and "
        f"score out) fine-tuned from `{base}` ({'LoRA' if mode == 'lora' else 'full fine-tune'}) on "
        f"`{_data_name(config)}` with sam3tune and the official SAM 3 training recipe.",
        "",
    ]
    lines += _verdict_section(inputs)
    lines += _eval_section(inputs)
    lines += _data_section(inputs.data, config)
    lines += _training_section(config, inputs.records)
    if inputs.has_loss_curve:
        lines += ["## Loss curve", "", "![loss curve](loss_curve.png)", ""]
    lines += _usage_section(base, inputs.weights)
    lines += [
        "## Licence",
        "",
        "Left for you to choose: set `license` in the front matter above. The base model's licence "
        f"(`{base}`) governs its weights and therefore this derivative.",
        "",
    ]
    return "\n".join(lines)


def _data_name(config: TrainConfig) -> str:
    """The dataset by its folder (or file) name, not the absolute path it was read from."""
    return Path(config.data.root).name if config.data.root is not None else "-"


def _without_folders(text: str) -> str:
    """``text`` with every absolute path reduced to its last part (a published card does not show the
    folders of the machine it was written on)."""
    return re.sub(r"/[^\s:()]+", lambda match: Path(match.group()).name, text)


def _front_matter(base: str, weights: str) -> list[str]:
    lines = ["---", "license: unknown  # fill in before publishing (e.g. the base model's licence)"]
    if weights == "adapters":
        lines.append("library_name: peft")
    else:
        lines.append("library_name: transformers")
    if is_hub_id(base) and not Path(base).exists():  # a hub id, not a local folder
        lines.append(f"base_model: {base}")
    lines += [
        "pipeline_tag: mask-generation",
        "tags:",
        "- sam3",
        "- sam3tune",
        "- image-segmentation",
        "- object-detection",
        "---",
        "",
    ]
    return lines


def _verdict_section(inputs: ModelCardInputs) -> list[str]:
    lines = []
    report_verdict = (inputs.eval_report or {}).get("verdict")
    if report_verdict:
        lines.append(f"**Evaluation: {report_verdict['line']}**")
    val = inputs.config.val
    verdict = verdict_from_records(inputs.records, val.best_metric, val.best_mode)
    if verdict is not None:
        lines.append(f"**Validation during training: {verdict.line()}**")
    return [*_joined(lines), ""] if lines else []


def _joined(lines: list[str]) -> list[str]:
    """Markdown paragraphs, one per line."""
    out: list[str] = []
    for line in lines:
        out += [line, ""]
    return out[:-1]


def _eval_section(inputs: ModelCardInputs) -> list[str]:
    report = inputs.eval_report
    if report is None:
        return _validation_table(inputs)
    tuned = report["model"]
    zero_shot = report.get("baseline")
    context = report.get("context") or {}
    lines = ["## Evaluation", ""]
    if context.get("data"):
        data = _without_folders(context["data"])
        lines.append(f"On {data}, every image asked every category (absent ones included).")
        lines.append("")
    header = ["metric (percent)"] + (["zero-shot", "tuned", "change"] if zero_shot else ["tuned"])
    rows = []
    for key, label in EVAL_ROWS:
        after = tuned["summary"].get(key)
        if after is None and (not zero_shot or zero_shot["summary"].get(key) is None):
            continue
        if zero_shot:
            before = zero_shot["summary"].get(key)
            rows.append([label, percent(before), percent(after), percent_change(before, after)])
        else:
            rows.append([label, percent(after)])
    lines += markdown_table(header, rows)
    lines += ["", "Per category (box AP50 / mask AP50 / false-fire rate, percent):", ""]
    runs = [("zero-shot", zero_shot), ("tuned", tuned)] if zero_shot else [("tuned", tuned)]
    header = ["category"]
    for name, _ in runs:
        header += [f"box AP50 ({name})", f"mask AP50 ({name})", f"false-fire ({name})"]
    rows = []
    for category in _categories(tuned):
        row = [category]
        for _, run in runs:
            row += [
                percent(_category_value(run, "bbox", category)),
                percent(_category_value(run, "segm", category)),
                percent(_false_fire(run, category)),
            ]
        rows.append(row)
    lines += markdown_table(header, rows)
    lines += ["", "Every number: `eval.json`.", ""]
    return lines


def _validation_table(inputs: ModelCardInputs) -> list[str]:
    """Without an eval report: the validation of step 0 (zero-shot) against the best later one."""
    val = [r for r in inputs.records if r.get("kind") == "val"]
    zero = next((r for r in val if r["step"] == 0), None)
    trained = [r for r in val if r["step"] > 0]
    if zero is None or not trained:
        return [
            "## Evaluation",
            "",
            "No evaluation against zero-shot was recorded: run `sam3tune eval --model RUN/model baseline="
            "<base model> --data DATA data.val=test --out RUN/eval` and export again.",
            "",
        ]
    metric = inputs.config.val.best_metric
    pick = min if inputs.config.val.best_mode == "min" else max
    best = pick((r for r in trained if isinstance(r.get(metric), (int, float))), key=lambda r: r[metric])
    lines = [
        "## Evaluation (validation split)",
        "",
        f"Validation of the starting model (step 0) and of the best weights (step {best['step']}, by "
        f"{metric}); per-category figures come with an eval report (`sam3tune eval baseline=...`).",
        "",
    ]
    rows = [
        [label, percent(zero.get(key)), percent(best.get(key)), percent_change(zero.get(key), best.get(key))]
        for key, label in EVAL_ROWS
        if zero.get(key) is not None or best.get(key) is not None
    ]
    return [*lines, *markdown_table(["metric (percent)", "zero-shot", "tuned", "change"], rows), ""]


def _data_section(data: dict[str, Any] | None, config: TrainConfig) -> list[str]:
    lines = ["## Data", ""]
    if data is None or not data.get("splits"):
        return [*lines, f"`{_data_name(config)}` (not found when the card was written: no counts).", ""]
    rows = []
    for split in data["splits"]:
        if not split.get("ok"):
            continue
        queries = split["queries"] or {}
        rows.append(
            [
                split["name"],
                str(split["images"]["usable"]),
                str(split["annotations"]["targets"]),
                str(queries.get("positive")),
                str(queries.get("negative")),
            ]
        )
    lines += markdown_table(["split", "images", "objects", "positive queries", "negative queries"], rows)
    categories: dict[str, list[str]] = {}
    for split in data["splits"]:
        for category in split.get("categories") or []:
            if category.get("queried"):
                entry = categories.setdefault(category["name"], [category["prompt"], 0])
                entry[1] += category["instances"]
    if categories:
        lines += ["", "Categories (prompt, instances over all splits):", ""]
        rows = [[name, f'"{prompt}"', str(count)] for name, (prompt, count) in categories.items()]
        lines += markdown_table(["category", "prompt", "instances"], rows)
    lines += [
        "",
        "A query is one prompt on one image; negative queries ask for a category absent from the image "
        'and teach the model to answer "not here".',
        "",
    ]
    return lines


def _training_section(config: TrainConfig, records: list[dict[str, Any]]) -> list[str]:
    train = [r for r in records if r.get("kind") == "train"]
    loop, optim, finetune = config.loop, config.optim, config.model.finetune
    rows = [
        ["base model", f"`{model_label(config.model.name)}`"],
        ["fine-tuning", finetune.mode],
        ["optimizer steps", f"{train[-1]['step']}" if train else "-"],
        [
            "epochs / batch (images per process) / accumulation",
            f"{loop.epochs} / {loop.batch_size} / {loop.grad_accum_steps}",
        ],
        [
            "learning rates (transformer / vision / text)",
            f"{optim.lr_transformer} / {optim.lr_vision} / {optim.lr_text}",
        ],
        ["seed", str(loop.seed)],
    ]
    if finetune.mode == "lora":
        lora = finetune.lora
        rows.append(["LoRA", f"rank {lora.rank}, alpha {lora.alpha}, on {lora.components}"])
    if train:
        rows.append(["training time", f"{sum(r.get('seconds') or 0 for r in train) / 60:.1f} min"])
        rows.append(["final training loss", f"{train[-1].get('loss'):.4g}" if train[-1].get("loss") else "-"])
    return [
        "## Training",
        "",
        *markdown_table(["setting", "value"], rows),
        "",
        "The complete resolved configuration is `training_config.yaml` (`sam3tune train --config "
        "training_config.yaml` repeats the run, given the data).",
        "",
    ]


def _usage_section(base: str, weights: str) -> list[str]:
    if weights == "adapters":
        load = [
            "from peft import PeftModel",
            "from transformers import Sam3Model",
            "",
            f'base = Sam3Model.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "REPO_ID").merge_and_unload()',
        ]
    else:
        load = ["from transformers import Sam3Model", "", 'model = Sam3Model.from_pretrained("REPO_ID")']
    return [
        "## Use",
        "",
        "```python",
        *load,
        "```",
        "",
        "or with sam3tune (same preprocessing and postprocessing as in training and evaluation):",
        "",
        "```bash",
        'sam3tune predict --model REPO_ID --prompt "your prompt" images/',
        "```",
        "",
        "Preprocessing: the whole image resized to the square input (`preprocessor_config.json`), pixels "
        "scaled to [-1, 1]. Score of a detection: sigmoid(logit) x sigmoid(presence logit).",
        "",
    ]


def _categories(run: dict[str, Any]) -> list[str]:
    return list(run["metrics"]["specificity"]["per_category"])


def _category_value(run: dict[str, Any], iou_type: str, category: str) -> float | None:
    coco = run["metrics"]["coco"].get(iou_type)
    return (coco or {}).get("per_category", {}).get(category, {}).get("AP50")


def _false_fire(run: dict[str, Any], category: str) -> float | None:
    return run["metrics"]["specificity"]["per_category"].get(category, {}).get("false_fire_rate")
