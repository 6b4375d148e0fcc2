"""Every figure ponder writes, behind one figure helper (`figure`: Agg backend, layout, save, close):

- `plot_scaling`    accuracy against test-time supervision steps, with the adaptive-halting point (`ponder eval`)
- `plot_solving`    one example's answer after each supervision step (`ponder eval`, solving_*.png)
- `plot_sweep`      accuracy against a swept test-time setting (`ponder eval --sweep`)
- `plot_compare`    several members' accuracy against supervision steps (`ponder compare`)
- `draw_sheet`      rows of titled grids a task asks for (ARC task pictures)
- `plot_lm_scaling` GSM8K accuracy and perplexity against recurrences R (`ponder lm eval`)

Figures take plain results (dicts, arrays of display values, palettes); they know no task, model or run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ponder.files import atomic_open

RIGHT, WRONG, CHANGED = "#1a7f37", "#d1242f", "#ffe08a"


@contextmanager
def figure(path: str | Path, rows: int = 1, cols: int = 1, size: tuple[float, float] = (6.4, 4.2), dpi: int = 120,
           title: str = "", title_size: float = 9, grid: bool = False) -> Iterator[tuple]:
    """(plt, fig, axes) of a new figure, saved to `path` (its folder made if needed) when the block ends; axes is one
    Axes, or with grid=True always a (rows, cols) array. matplotlib is imported here, so commands that draw nothing
    never load it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=not grid)
    try:
        yield plt, fig, axes
        if title:
            fig.suptitle(title, fontsize=title_size)
        fig.tight_layout()
        with atomic_open(path, "wb") as f:  # a full disk or Ctrl-C never leaves a truncated picture under its name
            fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(fig)


def _accuracy_axes(ax, xlabel: str, ylabel: str, log2: bool = True) -> None:
    """The look every accuracy plot shares: 0-101% on y, a light grid, log2 steps on x."""
    if log2:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)


def _grid_lines(ax, rows: int, cols: int, color: str, lw: float, offset: float = 0.0, box: tuple[int, int] = (1, 1)):
    for i in range(0, rows + 1, box[0]):
        ax.axhline(i + offset, color=color, lw=lw)
    for i in range(0, cols + 1, box[1]):
        ax.axvline(i + offset, color=color, lw=lw)


# ---------------------------------------------------------------------------------------------------------------------
# puzzle evaluation


def plot_scaling(result: dict, path: Path, title: str = "") -> None:
    """Exact and cell accuracy (and each group's exact) after every supervision step; the adaptive-halting point."""
    with figure(path) as (plt, fig, ax):
        steps = result["steps"]
        ax.plot(steps, [100 * v for v in result["exact"]], "o-", ms=3, label="exact (whole answer)")
        ax.plot(steps, [100 * v for v in result["cell"]], "s-", ms=3, label="cell")
        for name, g in result.get("groups", {}).items():
            ax.plot(steps, [100 * v for v in g["exact"]], "--", lw=1.2, label=f"exact, {name}")
        a = result["adaptive"]
        ax.plot([a["mean_steps"]], [100 * a["exact"]], "r*", ms=14,
                label=f"adaptive halting ({a['mean_steps']:.1f} steps)")
        ax.axvline(result["n_supervision"], color="grey", ls="--", lw=1, label="N_sup (trained)")
        _accuracy_axes(ax, "supervision steps at test time", "accuracy (%)")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(title or f"Test-time scaling ({result['n']} held-out examples)")


