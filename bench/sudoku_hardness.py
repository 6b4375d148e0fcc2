"""How far the rules' direct consequences go on a set of Sudoku puzzles: the share of blanks that naked and hidden
singles fix, applied until nothing changes (`ponder.tasks.sudoku.singles_fill`). A puzzle they do not solve needs
a guess or a deeper technique (ponder's solver guesses): a model that has learned only propagation solves the
"solved by singles alone" share and no more.

    .venv/bin/python bench/sudoku_hardness.py SOURCE [SOURCE ...] [--max N]

SOURCE: a Sudoku CSV (question,answer[,rating]) or a dataset directory written by `ponder data sudoku` / a run's
`data/` (its test split, or DIR/train for the training split). The first N puzzles of each (default 2,000).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.tasks.dataset import read_split
from ponder.tasks.sudoku import load_csv, singles_fill


def puzzles_of(source: str) -> np.ndarray:
    """(N, 81) puzzles, 0 = blank, from a CSV file or a dataset directory (tokens: 0 pad, 1 blank, 2..10 digits)."""
    path = Path(source)
    if path.is_file():
        return load_csv(path)[0]
    root, split = (path.parent, path.name) if path.name in ("train", "test") else (path, "test")
    inputs = np.asarray(read_split(root, split)[0].inputs).astype(np.int64)
    return np.clip(inputs - 1, 0, None).astype(np.uint8)


def main(argv: list[str]) -> None:
    limit = 2000
    if "--max" in argv:
        at = argv.index("--max")
        limit = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    if not argv:
        sys.exit(__doc__)
    sets = {source: puzzles_of(source)[:limit] for source in argv}  # a bad source fails before any output
    print(f"{'source':>40} | puzzles | blanks | solved by singles alone | blanks fixed by singles")
    for source, puzzles in sets.items():
        fill = singles_fill(puzzles, 9)
        print(f"{source[-40:]:>40} | {len(puzzles):7,} | {np.mean((puzzles == 0).sum(1)):6.1f} | "
              f"{100 * np.mean(fill == 1):22.1f}% | {100 * fill.mean():22.1f}%")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        print(f"sudoku_hardness: error: {err}", file=sys.stderr)
        sys.exit(2)
