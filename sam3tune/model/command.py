"""``sam3tune import-checkpoint``: a checkpoint written by Meta's SAM 3 code -> a Hugging Face folder."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def run_import_checkpoint_command(checkpoint: Path, out: Path) -> int:
    """Convert ``checkpoint`` (``sam3.pt``, a trainer checkpoint, safetensors) into the folder ``out``;
    print what was converted. Exit status 0, or 2 with the reason on stderr."""
    from sam3tune.model.meta_checkpoint import MetaCheckpointError, import_checkpoint

    try:
        dropped = import_checkpoint(checkpoint, out)
    except (MetaCheckpointError, FileNotFoundError, FileExistsError) as err:
        print(f"sam3tune import-checkpoint: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    reasons: dict[str, int] = {}
    for why in dropped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        print(f"left out {count} tensor(s): {why}")
    print(f"wrote {out} (load it with sam3tune --model {out}, or Sam3Model.from_pretrained)")
    return EXIT_OK
