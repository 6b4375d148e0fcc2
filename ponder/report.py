"""`ponder report DIR`: one self-contained page, DIR/report.html, for a run, a compare or a study.

Self-contained means one file with nothing fetched: figures are PNGs inlined as data URIs, styles inline, no
script, so the page opens offline, attached to a mail or copied off a cluster. It is built only from what the run
directory already holds, read-only, and written atomically:

- a training run (`config.yaml` + `metrics.jsonl`, from `ponder train`, `ponder lm train` or `ponder import`):
  a summary (task, model and weights, steps of the budget, examples seen, time, the headline accuracy), training
  curves drawn from `metrics.jsonl` (loss; training and periodic-evaluation accuracy; speed; learning rate), the
  newest evaluation (`eval/`, else a compare's `compare-eval/`): the test-time scaling table and plot, adaptive
  halting, the task's own metrics, every picture; `eval-train/`, `sweep-*/` and `lm_eval/` when present;
  timings and the machine of every start and resume (`machine.jsonl`); the config; the files;
- a compare or study directory (`compare.json`): its table and plot, every member's training curves on one time
  axis, and a link to each member's own page (written too).

`ponder train`, `ponder eval` and `ponder compare` write it at their end; a failure to draw it never fails them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ponder import UserError, __version__
from ponder.files import atomic_write_text
from ponder.run import read_metrics

PAGE = "report.html"
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
margin-top: 1.8em; } h3 { margin-bottom: 0.3em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd; padding: 3px 9px;
text-align: left; } th { background: #f5f5f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f9; border: 1px solid #e3e3e8; padding: 0.7em; overflow-x: auto; font-size: 12.5px; }
figure { display: inline-block; margin: 0.4em 1em 0.8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; font-size: 12.5px; }
.wide img { max-width: 1060px; }
.note { color: #666; font-size: 13px; }
nav a { margin-right: 1em; }
"""


def write_report(directory: str | Path) -> Path:
    """Write DIR/report.html (and, for a compare, each member's page); return its path."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such run, compare or study directory")
    if (d / "compare.json").exists():
        members = _members(d / "compare.json")
        for m in members:
            if (d / m["name"] / "config.yaml").exists():
                write_report(d / m["name"])
        with _from(d / "compare.json"):
            body = _compare_page(d, members)
    elif (d / "config.yaml").exists():
        with _from(d):
            body = _run_page(d)
    else:
        raise UserError(f"{d}: not a run (no config.yaml) nor a compare or study (no compare.json)")
    path = d / PAGE
    atomic_write_text(path, body)
    return path


def report_quietly(directory: str | Path) -> Path | None:
    """write_report for the end of train/eval/compare: a page that cannot be drawn is a warning, not a failure."""
    try:
        return write_report(directory)
    except Exception as e:  # noqa: BLE001 - the work it reports on is done and saved; say why and go on
        print(f"warning: {directory}/{PAGE} not written ({e.__class__.__name__}: {e}); "
              f"retry with: ponder report {directory}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------------------------------------------------
# reading


def _read_json(path: Path, **types) -> dict:
    """A JSON object whose fields named in `types` (name=type or tuple of types), where present, have those types:
    a file edited by hand or damaged is one line naming the file and the field, never a traceback."""
    from ponder.files import read_json

    body = read_json(path)
    if not isinstance(body, dict):
        raise UserError(f"{path}: expected a JSON object")
    for key, kind in types.items():
        value = body.get(key)
        if key in body and (not isinstance(value, kind) or isinstance(value, bool) and bool not in _tuple(kind)):
            names = " or ".join(t.__name__ for t in _tuple(kind))
            raise UserError(f"{path}: {key} should be {names}, not {type(value).__name__} ({str(value)[:40]!r})")
    return body


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


NUMBER = (int, float)


def _numbers(body: dict, path: Path, *keys: str) -> None:
    """Each of `keys` present in `body`: a list of numbers (one per supervision step), else a UserError."""
    for key in keys:
        if key in body and not (isinstance(body[key], list) and all(type(v) in NUMBER for v in body[key])):
            raise UserError(f"{path}: {key} should be a list of numbers")


def _results(path: Path) -> dict:
    """An evaluation's results.json, the fields the page reads checked."""
    res = _read_json(path, n=int, n_supervision=int, exact=list, cell=list, adaptive=dict, task_metrics=dict,
                     checkpoint=str, weights=str, overrides=list)
    _numbers(res, path, "exact", "cell")
    if not res.get("exact") or not isinstance(res.get("n"), int):
        raise UserError(f"{path}: not an evaluation's results (no exact or n)")
    if not res.get("one_pass"):
        if type(res.get("n_supervision")) is not int:
            raise UserError(f"{path}: n_supervision should be int")
        _read_adaptive(res.get("adaptive"), path)
    return res