def plot_solving(given: np.ndarray, label: np.ndarray | None, answers: dict[int, np.ndarray], path: Path,
                 palette: tuple[str, ...] | None = None, box: tuple[int, int] | None = None, name: str = "",
                 legend: str = "") -> None:
    """One example being solved: the input, then the decoded answer after each step of `answers` (step -> grid).
    All grids are display values (0 = empty); cells without a label (0 in `label`) show the input. Changed cells
    are highlighted (yellow), wrong ones in red; with a palette the cells are coloured (wrong ones outlined in red),
    otherwise digits are drawn, the givens in black, with thick lines between `box`es. `label` None (a puzzle of
    the user's own, `ponder solve`): every cell shows the answer and nothing is marked wrong; otherwise a last panel
    draws the target. `name` (e.g. "test example 17") heads the title; `legend` (what special cells mean) follows it."""
    import matplotlib

    known = label is not None
    scored = label != 0 if known else np.ones(given.shape, bool)  # cells that carry a label
    truth = np.where(scored, label, given) if known else None
    rows, cols_ = given.shape
    panels = [0, *answers] + (["target"] if known else [])
    cols = len(panels)
    width = 2.1 * min(3.0, max(0.5, cols_ / rows))
    title = ("answer after each supervision step (" + ("red outline" if palette is not None else "red") + ": wrong"
             + ("" if palette is not None else ", yellow: changed") + ")") if known else \
        ("answer after each supervision step" + ("" if palette is not None else " (yellow: changed)"))
    title = (f"{name}: {title}" if name else title) + (f"\n{legend}" if legend else "")
    with figure(path, 1, cols, size=(width * cols, 2.4 + 0.2 * bool(legend)), dpi=110, title=title, grid=True) as (plt, fig, axes):
        prev = given
        for ax, s in zip(axes[0], panels):
            grid = given if s == 0 else truth if s == "target" else np.where(scored, answers[s], given)
            ax.set_xlim(0, cols_)
            ax.set_ylim(rows, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if palette is not None:
                ax.imshow(np.clip(grid, 0, len(palette) - 1), cmap=matplotlib.colors.ListedColormap(palette),
                          vmin=0, vmax=len(palette) - 1, extent=(0, cols_, rows, 0), interpolation="nearest")
            for r in range(rows):
                for c in range(cols_):
                    step = s not in (0, "target")  # an answer panel (the input and the target mark nothing)
                    wrong = known and step and scored[r, c] and grid[r, c] != truth[r, c]
                    if palette is not None:
                        if wrong:
                            ax.add_patch(plt.Rectangle((c + 0.08, r + 0.08), 0.84, 0.84, fill=False, ec=WRONG, lw=1.2))
                        continue
                    if step and grid[r, c] != prev[r, c]:
                        ax.add_patch(plt.Rectangle((c, r), 1, 1, color=CHANGED))
                    v = grid[r, c]
                    if v:
                        color = WRONG if wrong else ("black" if given[r, c] else RIGHT)  # a changed given is wrong
                        ax.text(c + 0.5, r + 0.55, str(v), ha="center", va="center", fontsize=max(6, 60 // rows),
                                color=color, weight="bold" if given[r, c] else "normal")
            if palette is None:
                _grid_lines(ax, rows, cols_, "grey", 0.4)
                _grid_lines(ax, rows, cols_, "black", 1.4, box=box or (rows, cols_))  # thick lines between boxes
            right = known and bool((grid[scored] == truth[scored]).all())
            ax.set_title("input" if s == 0 else "target" if s == "target" else f"step {s}" + (" (right)" if right else ""),
                         fontsize=9)
            prev = grid


def plot_sweep(sweep: dict, path: Path) -> None:
    """Accuracy at N_sup (overall, cell, each group's exact) against the values of a swept test-time setting."""
    runs = sweep["runs"]
    x = np.arange(len(runs))

    def at_nsup(series: list[dict], what: str = "exact") -> list[float]:
        return [100 * r[what][min(run["n_supervision"], len(run["steps"])) - 1] for r, run in zip(series, runs)]

    with figure(path) as (plt, fig, ax):
        ax.plot(x, at_nsup(runs), "o-", label="exact (all)")
        ax.plot(x, at_nsup(runs, "cell"), "s-", label="cell (all)")
        for g in runs[0].get("groups", {}):
            ax.plot(x, at_nsup([run["groups"][g] for run in runs]), "--", marker=".", label=f"exact, {g}")
        ax.set_xticks(x, [str(run["value"]) for run in runs])
        trained = [i for i, run in enumerate(runs) if str(run["value"]) == str(sweep.get("trained"))]
        if trained:
            ax.axvline(trained[0], color="grey", ls="--", lw=1, label=f"trained ({sweep['trained']})")
        _accuracy_axes(ax, f"{sweep['key']} at test time", "accuracy at N_sup (%)", log2=False)
        ax.legend(fontsize=7)
        ax.set_title(f"Accuracy against {sweep['key']}")


def plot_compare(report: dict, path: Path) -> None:
    """Every member's exact accuracy against test-time supervision steps; dotted lines at each member's N_sup."""
    with figure(path, size=(7.0, 4.4)) as (plt, fig, ax):
        for r in report["members"]:
            res = r["result"]
            line, = ax.plot(res["steps"], [100 * v for v in res["exact"]], "o-", ms=3,
                            label=f"{r['name']} ({r['family']}, {r['weights'] / 1e6:.2f}M weights, {r['steps']} steps)")
            ax.axvline(res["n_supervision"], color=line.get_color(), ls=":", lw=1)
        _accuracy_axes(ax, "supervision steps at test time (dotted: each member's N_sup)", "exact accuracy (%)")
        ax.legend(fontsize=7, loc="best")
        budget = report["budget"]
        ax.set_title(f"Same data, same budget ({budget['steps']} steps)" if budget["steps"]
                     else f"Same data, same budget ({budget['minutes']:g} min each)")


BASELINE_STYLE = {"copy s_c-1": ("#9a9a9a", (0, (2, 2))), "periodic": ("#6f6f6f", (0, (5, 2))),
                  "oracle": ("#000000", (0, (1, 1)))}


def plot_study(study: dict, path: Path) -> None:
    """The 1dCA study: exact match against k, one line per member (`ponder study`); dashed: recursion, dotted: the
    regimes that change the training signal (cot, oo, grpo); grey: the non-learned baselines."""
    styles = {"recursion": "--", "cot": ":", "oo": ":", "grpo": ":", "grpo-scratch": ":"}
    with figure(path, size=(9.6, 4.6)) as (plt, fig, ax):
        colours = plt.get_cmap("tab20").colors
        for i, r in enumerate(study["members"]):
            ks = sorted(int(k) for k in r["exact"])
            ax.plot(ks, [100 * r["exact"][str(k)] for k in ks], marker="o", ms=4, ls=styles.get(r["regime"], "-"),
                    color=colours[(2 * i) % 20 + (2 * i) // 20], label=f"{r['name']} ({r['regime']})")
        for name, per_k in study.get("baselines", {}).items():
            colour, dash = BASELINE_STYLE.get(name, ("#9a9a9a", "--"))
            ks = sorted(int(k) for k in per_k)
            ax.plot(ks, [100 * per_k[str(k)] for k in ks], color=colour, ls=dash, lw=1.2, label=f"{name} (no learning)")
        _accuracy_axes(ax, "k (steps ahead of the last given state)", "exact match on unseen rules (%)", log2=False)
        ax.set_xticks([1, 2, 3, 4])
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no line hidden
        ax.set_title(f"1dCA study ({study['scale']}): " + budget_text(study["budget"]))


def budget_text(b: dict) -> str:
    if not b["steps"] and not b["minutes"]:
        return "every member its own preset's steps (the reference scripts' iterations)"
    return "every member " + (f"{b['steps']} steps" if b["steps"] else f"{b['minutes']:g} min") + " x its share"


def plot_study_curves(study: dict, path: Path) -> None:
    """The study's learning curves: each member's periodic test exact match at k = 1..4 (one panel per k) against
    the training examples drawn, one line per member, the baselines as horizontal lines."""
    ks = ["1", "2", "3", "4"]
    with figure(path, 1, 4, size=(16, 4.2), grid=True) as (plt, fig, axes):
        colours = plt.get_cmap("tab20").colors
        for i, r in enumerate(study["members"]):
            curve = r.get("curve") or {}
            for ax, k in zip(axes[0], ks):
                ys = curve.get("exact", {}).get(k) or curve.get("exact", {}).get("all")
                if ys:
                    ax.plot(curve["examples"], [100 * y for y in ys], color=colours[(2 * i) % 20 + (2 * i) // 20],
                            lw=1.3, label=r["name"])
        for ax, k in zip(axes[0], ks):
            for name, per_k in study.get("baselines", {}).items():
                if k in per_k:
                    colour, dash = BASELINE_STYLE.get(name, ("#9a9a9a", "--"))
                    ax.axhline(100 * per_k[k], color=colour, ls=dash, lw=1, label=name)
            _accuracy_axes(ax, "training examples drawn", "exact match on unseen rules (%)" if k == "1" else "",
                           log2=False)
            ax.set_title(f"k = {k}", fontsize=10)
        axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(f"1dCA study ({study['scale']}): learning curves (periodic evaluations), "
                     + budget_text(study["budget"]), fontsize=10)


def draw_sheet(sheet, palette: tuple[str, ...], path: Path) -> None:
    """A task's `Sheet` (ponder.tasks.base): one row of titled grids per row, coloured by `palette`; a tile with a
    verdict gets a green (right) or red (wrong) frame."""
    import matplotlib

    cols = max(len(row) for row in sheet.rows)
    cmap = matplotlib.colors.ListedColormap(palette)
    with figure(path, len(sheet.rows), cols, size=(2.2 * cols, 2.2 * len(sheet.rows)), dpi=90, title=sheet.title,
                title_size=10, grid=True) as (plt, fig, axes):
        for r, row in enumerate(sheet.rows):
            for c in range(cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(row):
                    ax.axis("off")
                    continue
                tile = row[c]
                ax.imshow(tile.grid, cmap=cmap, vmin=0, vmax=len(palette) - 1, interpolation="nearest")
                h, w = tile.grid.shape
                _grid_lines(ax, h, w, "#555555", 0.3, offset=-0.5)
                if tile.verdict is not None:
                    for side in ax.spines.values():
                        side.set_edgecolor(RIGHT if tile.verdict else WRONG)
                        side.set_linewidth(3)
                ax.set_title(f"{tile.title} {h}x{w}", fontsize=8)


# ---------------------------------------------------------------------------------------------------------------------
# retrofitted LMs


def plot_lm_scaling(res: dict, path: Path) -> None:
    """GSM8K accuracy (left axis) and the perplexity of reference answers (right axis) against recurrences R."""
    rs = res["recurrences"]
    with figure(path) as (plt, fig, ax):
        ax.plot(rs, [100 * a for a in res["accuracy"]], "o-", color="C0", label="GSM8K accuracy")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("recurrences R at test time")
        ax.set_ylabel("GSM8K accuracy (%)", color="C0")
        ax.set_ylim(0, 101)  # fixed scales: a 0.005 change in perplexity must not look like a cliff
        ax.axvline(res["train_mean_recurrence"], color="grey", ls="--", lw=1, label="train r_bar (max)")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(rs, res["perplexity"], "s--", color="C1", label="answer perplexity")
        ax2.set_ylabel("perplexity of reference answers", color="C1")
        ax2.set_ylim(1, 1.15 * max(max(res["perplexity"]), 1.0))  # perplexity >= 1: from its floor
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=7)
        ax.set_title(f"Retrofitted recurrence: test-time depth ({res['n']} GSM8K test problems)")
