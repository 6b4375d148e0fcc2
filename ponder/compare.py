"""`ponder compare`: several models on the same data and the same budget, one table and one plot.

A member is `NAME=PRESET[,key=value,...]` (a preset with its own overrides), so "recursion vs depth" or an ablation
is one command:

    ponder compare --out runs/cmp --minutes 5 trm=demo hrm=demo,model.family=hrm \\
        depth=demo,model.family=transformer,model.n_layers=8,model.n_supervision=1

Every member trains in `<out>/<NAME>` through the one trainer, on one dataset (`--data`, or built once into
`<out>/data` from the members' shared data config: members whose data sections differ are refused, except in the
options that only change how the same examples are written or asked, a task's `encoding_keys`: 1dCA's layout and k,
where each gets its own `<out>/data-layout=<L>` or `<out>/data-k=<k>` of the same orbits), with the same
`--steps` or `--minutes` budget and the same `--set` overrides. Then each is evaluated by the one evaluator with the
same number of test-time supervision steps (default: twice the largest N_sup). Resumable: a member whose training
finished (`<out>/<NAME>/finished.json`) is not retrained, an interrupted one resumes from its checkpoint, and an
evaluation of the same checkpoint with the same settings is read back, not rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ponder import UserError, checkpoint, plots
from ponder.config import Config, resolve, to_dict
from ponder.files import Output, atomic_write_text, entry, plain_name
from ponder.run import config_from_checkpoint


@dataclass(frozen=True)
class Member:
    name: str
    preset: str
    overrides: tuple[str, ...]
    share: float = 1.0  # this member's budget as a multiple of the common --steps / --minutes (`ponder study`)
    steps_of: str = ""  # a control: train exactly as many steps as that (earlier) member did, whatever the budget

    def budget(self, steps: int, minutes: float) -> list[str]:
        """The overrides of this member's budget: its share of `steps` or of `minutes` (neither: its config's own)."""
        if not steps and not minutes:
            return []
        if steps:
            return [f"train.steps={max(1, round(steps * self.share))}", "train.max_minutes=0"]
        return [f"train.max_minutes={minutes * self.share:g}", "train.steps=100000000"]


    def config(self, common: list[str], steps: int, minutes: float, *extra: str) -> Config:
        """This member's resolved config: its preset, the common overrides, its own, its budget, then `extra`."""
        return resolve(self.preset, [*common, *self.overrides, *self.budget(steps, minutes), *extra])


def parse_member(text: str) -> Member:
    """`NAME=PRESET[,key=value,...]` -> Member."""
    name, sep, rest = text.partition("=")
    preset, *overrides = rest.split(",")
    if not sep or not name or not preset or any(c in name for c in "/\\ .") or "=" in preset:
        raise UserError(f"compare member {text!r} is not NAME=PRESET[,key=value,...] (e.g. hrm=demo,model.family=hrm)")
    return Member(name, preset, tuple(overrides))


def _examples(cfg: Config) -> dict:
    """The data config without the task's encoding keys: equal for members that see the same examples."""
    from ponder.tasks import TASKS

    d = to_dict(cfg.data)
    d.pop("path")  # each layout's own built copy
    for key in getattr(TASKS.get(cfg.data.task), "encoding_keys", ()):
        d[cfg.data.task].pop(key, None)
    return d


def data_dir_name(cfg: Config, first: Config) -> str:
    """`data` for the first member's data config; `data-<key>=<value>...` for one that differs in encoding keys."""
    if to_dict(cfg.data) == to_dict(first.data):
        return "data"
    mine, theirs = to_dict(cfg.data)[cfg.data.task], to_dict(first.data)[cfg.data.task]
    return "data-" + "-".join(f"{k}={v}" for k, v in mine.items() if theirs.get(k) != v)