def _read_adaptive(a, path: Path) -> None:
    if not (isinstance(a, dict) and all(type(a.get(k)) in NUMBER for k in ("exact", "mean_steps"))):
        raise UserError(f"{path}: adaptive should hold the numbers exact and mean_steps")


def _members(path: Path) -> list[dict]:
    """compare.json's members, each checked: a plain name (a folder of the compare: no path, no scheme), text
    preset and overrides, numbers where numbers go."""
    from ponder.files import plain_name

    members = _read_json(path, members=list).get("members", [])
    for m in members:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not plain_name(m["name"]):
            raise UserError(f"{path}: member {str(m.get('name') if isinstance(m, dict) else m)[:40]!r} is not a plain "
                            f"folder name (letters, digits, . _ - = +)")
        ok = (isinstance(m.get("preset", ""), str) and isinstance(m.get("overrides", []), list)
              and all(isinstance(o, str) for o in m.get("overrides", []))
              and all(type(m.get(k, 0)) in NUMBER for k in ("weights", "steps", "minutes"))
              and isinstance(m.get("result", {}), dict))
        if not ok:
            raise UserError(f"{path}: member {m['name']!r} holds a value of another type than ponder writes")
        _numbers(m.get("result", {}), path, "exact")
    return members


@contextmanager
def _from(path: Path) -> Iterator[None]:
    """Anything else of an unexpected type met while drawing a page from `path` (a file or a run's folder): one line
    naming it."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise UserError(f"{path}: holds a value of another type than ponder writes ({e.__class__.__name__}: "
                        f"{str(e)[:80]}); report not written") from None


def _lines(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


# ---------------------------------------------------------------------------------------------------------------------
# drawing


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(src: str | Path, caption: str = "", wide: bool = False) -> str:
    """A figure: a PNG file inlined as a data URI (or an already-encoded PNG)."""
    data = base64.b64encode(Path(src).read_bytes()).decode() if isinstance(src, Path) else src
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure class="{"wide" if wide else ""}"><img alt="{html.escape(caption or "figure")}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>')


def _curves(train: list[dict], evals: list[dict]) -> str | None:
    """Loss, accuracy (training and periodic evaluation), speed and learning rate against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not train and not evals:
        return None
    steps = [r["step"] for r in train]
    panels = []
    losses = [k for k in ("loss", "lm_loss", "halt_loss", "ce_loss") if any(k in r for r in train)]
    if losses:
        panels.append(("loss", [(k, steps, [r.get(k) for r in train]) for k in losses], True))
    acc = [(k, steps, [r.get(k) for r in train]) for k in ("exact", "cell", "reward") if any(k in r for r in train)]
    ev_keys = sorted({k for r in evals for k, v in r.items() if k.startswith("eval_") and isinstance(v, (int, float))
                      and 0 <= v <= 1})
    acc += [(k, [r["step"] for r in evals], [r.get(k) for r in evals]) for k in ev_keys]
    if acc:
        panels.append(("accuracy (training batches; eval_*: held-out, periodic)", acc, False))
    speed = [k for k in ("examples_per_s", "tokens_per_s") if any(k in r for r in train)]
    if speed:
        panels.append(("speed", [(k, steps, [r.get(k) for r in train]) for k in speed], False))
    schedule = [k for k in ("lr", "lr_scale") if any(k in r for r in train)]
    if schedule:
        panels.append(("learning rate", [(k, steps, [r.get(k) for r in train]) for k in schedule], False))
    if any("r_bar" in r for r in train):  # an LM retrofit: the depth curriculum and the sampled loops n + k
        panels.append(("recurrence (curriculum r_bar; sampled n + k)", [
            ("r_bar", steps, [r.get("r_bar") for r in train]),
            ("n + k", steps, [r["n"] + r["k"] if "n" in r and "k" in r else None for r in train])], False))
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, series, log) in zip(axes.flat, panels):
        for name, xs, ys in series:
            pts = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=name, marker="o" if len(pts) < 20 else None, ms=3)
        if log and all(y > 0 for _, _, ys in series for y in ys if isinstance(y, (int, float))):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _member_curves(d: Path, members: list[dict]) -> str | None:
    """Every compare member's training loss and accuracy against wall-clock minutes, on shared axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    drawn = False
    for m in members:
        train, _ = read_metrics(d / m["name"])
        pts = [(r["elapsed"] / 60, r) for r in train if isinstance(r.get("elapsed"), (int, float))]
        if not pts:
            continue
        drawn = True
        xs = [x for x, _ in pts]
        line, = axes[0].plot(xs, [r.get("loss") for _, r in pts], label=m["name"])
        key = "exact" if any("exact" in r for _, r in pts) else "reward"
        axes[1].plot(xs, [r.get(key) for _, r in pts], label=m["name"], color=line.get_color())
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("training loss", "exact on training batches (GRPO: reward)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------------------
# pages


def _table(rows: list[tuple], head: tuple | None = None) -> str:
    def cell(v, tag="td"):
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        text = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else (
            f"{v:.4g}" if isinstance(v, float) else str(v))
        return f'<{tag}{" class=num" if num else ""}>{html.escape(text)}</{tag}>'

    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(cell(h, "th") for h in head) + "</tr>")
    out += ["<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    nav = " ".join(f'<a href="#{_anchor(name)}">{html.escape(name)}</a>' for name, _ in sections)
    body = "\n".join(f'<h2 id="{_anchor(name)}">{html.escape(name)}</h2>\n{content}' for name, content in sections)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1><p class=sub>{subtitle}</p><nav>{nav}</nav>\n{body}\n"
            f"<p class=note>written by ponder {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"(<code>ponder report DIR</code> rewrites it)</p></body></html>\n")


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _run_page(run: Path) -> str:
    from ponder import checkpoint
    from ponder.config import load_yaml

    config_text = (run / "config.yaml").read_bytes().decode("utf-8", "replace")
    try:
        cfg = load_yaml(config_text) or {}
    except Exception:  # noqa: BLE001 - a damaged config still gets a page, shown as text
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}  # e.g. a YAML list: shown as text only
    train, evals = read_metrics(run)
    ckpts = checkpoint.list_checkpoints(run)
    meta = _read_json(ckpts[-1] / "meta.json", params=int, step=int, metrics=dict, kind=str) if ckpts else {}
    if type(meta.get("metrics", {}).get("examples_seen", 0)) is not int:
        raise UserError(f"{ckpts[-1] / 'meta.json'}: metrics.examples_seen should be int")
    model, tcfg, data = (_section(cfg, name) for name in ("model", "train", "data"))
    lm = meta.get("kind") == "lm"  # a `ponder lm` run: its config.yaml also holds the (unused) puzzle sections
    eval_dir = next((run / n for n in ("eval", "compare-eval") if (run / n / "results.json").exists()), None)
    res = _results(eval_dir / "results.json") if eval_dir else None

    last = train[-1] if train else {}
    elapsed = last.get("elapsed")
    summary = []
    if data.get("task") and not lm:
        summary.append(("task", data["task"]))
    if model.get("family") and not lm:
        summary.append(("model", f"{model['family']}" + (f", hidden {model['hidden']}" if "hidden" in model else "")
                        + (f", {model['n_layers']} layers" if "n_layers" in model else "")
                        + (f", n={model['n_latent']}, T={model['n_cycles']}, N_sup={model['n_supervision']}"
                           if model.get("n_supervision", 1) > 1 else "")))
    if lm:
        summary.append(("model", f"retrofitted {cfg['lm'].get('base', 'LM')}: prelude {cfg['lm'].get('prelude')}, "
                                 f"recurrent core {cfg['lm'].get('core')}, coda {cfg['lm'].get('coda')}"))
    if meta.get("params"):
        summary.append(("weights", f"{meta['params']:,}"))
    step = meta.get("step", last.get("step", 0))
    budget = tcfg.get("steps")
    minutes = tcfg.get("max_minutes")
    summary.append(("steps", f"{step:,}" + (f" of {budget:,}" if budget else "")
                    + (f" (budget {minutes:g} min)" if minutes else "")))
    seen = last.get("examples_seen") or meta.get("metrics", {}).get("examples_seen")
    if seen:
        summary.append(("training examples drawn", f"{seen:,}"))
    if elapsed is not None:
        summary.append(("training time", _minutes(elapsed)))
    if last.get("examples_per_s"):
        summary.append(("speed (last interval)", f"{last['examples_per_s']:.1f} examples/s"))
    if res:
        at = 0 if res.get("one_pass") else min(res["n_supervision"], len(res["exact"])) - 1
        summary.append(("held-out exact" + ("" if res.get("one_pass") else " at N_sup"),
                        f"{_pct(res['exact'][at])} (cell {_pct(res['cell'][at])}) on {res['n']:,} examples"))
        if not res.get("one_pass"):
            a = res["adaptive"]
            summary.append(("adaptive halting", f"{_pct(a['exact'])} exact in {a['mean_steps']:.2f} steps on average"))
    if ckpts:
        summary.append(("latest checkpoint", str(ckpts[-1].relative_to(run))))
    sections = [("Summary", _table(summary))]

    curves = _curves(train, evals)
    if curves:
        sections.append(("Training curves", _img(curves, "from metrics.jsonl", wide=True)))
    for name, title in (("eval", "Evaluation"), ("compare-eval", "Evaluation (compare)"),
                        ("eval-train", "Evaluation on the training split")):
        if (run / name / "results.json").exists():
            sections.append((title, _evaluation(run / name)))
    for sweep in sorted(run.glob("sweep-*/sweep.json")):
        sections.append((f"Sweep of {sweep.parent.name[6:]}", _sweep(sweep.parent)))
    if (run / "lm_eval" / "results.json").exists():
        sections.append(("LM evaluation", _lm_evaluation(run / "lm_eval")))
    sections.append(("Timings and machine", _machine(run, train, ckpts)))
    sections.append(("Config", _config(config_text, lm)))
    sections.append(("Files", _files(run)))
    subtitle = html.escape(str(run.resolve()))
    return _page(f"ponder run {run.name}", subtitle, sections)


def _section(cfg: dict, name: str) -> dict:
    """A config section, its values the types the page formats (others dropped: the page shows the text too)."""
    section = cfg.get(name)
    if not isinstance(section, dict):
        return {}
    kinds = {"hidden": int, "n_layers": int, "n_latent": int, "n_cycles": int, "n_supervision": int, "steps": int,
             "max_minutes": NUMBER, "family": str, "task": str}
    return {k: v for k, v in section.items() if k not in kinds or (isinstance(v, kinds[k]) and type(v) is not bool)}


def _config(text: str, lm: bool) -> str:
    """The sections the run reads; the whole config.yaml (every task's defaults too) folded below."""
    import yaml

    from ponder.config import Config, from_dict, load_yaml, upgrade, used_sections

    try:
        used = yaml.safe_dump(used_sections(from_dict(Config, upgrade(load_yaml(text))), lm), sort_keys=False)
    except Exception:  # noqa: BLE001 - a config this version cannot read is still shown, whole
        return _pre(text)
    return (_pre(used) + "<details><summary>the whole config.yaml (every section, defaults included)</summary>"
            + _pre(text) + "</details>")


def _evaluation(d: Path) -> str:
    from ponder.evaluate import format_adaptive, format_table

    res = _results(d / "results.json")
    src = _read_json(d / "evaluated.json", overrides=list) if (d / "evaluated.json").exists() else {}
    settings = " ".join(str(o) for o in (src.get("overrides") or res.get("overrides") or []))
    out = [f"<p class=note>checkpoint {html.escape(str(res.get('checkpoint', '')))} "
           f"({html.escape(str(res.get('weights', '')))} weights)"
           + (f", settings {html.escape(settings)}" if settings else "") + "</p>"]
    out.append(_pre(format_table(res)))
    tm = res.get("task_metrics", {})
    if tm:
        out.append(_table([(k, int(v) if k in ("test_inputs", "puzzles") else _pct(v)) for k, v in tm.items()],
                          ("task metric", "value")))
    if (d / "adaptive.json").exists():
        adaptive = _read_json(d / "adaptive.json")
        with _from(d / "adaptive.json"):
            out.append("<h3>Adaptive halting against the full N_sup steps</h3>" + _pre(format_adaptive(adaptive)))
    pngs = [p for p in sorted(d.glob("*.png")) if p.name == "scaling.png"] + \
        [p for p in sorted(d.glob("*.png")) if p.name != "scaling.png"] + sorted(d.glob("*/*.png"))
    pngs = [p for p in pngs if not p.relative_to(d).parts[0].startswith("step_")]
    if pngs:
        out.append("<h3>Figures</h3>" + "\n".join(_img(p, _caption(p.relative_to(d))) for p in pngs[:24]))
        if len(pngs) > 24:
            out.append(f"<p class=note>{len(pngs) - 24} more pictures in {html.escape(str(d))}</p>")
    if (d / "examples.txt").exists():
        out.append("<h3>Examples</h3>" + _pre((d / "examples.txt").read_bytes()[:20000].decode("utf-8", "replace")))
    earlier = sorted(p.name for p in d.glob("step_*") if p.is_dir())
    if earlier:
        out.append(f"<p class=note>earlier evaluations kept in {html.escape(d.name)}/: {html.escape(', '.join(earlier))}"
                   "</p>")
    return "\n".join(out)


def _caption(rel: Path) -> str:
    name = str(rel.with_suffix(""))
    return {"scaling": "accuracy against test-time supervision steps"}.get(name, name) + (
        " (examples whose answer changed over the steps come first)" if name.startswith("solving_") else "")


def _sweep(d: Path) -> str:
    from ponder.evaluate import format_sweep

    out = [_pre(format_sweep(_read_json(d / "sweep.json")))]
    if (d / "sweep.png").exists():
        out.append(_img(d / "sweep.png", "accuracy against the swept setting (the trained value marked)"))
    return "\n".join(out)


def _lm_evaluation(d: Path) -> str:
    from ponder.lm.evaluate import format_lm_table

    out = [_pre(format_lm_table(_read_json(d / "results.json")))]
    if (d / "lm_scaling.png").exists():
        out.append(_img(d / "lm_scaling.png", "accuracy and perplexity against the recurrence R"))
    return "\n".join(out)


def _machine(run: Path, train: list[dict], ckpts: list[Path]) -> str:
    starts = _lines(run / "machine.jsonl")
    out = []
    if train:
        t = [r for r in train if isinstance(r.get("elapsed"), (int, float))]
        if len(t) >= 2:
            rate = (t[-1]["step"] - t[0]["step"]) / max(t[-1]["elapsed"] - t[0]["elapsed"], 1e-9)
            out.append(_table([("logged steps", f"{t[0]['step']:,} .. {t[-1]['step']:,}"),
                               ("training time at the last log", _minutes(t[-1]["elapsed"])),
                               ("steps per minute (mean)", f"{60 * rate:.1f}")]))
    if starts:
        head = ("started", "from step", "processes", "device", "cpu", "cores", "threads", "torch", "host")
        out.append(_table([(s.get("started", ""), s.get("step", ""), s.get("processes", 1),
                            s.get("gpu", s.get("device", "")), s.get("cpu", ""), s.get("cores", ""),
                            s.get("threads", ""), s.get("torch", ""), s.get("host", "")) for s in starts], head))
    else:
        out.append("<p class=note>no machine.jsonl (a run from before ponder recorded its machine)</p>")
    return "\n".join(out)


def _files(run: Path) -> str:
    rows = []
    for p in sorted(run.iterdir()):
        if p.name == PAGE or p.name.startswith("."):
            continue
        if p.is_dir():
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            rows.append((p.name + "/", f"{size / 1e6:.1f} MB"))
        else:
            rows.append((p.name, f"{p.stat().st_size / 1e3:.1f} kB"))
    return _table(rows, ("file", "size"))


def _compare_page(d: Path, members: list[dict]) -> str:
    report = _read_json(d / "compare.json")
    study = _read_json(d / "study.json") if (d / "study.json").exists() else None
    sections = []
    text = (d / "study.txt") if study and (d / "study.txt").exists() else (d / "compare.txt")
    if text.exists():
        sections.append(("Table", _pre(text.read_bytes().decode("utf-8", "replace"))))
    figures = [_img(d / n, n) for n in ("study.png", "compare.png") if (d / n).exists()]
    if (d / "study-curves.png").exists():
        figures.append(_img(d / "study-curves.png", "learning curves: test exact match per k against the training "
                            "examples drawn, every member on one axis", wide=True))
    if figures:
        sections.append(("Plots", "\n".join(figures)))
    curves = _member_curves(d, members)
    if curves:
        sections.append(("Training curves", _img(curves, "every member, from its metrics.jsonl", wide=True)))
    rows = []
    for m in members:
        page = d / m["name"] / PAGE
        link = f'<a href="./{html.escape(m["name"])}/{PAGE}">{html.escape(m["name"])}</a>' if page.exists() else \
            html.escape(m["name"])  # a plain folder name (`_members`): the link stays inside the compare's folder
        r = m.get("result", {})
        at = 0 if r.get("one_pass") else min(r.get("n_supervision", 1), len(r.get("exact", [0]))) - 1
        rows.append((link, html.escape(m.get("preset", "")), html.escape(" ".join(m.get("overrides", []))),
                     f"{m.get('weights', 0):,}", f"{m.get('steps', 0):,}", f"{m.get('minutes', 0):.1f}",
                     _pct(r["exact"][at]) if r.get("exact") else ""))
    head = ("member", "preset", "overrides", "weights", "steps", "minutes", "held-out exact")
    sections.append(("Members", "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows) + "</table>"))
    settings = [("budget", json.dumps(report.get("budget"))),
                ("common settings", " ".join(str(c) for c in report.get("common", []))),
                ("test-time supervision steps", report.get("eval_steps", ""))]
    sections.append(("Settings", _table(settings)))
    starts = _lines(d / members[0]["name"] / "machine.jsonl") if members else []
    if starts:
        s = starts[-1]
        sections.append(("Machine", _table([("cpu", s.get("cpu", "")), ("cores", s.get("cores", "")),
                                            ("device", s.get("gpu", s.get("device", ""))),
                                            ("torch", s.get("torch", ""))])))
    kind = "study" if study else "compare"
    return _page(f"ponder {kind} {d.name}", html.escape(str(d.resolve())), sections)
