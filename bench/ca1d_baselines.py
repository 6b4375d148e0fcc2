"""Reference points for 1dCA accuracy: what non-learned predictors score on a preset's test split
(`ponder.tasks.ca1d.baseline_predictions`; `ponder study ca1d` puts the same rows in its table).

    .venv/bin/python bench/ca1d_baselines.py [PRESET] [key=value ...]     (default preset: ca1d-cpu)

- copy s_c-1: the answer is the last given state (right when the orbit has reached a fixed point);
- periodic: the smallest period p (with a cyclic shift) that the given states obey, continued k steps;
- oracle: every truth-table entry the given transitions show, applied k times from s_c-1; wrong only where a needed
  entry was never shown. The ceiling of what can be inferred from the given states.
A model above "periodic" has learned some rule inference; the gap to the oracle is what is left.
"""

from __future__ import annotations

import sys

from ponder.config import resolve
from ponder.tasks import get_task


def main(argv: list[str]) -> None:
    preset = argv[0] if argv else "ca1d-cpu"
    cfg = resolve(preset, argv[1:])
    task = get_task(cfg.data)
    arrays = task.build("test", cfg.data.seed)
    print(f"{len(arrays.inputs)} test examples of {preset}: exact match")
    for name, per_k in task.baselines(arrays.inputs, arrays.labels).items():
        print(f"{name:>12}: " + "  ".join(f"k={k}: {100 * v:5.1f}%" for k, v in per_k.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
