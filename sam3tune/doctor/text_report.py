"""A :class:`~sam3tune.doctor.diagnosis.DoctorReport` as plain text with aligned tables."""

from __future__ import annotations

from collections.abc import Sequence

from sam3tune.doctor.data_report import DataReport, Distribution
from sam3tune.doctor.diagnosis import DoctorReport
from sam3tune.doctor.expected_loss import ExpectedTotal
from sam3tune.doctor.flags import Flag
from sam3tune.doctor.ladder import RungMemory
from sam3tune.doctor.learning_rates import LearningRateGroup
from sam3tune.doctor.loss_table import GROUPS, LossTable
from sam3tune.doctor.memory import MemoryEstimate
from sam3tune.model import format_parameter_table

_GROUP_TITLES = {"final": "final layer", "auxiliary": "auxiliary layers", "one_to_many": "one-to-many"}
_INDENT = "  "


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Lines of a fixed-width table; ``align`` has one ``l`` or ``r`` per column."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def size(nbytes: float) -> str:
    """Bytes in GiB / MiB / KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{int(nbytes)} B"


def _distribution(name: str, d: Distribution, unit: str = "") -> list[str]:
    if d.count == 0:
        return [f"{name}: none"]
    bins = " | ".join(f"{label}: {n}" for label, n in d.bins)
    return [
        f"{name}: min {d.minimum:.3g}, median {d.median:.3g}, p90 {d.p90:.3g}, max {d.maximum:.3g}{unit}",
        f"{_INDENT}{bins}",
    ]


def format_data(data: DataReport) -> list[str]:
    total_queries = data.positive_queries + data.negative_queries
    images = data.inspection.get("images") or {}
    lines = [
        f"split {data.split} ({data.annotation_file})",
        f"images: {data.images} with queries "
        f"({images.get('usable', '?')} usable of {images.get('listed', '?')} listed)",
        f"queries: {total_queries} = {data.positive_queries} positive + {data.negative_queries} negative "
        f"({data.negative_share:.0%} negative); {data.targets} target objects",
        *_distribution("objects per positive query", data.objects_per_query),
        *_distribution(
            f"object side in ViT patches at {data.resolution} px (patch {data.patch_size} px)",
            data.object_sides,
        ),
        f"tiny objects (side < {data.tiny_side_pixels:.0f} px, one patch at the smallest training scale): "
        f"{data.tiny_objects} ({data.tiny_objects / max(data.targets, 1):.0%})",
        f"masks: {data.with_mask} of {data.targets} objects ({data.mask_coverage:.0%}); "
        f"{data.box_only} box-only",
    ]
    problems = data.problems
    if not problems:
        lines.append("problems: none")
    else:
        lines.append("problems:")
        lines.extend(
            f"{_INDENT}{p['count']:>6} x {p['message']} [{p['kind']}, {p['severity']}]" for p in problems
        )
    return lines


def format_losses(losses: LossTable) -> list[str]:
    rows = [
        [
            _GROUP_TITLES[t.group],
            "final" if t.layer is None else f"aux {t.layer}",
            t.term,
            f"{t.raw:.4g}",
            f"{t.weight:g}" if t.weight else "logged",
            f"{t.contribution:.4g}" if t.weight else "-",
            f"{t.share:.1%}" if t.weight else "-",
        ]
        for t in losses.terms
    ]
    lines = [
        f"total = {losses.scale:.4g} (batch scale, {losses.num_queries} queries) x weighted sum "
        f"= {losses.total:.4g}; weighted = scale x weight x raw"
    ]
    lines += table(["group", "layer", "term", "raw", "weight", "weighted", "share"], rows, "lllrrrr")
    groups = losses.group_totals()
    lines.append(
        "by group: "
        + ", ".join(f"{_GROUP_TITLES[g]} {groups[g]:.4g} ({_share(groups[g], losses.total)})" for g in GROUPS)
    )
    terms = losses.term_totals()
    lines.append(
        "by term:  " + ", ".join(f"{k} {v:.4g} ({_share(v, losses.total)})" for k, v in terms.items())
    )
    return lines


def _share(value: float, total: float) -> str:
    return f"{value / total:.1%}" if total else "-"


def format_expected(expected: ExpectedTotal, total: float | None) -> list[str]:
    lines = [
        f"uninformed model (every output logit 0) under the recipe's loss: {expected.recipe:.4g} "
        f"(order 10^{expected.order_of_magnitude}); "
        f"under this run's loss settings: {expected.configured:.4g}",
        "recipe terms for it: " + ", ".join(f"{k} {v:.3g}" for k, v in expected.recipe_terms.items()),
        f"expected first-batch total: {expected.low:.3g} .. {expected.high:.4g} "
        "(a fresh model scores about the uninformed total, a pretrained one less: docs/doctor.md)",
    ]
    if total is not None:
        lines.append(f"actual: {total:.4g} = {total / expected.recipe:.3g}x the uninformed total")
    return lines


def format_learning_rates(
    groups: list[LearningRateGroup], grad_norm: float | None, max_norm: float | None
) -> list[str]:
    families: dict[str, list[LearningRateGroup]] = {}
    for g in groups:
        families.setdefault(g.name.split(".")[0], []).append(g)
    rows = []
    for family, members in families.items():
        lrs = sorted({g.lr for g in members})
        recipe = sorted({g.recipe_lr for g in members})
        decays = sorted({g.weight_decay for g in members})
        rows.append(
            [
                family,
                str(len(members)),
                f"{sum(g.parameters for g in members):,}",
                _span(lrs),
                _span(recipe),
                _span(decays),
            ]
        )
    lines = table(["groups", "count", "parameters", "lr", "recipe lr", "weight decay"], rows, "lrrrrr")
    if grad_norm is not None:
        clip = (
            f"clipped at {max_norm:g} (x{min(1.0, max_norm / grad_norm):.3g})" if max_norm else "not clipped"
        )
        lines.append(f"gradient norm of the first step: {grad_norm:.4g}, {clip}")
    return lines


def _span(values: list[float]) -> str:
    return f"{values[0]:.3g}" if len(values) == 1 else f"{values[0]:.3g} .. {values[-1]:.3g}"


def format_memory(memory: MemoryEstimate) -> list[str]:
    rows = [
        ["weights (parameters + buffers)", size(memory.weights), "counted"],
        ["gradients (trainable parameters)", size(memory.gradients), "counted"],
        ["optimizer state (AdamW moments)", size(memory.optimizer_state), "measured after one step"],
        ["activations: forward + loss + backward peak", size(memory.activations), "measured"],
        ["optimizer step peak", size(memory.optimizer_step), "measured"],
        ["estimated peak per GPU", size(memory.total), "weights + max(activations + state, step)"],
        ["  + with DDP (gradient buckets)", size(memory.ddp_extra), "multi-GPU only"],
    ]
    lines = [
        f"ESTIMATE, measured tensor by tensor on {memory.device} under {memory.precision}; "
        "not included: CUDA context, allocator fragmentation, kernel workspaces (see docs/doctor.md)"
    ]
    lines += table(["", "bytes", "how"], rows, "lrl")
    if memory.cuda_peak is not None:
        lines.append(f"torch.cuda.max_memory_allocated over the step: {size(memory.cuda_peak)}")
    return lines


def format_ladder(rows: list[RungMemory]) -> list[str]:
    """One row per memory rung: counted weights, gradients, optimizer state, measured activations."""
    table_rows = []
    for r in rows:
        if r.memory is None:
            table_rows.append([r.rung, "", "", "", "", "", r.error or "not measured"])
            continue
        m = r.memory
        table_rows.append(
            [
                r.rung,
                f"{r.trainable / 1e6:.2f}M",
                size(m.weights),
                size(m.gradients),
                size(m.optimizer_state),
                size(m.activations),
                size(m.total),
            ]
        )
    head = ["rung", "trained", "weights", "gradients", "optimizer", "activations", "estimated peak"]
    lines = ["each rung applied to this run (loop.memory=RUNG), one step on the same batch, as above"]
    return lines + table(head, table_rows, "lrrrrrr")


def format_flags(flags: list[Flag]) -> list[str]:
    if not flags:
        return ["none"]
    lines = []
    for f in flags:
        lines.append(f"{f.severity.upper():<8}{f.code}: {f.message}")
        lines.append(f"{'':<8}means: {f.meaning}")
        lines.append(f"{'':<8}fix:   {f.fix}")
        lines.extend(f"{'':<10}- {d}" for d in f.details[:20])
        if len(f.details) > 20:
            lines.append(f"{'':<10}... {len(f.details) - 20} more")
    return lines


def format_report(report: DoctorReport) -> str:
    """The whole report: setup, data, batch, losses, expected total, parameters, optimiser, memory, flags."""
    sections: list[tuple[str, list[str]]] = []
    if report.setup:
        sections.append(("SETUP", [f"{k}: {v}" for k, v in report.setup.items()]))
    if report.data is not None:
        sections.append(("DATA", format_data(report.data)))
    if report.batch is not None:
        b = report.batch
        line = f"{b.description}: {b.images} image(s) {list(b.image_ids)}, {b.queries} queries"
        line += f", {b.objects} objects"
        sections.append(("BATCH", [line]))
    if report.losses is not None:
        sections.append(("LOSS TERMS (first batch)", format_losses(report.losses)))
    if report.expected is not None:
        total = report.losses.total if report.losses else None
        sections.append(("EXPECTED TOTAL AT INITIALISATION", format_expected(report.expected, total)))
    if report.parameters is not None:
        sections.append(("TRAINABLE PARAMETERS", format_parameter_table(report.parameters).splitlines()))
    if report.learning_rates is not None:
        sections.append(
            (
                "OPTIMISER",
                format_learning_rates(report.learning_rates, report.grad_norm, report.max_grad_norm),
            )
        )
    if report.memory is not None:
        sections.append(("GPU MEMORY", format_memory(report.memory)))
    if report.ladder is not None:
        sections.append(("MEMORY LADDER", format_ladder(report.ladder)))
    flags = report.sorted_flags()
    sections.append(("FLAGS", format_flags(flags)))
    counts = {s: sum(f.severity == s for f in flags) for s in ("error", "warning", "info")}
    verdict = f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s): " + (
        "fix the errors before training" if counts["error"] else "ready to train"
    )
    out = []
    for title, lines in sections:
        out.append(title)
        out.extend(_INDENT + line for line in lines)
        out.append("")
    out.append(verdict)
    return "\n".join(out)