def _configs(members: list[Member], common: list[str], budget: tuple[int, float], data: str | None,
             data_dirs: dict[str, str] | None = None) -> dict[str, Config]:
    """Each member's config; `data` (one dataset for all) or `data_dirs` (member -> its built dataset) as data.path."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise UserError(f"compare: member names must differ, got {', '.join(names)}")
    cfgs = {}
    for m in members:
        path = data or (data_dirs or {}).get(m.name)
        cfgs[m.name] = m.config(common, *budget, *([f"data.path={path}"] if path else []))
    first, data0 = names[0], to_dict(cfgs[names[0]].data)
    for name, cfg in cfgs.items():
        same = to_dict(cfg.data) == data0 if data else _examples(cfg) == _examples(cfgs[first])
        if not same:
            raise UserError(f"compare: member '{name}' has other data settings than '{first}'; members are compared "
                            f"on one dataset (give --data DIR, or the same data.* overrides)")
    return cfgs


BUDGET_KEYS = ("train.steps", "train.max_minutes")  # what `--steps` / `--minutes` set: a larger one extends a member


def _steps_as(cfg: Config, member: Member, rows: list[dict]) -> Config:
    """A control member's config: its budget is the steps its original member (trained before it) took."""
    steps = next((r["steps"] for r in rows if r["name"] == member.steps_of), None)
    if steps is None:
        raise UserError(f"compare: member {member.name} trains as many steps as {member.steps_of}, which must be a "
                        f"member trained before it")
    return replace(cfg, train=replace(cfg.train, steps=steps, max_minutes=0.0))


