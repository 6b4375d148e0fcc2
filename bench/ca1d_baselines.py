"""Reference points for 1dCA accuracy: what simple non-learned predictors score on a preset's test split.

    .venv/bin/python bench/ca1d_baselines.py [PRESET] [key=value ...]     (default preset: ca1d-cpu)

- copy last: the answer is s_{c-1} (right when the orbit has reached a fixed point);
- periodic extrapolation: find the smallest period p (with a cyclic shift) that the given states obey and continue
  it k steps (right whenever the orbit has become periodic: common for elementary rules on few cells);
- rule inference (oracle): read every truth-table entry the given transitions show, apply the table k times from
  s_{c-1}; wrong only where a needed entry was never shown. The ceiling of what can be inferred from the context.
A model above "periodic extrapolation" has learned some rule inference; the gap to the oracle is what is left.
"""

from __future__ import annotations

import sys

import numpy as np

from ponder.config import resolve
from ponder.tasks import get_task


def main(argv: list[str]) -> None:
    cfg = resolve(argv[0] if argv else "ca1d-cpu", argv[1:])
    task, c = get_task(cfg.data), cfg.data.ca1d
    arrays = task.build("test", cfg.data.seed)
    states = np.stack([task.grid(x) for x in arrays.inputs])[:, :-1] - 1  # (B, context, W) in {0, 1}
    target = np.stack([task.grid(x) for x in arrays.labels])[:, -1] - 1
    ks = task.steps_ahead(arrays.inputs)
    w, r = c.width, c.radius

    def periodic(s: np.ndarray, k: int) -> np.ndarray:
        n = len(s)
        for p in range(1, n):
            for shift in range(-(w // 2), w // 2 + 1):
                if all((np.roll(s[j - p], shift) == s[j]).all() for j in range(p, n)):
                    q, rem = divmod(k - 1, p)
                    return np.roll(s[n - p + rem], shift * (q + 1))
        return s[-1]

    def inferred(s: np.ndarray, k: int) -> np.ndarray | None:
        table = {}
        for t in range(len(s) - 1):
            for j in range(w):
                table[tuple(s[t][(j + o) % w] for o in range(-r, r + 1))] = s[t + 1][j]
        x = s[-1]
        for _ in range(k):
            keys = [tuple(x[(j + o) % w] for o in range(-r, r + 1)) for j in range(w)]
            if any(key not in table for key in keys):
                return None
            x = np.array([table[key] for key in keys])
        return x

    predictors = {"copy last": lambda s, k: s[-1], "periodic extrapolation": periodic, "rule inference (oracle)": inferred}
    print(f"{len(ks)} test examples of {argv[0] if argv else 'ca1d-cpu'}: exact match")
    for name, predict in predictors.items():
        right = np.array([(p := predict(states[i], int(ks[i]))) is not None and bool((p == target[i]).all())
                          for i in range(len(ks))])
        per_k = "  ".join(f"k={k}: {100 * right[ks == k].mean():5.1f}%" for k in sorted(set(ks.tolist())))
        print(f"{name:>24}: {100 * right.mean():5.1f}%   {per_k}")


if __name__ == "__main__":
    main(sys.argv[1:])
