"""``sam3tune import-checkpoint``: a checkpoint written by Meta's SAM 3 code -> a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path


def run_import_checkpoint_command(checkpoint: Path, out: Path) -> int:
    """Convert ``checkpoint`` (``sam3.pt``, a trainer checkpoint, safetensors) into the folder ``out``;
    print what was converted. Exit status 0; a checkpoint that does not convert, or an ``out`` that
    exists, raises a :class:`~sam3tune.errors.UserError` (status 2)."""
    from sam3tune.model.meta_checkpoint import import_checkpoint

    dropped = import_checkpoint(checkpoint, out)
    reasons: dict[str, int] = {}
    for why in dropped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        print(f"left out {count} tensor(s): {why}")
    print(f"wrote {out} (load it with sam3tune --model {out}, or Sam3Model.from_pretrained)")
    return 0