def _train_member(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) one member; return its finished.json record. A finished member is read back; given a larger
    budget (more --minutes or --steps, nothing else changed) it resumes from its last checkpoint and trains on."""
    from ponder.trainer import train

    done = run_dir / "finished.json"
    if done.exists():
        saved, mine = to_dict(config_from_checkpoint(run_dir)[1]), to_dict(cfg)
        if mine["train"]["dtype"] == "auto":  # the run records what auto picked for it
            saved["train"]["dtype"] = "auto"
        budget = {key: (_lookup(saved, key), _lookup(mine, key)) for key in BUDGET_KEYS}
        for key in BUDGET_KEYS:  # compare the rest
            _lookup(saved, key, drop=True), _lookup(mine, key, drop=True)
        if saved != mine:
            raise UserError(f"{run_dir}: trained with another config than this member's; use another --out, or "
                            f"delete {run_dir} to retrain it")
        if not _extends(budget):
            return json.loads(done.read_text())
        print(f"   extending {run_dir.name}: " + ", ".join(f"{k} {old:g} -> {new:g}" for k, (old, new) in budget.items()
                                                          if old != new))
        done.unlink()
    run = train(cfg, run_dir, resume=bool(checkpoint.list_checkpoints(run_dir)))
    record = {"steps": run.step, "minutes": run.seconds / 60, "checkpoint": str(run.checkpoint)}
    atomic_write_text(done, json.dumps(record, indent=2))
    return record


def _lookup(d: dict, key: str, drop: bool = False):
    section, name = key.split(".")
    return d[section].pop(name) if drop else d[section][name]


def _extends(budget: dict[str, tuple[float, float]]) -> bool:
    """Whether a new budget asks for more training than a finished member had (a smaller one reads it back)."""
    (old_steps, new_steps), (old_min, new_min) = budget["train.steps"], budget["train.max_minutes"]
    if (old_min > 0) != (new_min > 0):
        kind = "--minutes" if old_min > 0 else "--steps"
        raise UserError(f"a finished member trained under a {kind} budget is extended by a larger {kind}, not the "
                        f"other kind of budget")
    return new_min > old_min if new_min > 0 else new_steps > old_steps


def _evaluate_member(run_dir: Path, eval_steps: int, max_examples: int) -> dict:
    from ponder.evaluate import evaluate_checkpoint

    ckpt = checkpoint.find(run_dir)
    out = run_dir / "compare-eval"
    settings = {"checkpoint": str(ckpt), "eval_steps": eval_steps, "max_examples": max_examples}
    cached = out / "results.json"
    if cached.exists() and (out / "settings.json").exists() and json.loads((out / "settings.json").read_text()) == settings:
        return json.loads(cached.read_text())
    res, _ = evaluate_checkpoint(ckpt, overrides=[f"eval.max_steps={eval_steps}", f"eval.max_examples={max_examples}",
                                                  "eval.plot=false"], out_dir=out, pictures=0)
    atomic_write_text(entry(out, "settings.json"), json.dumps(settings))
    return {k: v for k, v in res.items() if not k.startswith("_")}


def weight_count(cfg: Config, run_dir: Path) -> int:
    from ponder.models import build_model, count_params

    meta = checkpoint.load_meta(checkpoint.find(run_dir))
    return count_params(build_model(cfg.model, meta["vocab_size"], meta["seq_len"], 1))


def compare(members: list[Member], out: str | Path, common: list[str] = (), steps: int = 0, minutes: float = 0.0,
            data: str | None = None, eval_steps: int = 0, max_examples: int = 0, force: bool = False,
            own_budgets: bool = False) -> dict:
    """Train every member on one dataset with one budget, evaluate all alike; write compare.json/.txt/.png into
    `out` (a folder ponder made, or an empty one; another only with `force`, beside what is there). own_budgets:
    no common budget (steps = minutes = 0), each member trains its own config's (`ponder study --scale gpu`: the
    reference scripts' iterations)."""
    if not members:
        raise UserError("compare: give at least one member NAME=PRESET[,key=value,...]")
    if (steps > 0) == (minutes > 0) and not (own_budgets and not steps and not minutes):
        raise UserError("compare: give one budget, --steps N or --minutes M")
    out = Path(out)
    budget = (steps, minutes)
    for m in members:  # a member's name is a folder of `out` and a link of its report: a plain name, nothing else
        if not plain_name(m.name):
            raise UserError(f"compare: member name {m.name[:40]!r} must be letters, digits and . _ - = + only (it names "
                            f"a folder of {out}), not starting with a dot")
    Output(out, "compare", force, legacy=("compare.json",))
    cfgs = _configs(members, list(common), budget, data)
    if not data:  # one dataset per distinct data config (they differ at most in how examples are written), built once
        from ponder.tasks import prepare_data

        first = next(iter(cfgs.values()))
        dirs = {name: str(prepare_data(cfg.data, out, data_dir_name(cfg, first))) for name, cfg in cfgs.items()}
        cfgs = _configs(members, list(common), budget, None, dirs)
    eval_steps = eval_steps or 2 * max(cfg.model.n_supervision for cfg in cfgs.values())
    rows = []
    for member in members:
        cfg, run_dir = cfgs[member.name], out / member.name
        if member.steps_of:
            cfg = _steps_as(cfg, member, rows)
        print(f"== {member.name}: {member.preset} {' '.join(member.overrides)}".rstrip())
        record = _train_member(cfg, run_dir)
        res = _evaluate_member(run_dir, eval_steps, max_examples)
        rows.append({"name": member.name, "preset": member.preset, "overrides": list(member.overrides),
                     "family": cfg.model.family, "weights": weight_count(cfg, run_dir), **record, "result": res})
    report = {"budget": {"steps": steps, "minutes": minutes}, "common": list(common), "eval_steps": eval_steps,
              "members": rows}
    atomic_write_text(entry(out, "compare.json"), json.dumps(report, indent=2))
    atomic_write_text(entry(out, "compare.txt"), format_compare(report) + "\n")
    plots.plot_compare(report, entry(out, "compare.png"))
    return report


def format_compare(report: dict) -> str:
    rows = report["members"]
    n = rows[0]["result"]["n"]
    head = (f"{'member':>14} | {'family':>11} | {'weights':>10} | {'steps':>6} | {'min':>5} | {'exact@1':>7} | "
            f"{'@N_sup':>7} | {'best (step)':>13} | {'adaptive (steps)':>16} | {'cell@N_sup':>10}")
    lines = [f"exact accuracy on {n} held-out examples against supervision steps at test time", head, "-" * len(head)]
    for r in rows:
        res = r["result"]
        at = min(res["n_supervision"], len(res["steps"])) - 1
        best = int(np.argmax(res["exact"]))
        a = res["adaptive"]
        lines.append(f"{r['name']:>14} | {r['family']:>11} | {r['weights']:>10,} | {r['steps']:>6} | "
                     f"{r['minutes']:5.1f} | {100 * res['exact'][0]:6.1f}% | {100 * res['exact'][at]:6.1f}% | "
                     f"{100 * res['exact'][best]:6.1f}% ({best + 1:>3}) | {100 * a['exact']:6.1f}% ({a['mean_steps']:5.2f}) | "
                     f"{100 * res['cell'][at]:9.1f}%")
    return "\n".join(lines)
