"""Time Sam3Criterion against Meta's official loss wrapper (with the official matchers) on identical inputs.

    python bench/loss.py                 # recipe: B=8, Q=200, 6 layers, o2m, masks 288 px vs 1008 px targets
    python bench/loss.py --repeats 9 --no-masks

Forward + backward of the total, the official side including its per-layer matcher calls (in training the
model makes them). Repetitions are interleaved (ours, official, official, ours, ...) because the CPU is
shared; the report gives both medians and the median of the per-repetition ratios. Needs Meta's
``sam3==0.1.4`` (``scripts/setup.sh --test``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# The official-reference glue is test-only code; the bench borrows it from the tests folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "loss"))
from official_reference import (
    Case,
    OfficialCriterion,
    leaf_copy,
    single_process_group,
    unavailable_reason,
)

from sam3tune.loss import CriterionConfig, Sam3Criterion


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-counts", default="4,2,0,7,1,3,0,5", help="GT objects of each query (B = count)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--mask-size", type=int, default=288, help="predicted mask side (targets: 3.5x)")
    parser.add_argument("--no-masks", action="store_true")
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reason = unavailable_reason()
    if reason:
        sys.exit(reason)

    counts = [int(c) for c in args.batch_counts.split(",")]
    mask = None if args.no_masks else (args.mask_size, args.mask_size)
    case = Case("bench", 0, counts, num_queries=args.queries, num_layers=args.layers, mask_size=mask)
    raw, targets = case.build()
    config = CriterionConfig()  # the recipe; "global" normalisation on a one-process group
    ours = Sam3Criterion(config)
    official = OfficialCriterion(config, with_masks=mask is not None)
    official_targets = official.targets(targets)

    def run_ours() -> float:
        outputs = leaf_copy(raw)
        start = time.perf_counter()
        loss = ours(outputs, targets)["loss"]
        if not args.forward_only:
            loss.backward()
        return time.perf_counter() - start

    def run_official() -> float:
        outputs = leaf_copy(raw)
        start = time.perf_counter()
        loss = official(official.outputs(outputs, official_targets), official_targets)["core_loss"]
        if not args.forward_only:
            loss.backward()
        return time.perf_counter() - start

    what = "forward" if args.forward_only else "forward + backward"
    n_pairs = sum(counts)
    print(
        f"B={len(counts)} Q={args.queries} layers={args.layers} o2m=on GT={n_pairs} "
        f"masks={'off' if mask is None else f'{args.mask_size}->{int(args.mask_size * 3.5)} px'}, {what}, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved repetitions"
    )
    with single_process_group():
        run_ours(), run_official()  # warm-up
        mine, theirs = [], []
        for r in range(args.repeats):
            pair = (run_ours, run_official) if r % 2 == 0 else (run_official, run_ours)
            times = {f: f() for f in pair}
            mine.append(times[run_ours])
            theirs.append(times[run_official])
            print(
                f"  rep {r}: ours {mine[-1]:.3f} s  official {theirs[-1]:.3f} s  "
                f"ratio {mine[-1] / theirs[-1]:.3f}"
            )
    ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
    print(
        f"median: ours {statistics.median(mine):.3f} s, official {statistics.median(theirs):.3f} s, "
        f"ratio ours/official {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
