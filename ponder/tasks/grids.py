"""2-D grid helpers shared by the grid tasks (Maze, ARC).

The eight symmetries of the square (the dihedral group D4) are numbered as in the official HRM/TRM builders
(`dataset/common.py: dihedral_transform`), so transform ids written by either code base mean the same thing:
0 identity, 1 rot90 (np.rot90, k=1: counter-clockwise), 2 rot180, 3 rot270, 4 left-right flip, 5 up-down flip,
6 transpose, 7 anti-transpose (np.fliplr(np.rot90(x))). Here they act on the last two axes, so one call transforms a
single (H, W) grid or a (B, H, W) batch.
"""

from __future__ import annotations

import numpy as np

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # t -> the id undoing it: rot90/rot270 pair up, the rest undo themselves


def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Symmetry `t` (0..7, numbered as above) of the last two axes of `grid`; a view where numpy allows one."""
    if t == 0:
        return grid
    if t in (1, 2, 3):
        return np.rot90(grid, k=t, axes=(-2, -1))
    if t == 4:
        return grid[..., :, ::-1]
    if t == 5:
        return grid[..., ::-1, :]
    if t == 6:
        return np.swapaxes(grid, -1, -2)
    if t == 7:
        return np.rot90(grid, k=1, axes=(-2, -1))[..., :, ::-1]
    raise ValueError(f"dihedral transform id must be in 0..7, got {t}")


def side_by_side(panels: list[tuple[str, list[str]]], footer: str = "") -> str:
    """Text panels (title, lines of equal width) next to each other, titles above, an optional footer line below."""
    width = len(panels[0][1][0])
    lines = ["    ".join(title.ljust(width) for title, _ in panels).rstrip()]
    lines += ["    ".join(rows[i] for _, rows in panels).rstrip() for i in range(len(panels[0][1]))]
    return "\n".join(lines + ([footer] if footer else []))
