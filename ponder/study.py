"""`ponder study ca1d`: the 1dCA-Reasoning study's table in one command ("Beyond Memorization", section 7 of
../shared/reference/ca1d.md), with ponder's recursive models beside the study's ways to get depth:

    fixed         the fixed-depth models: GPT-NeoX, LSTM, Mamba, ARMT (segments + memory), one model for every k
                  (k given as a token: the reference's adaptive variant); with --per-k one model per k instead
                  (`<family>-k1` .. `-k4`: the paper's main comparison)
    per-k         GPT-NeoX trained on one k alone (the paper's protocol; the control of mixing k)
    depth         GPT-NeoX with more layers (the depth sweep)
    act           GPT-NeoX with per-token ACT over the whole layer stack (model.act=model, at most act_hops hops:
                  the reference's GPT-NeoX ACT scripts)
    constant      GPT-NeoX with the whole stack repeated a constant act_max_hop times (the reference's "CD")
    cot           GPT-NeoX trained on the written-out future states s_c .. s_c+3 (teacher-forced), answering by
                  generating them (token-level chain of thought: supervised intermediate states)
    oo            GPT-NeoX predicting all four future states in parallel from masks (the non-CoT baseline of cot)
    grpo          GPT-NeoX trained by GRPO on the reward of its final answer only, sampled token by token, from a
                  supervised GPT-NeoX that writes its answer after GEN (`neox-gen`, the generate layout: the
                  reference's from-checkpoint variant; `grpo-scratch` from random weights)
    grpo-control  GRPO's control: the same start trained with the supervised loss for as many steps and prompts
    recursion     TRM, HRM, URM: latent recursion with deep supervision (ponder's; the study did not test it)

Every member is a `ponder compare` member: one data split (the same rules and orbits, written in each member's
layout or asked at its k), one evaluator, a budget of --minutes (or --steps) times the member's share in its scale
(no budget at the GPU scale: every member its preset's steps, the reference scripts' iterations; GRPO's control as
many steps as GRPO took); resumable, extended by a larger budget (finished members train on from their
checkpoints), and a member whose settings changed is refused. k is drawn from 1..4 per example (one model per
member answers every k) except in the per-k members. The table: exact match and bit accuracy per k, weights, training examples drawn, wall time, mean ACT
hops or supervision steps, and the non-learned baselines (copy, periodic, oracle) on the same test examples; as
text, JSON and PNGs (accuracy per k; the learning curves: test exact per k against the training examples drawn).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ponder import UserError, checkpoint, plots
from ponder.compare import Member, compare
from ponder.config import PRESET_DIR, from_dict, load_yaml, value_at
from ponder.evaluate import exact_by_group, scores_of
from ponder.files import atomic_write_text, entry
from ponder.run import config_from_checkpoint, read_metrics

REGIMES = ("fixed", "per-k", "depth", "act", "constant", "cot", "oo", "grpo", "grpo-control", "grpo-scratch",
           "recursion")
STUDY_MODELS = ("neox", "lstm", "mamba", "armt", "trm", "hrm", "urm")
KS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Scale:
    """The presets and settings of one scale of the study."""

    sequence: dict[str, str]  # family -> preset of the causal sequence models
    recursive: str  # preset of TRM (HRM and URM override its family)
    common: tuple[str, ...]  # overrides of every member: the shared data split
    depth: tuple[int, ...]  # layers of the depth-sweep members
    layouts: dict[str, str]  # the data layout each sequence family reads
    family_overrides: dict[str, tuple[str, ...]]  # extra overrides of every member of a sequence family
    member_overrides: dict[str, tuple[str, ...]]  # extra overrides per member name or regime (applied last)
    models: tuple[str, ...] = STUDY_MODELS  # the default --models
    regimes: tuple[str, ...] = ("fixed", "depth", "act", "constant", "cot", "grpo", "recursion")  # default --regimes
    shares: dict[str, float] = dataclasses.field(default_factory=dict)  # member name or regime -> its budget as a
    #                                                                     multiple of --minutes / --steps (default 1)
    minutes: float = 0.0  # the default --minutes (0: a budget must be given)
    starts: dict[str, str] = dataclasses.field(default_factory=dict)  # member name or regime ->
    #                                       the member whose weights it starts from (train.init; trained before it)
    control_ks: tuple[int, ...] = (2,)  # the per-k members: GPT-NeoX trained on that k alone (the paper's protocol)
    stages: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # curriculum stages: a GPT-NeoX
    #   member of that name and overrides, trained first whenever a chosen member starts from it (`starts`)
    act_hops: tuple[int, ...] = (4,)  # most hops of the ACT members (one member each; the reference: 2 and 4)


def load_scale(name: str) -> Scale:
    """A scale of the study from its YAML file, `ponder/presets/studies/ca1d-<name>.yaml` (the CPU one documents
    its measured choices there), through the config system's typed reader: an unknown key or a wrong type is one
    line naming it."""
    path = PRESET_DIR / "studies" / f"ca1d-{name}.yaml"
    return from_dict(Scale, load_yaml(path.read_text()), prefix=f"{path.name}: ")


SCALES = {name: load_scale(name) for name in ("cpu", "gpu")}


def members(out: Path, scale: Scale, models: tuple[str, ...], regimes: tuple[str, ...],
            per_k: bool = False) -> list[tuple[Member, str]]:
    """(compare member, regime) of every model x regime asked for, in training order: a member that starts from
    another's weights (`Scale.starts`: grpo from neox-gen; at the CPU scale the GPT-NeoX members from neox-k1) after
    it.
    per_k: the fixed-depth models trained one per k (the paper's main comparison: `<family>-k1` .. `-k4`) instead
    of one model for every k (k mixed with a shift token: the reference's adaptive variant)."""
    def seq(family: str, *extra: str) -> tuple[str, tuple[str, ...]]:
        return scale.sequence[family], (f"model.family={family}", *extra, *scale.family_overrides.get(family, ()))

    layout = scale.layouts
    causal = "data.ca1d.layout=causal"
    fixed = [f for f in ("neox", "lstm", "mamba", "armt") if f in models]
    chosen: list[tuple[str, str, str, tuple[str, ...]]] = []  # (name, regime, preset, overrides)
    if per_k and "fixed" in regimes:  # the paper's protocol for every fixed-depth model
        chosen += [(f"{f}-k{k}", "per-k", *seq(f, f"data.ca1d.layout={layout[f]}", f"data.ca1d.k={k}"))
                   for f in fixed for k in KS]
    elif "neox" in models and "per-k" in regimes:  # GPT-NeoX on one k alone: the control of mixing k
        chosen += [(f"neox-k{k}", "per-k", *seq("neox", causal, f"data.ca1d.k={k}")) for k in scale.control_ks]
    if "fixed" in regimes and not per_k:  # one model for every k (k given as a token)
        chosen += [(f, "fixed", *seq(f, f"data.ca1d.layout={layout[f]}")) for f in fixed]
    if "neox" in models:
        if "depth" in regimes:
            chosen += [(f"neox-L{n}", "depth", *seq("neox", causal, f"model.n_layers={n}")) for n in scale.depth]
        if "act" in regimes:  # the reference's GPT-NeoX ACT scripts: the whole stack iterated, at most act_hops hops
            chosen += [(f"neox-act{h}" if len(scale.act_hops) > 1 else "neox-act", "act",
                        *seq("neox", causal, "model.act=model", f"model.act_max_hop={h}")) for h in scale.act_hops]
        if "constant" in regimes:
            chosen.append(("neox-cd", "constant", *seq("neox", causal, "model.act=model",
                                                        "model.act_halting=constant")))
        if "cot" in regimes:
            chosen.append(("neox-cot", "cot", *seq("neox", "data.ca1d.layout=cot")))
        if "oo" in regimes:
            chosen.append(("neox-oo", "oo", *seq("neox", "data.ca1d.layout=oo")))
        generate = "data.ca1d.layout=generate"  # the answer written after GEN: GRPO's prompts, its start's layout
        if "grpo" in regimes:
            chosen.append(("neox-grpo", "grpo", *seq("neox", generate, "train.regime=grpo")))
        if "grpo-control" in regimes:  # the supervised loss from the same start, for as many steps and prompts
            chosen.append(("neox-grpo-control", "grpo-control", *seq("neox", generate)))
        if "grpo-scratch" in regimes:
            chosen.append(("neox-grpo-scratch", "grpo-scratch", *seq("neox", generate, "train.regime=grpo")))
    for name, overrides in scale.stages.items():  # a curriculum stage, where a member chosen starts from it
        if any(start_of(scale, member, regime) == name for member, regime, *_ in chosen):
            regime = next(r for m, r, *_ in chosen if start_of(scale, m, r) == name)
            chosen.append((name, regime, *seq("neox", *overrides)))
    if "recursion" in regimes:
        for family in ("trm", "hrm", "urm"):
            if family in models:
                chosen.append((family, "recursion", scale.recursive, (f"model.family={family}",
                                                                      "data.ca1d.layout=puzzle")))
    names = {name for name, *_ in chosen}
    out_members = []
    for name, regime, preset, overrides in chosen:
        # a curriculum stage has its own settings (by name only); a member of one k its family's share
        stage = name in scale.stages
        extra = scale.member_overrides.get(name, () if stage else scale.member_overrides.get(regime, ()))
        group = name.split("-")[0] if regime == "per-k" else regime
        share = scale.shares.get(name, 1.0 if stage else scale.shares.get(group, 1.0))
        start = start_of(scale, name, regime)
        if start and start not in names:
            raise UserError(f"study ca1d: member {name} starts from {start}'s weights at this scale; include {start} "
                            f"(--models and --regimes)")
        init = (f"train.init={out / start}",) if start else ()
        steps_of = "neox-grpo" if regime == "grpo-control" else ""
        if steps_of and steps_of not in names:
            raise UserError("study ca1d: grpo-control is GRPO's control (as many steps and prompts as neox-grpo); "
                            "include grpo in --regimes")
        out_members.append((Member(name, preset, tuple(overrides) + init + tuple(extra), share, steps_of), regime))
    return _after_their_starts(out_members, scale)


def start_of(scale: Scale, name: str, regime: str) -> str:
    """The member whose weights `name` starts from at this scale ("" = from scratch; a curriculum stage starts from
    scratch unless `starts` names its own start)."""
    if name in scale.stages and name not in scale.starts:
        return ""
    if regime == "grpo-control":  # GRPO's control starts where GRPO does
        return start_of(scale, "neox-grpo", "grpo")
    return scale.starts.get(name, scale.starts.get(regime, ""))


def _after_their_starts(chosen: list[tuple[Member, str]], scale: Scale) -> list[tuple[Member, str]]:
    """The members in their order, except that each comes after the member it starts from."""
    placed: list[tuple[Member, str]] = []
    waiting = list(chosen)
    while waiting:
        done = {m.name for m, _ in placed} | {""}
        ready = next((w for w in waiting if start_of(scale, w[0].name, w[1]) in done and
                      (w[0].steps_of or "") in done), None)
        if ready is None:
            raise UserError(f"study ca1d: the members {', '.join(m.name for m, _ in waiting)} start from each other")
        placed.append(ready)
        waiting.remove(ready)
    return placed


def _per_k(result: dict, k: int) -> tuple[float, float] | None:
    """(exact, bit accuracy) at k: the stratum k=<k> (one k per example), or the task's per-state metrics (cot, oo:
    every example answers every k); at N_sup for the recursive models."""
    return scores_of(result, f"k={k}")


def study_ca1d(out: str | Path, steps: int = 0, minutes: float = 0.0, models: tuple[str, ...] = (),
               regimes: tuple[str, ...] = (), scale: str = "cpu", common: list[str] = (),
               max_examples: int = 0, force: bool = False, per_k: bool = False) -> dict:
    """Train and evaluate every member (via `ponder compare`), then write study.json / study.txt / study.png and
    study-curves.png (into a folder ponder made, or an empty one; another only with `force`, beside what is there).
    Empty models / regimes: the scale's defaults; no budget: the scale's --minutes, or (--scale gpu) every member's
    own preset's steps, the reference scripts' iterations. per_k: one fixed-depth model per k (`members`)."""
    plan, chosen, steps, minutes = plan_study(out, steps, minutes, models, regimes, scale, common, per_k)
    out = Path(out)
    report = compare([m for m, _ in chosen], out, list(plan.common), steps, minutes, max_examples=max_examples,
                     force=force, own_budgets=True)
    regime_of = {m.name: r for m, r in chosen}
    share_of = {m.name: m.share for m, _ in chosen}
    before: dict[str, int] = {}  # member -> examples drawn by the members its weights come from (before its own)
    rows = []
    for r in report["members"]:
        res = r["result"]
        meta = checkpoint.load_meta(checkpoint.find(out / r["name"]))
        start = start_of(plan, r["name"], regime_of[r["name"]])
        before[r["name"]] = (before.get(start, 0) + int(meta.get("init_examples", 0))) if start else 0
        per_k = {str(k): _per_k(res, k) for k in KS}
        depth = (res["act_hops"]["mean"] if "act_hops" in res else
                 res["adaptive"]["mean_steps"] if not res.get("one_pass") else None)
        rows.append({"name": r["name"], "family": r["family"], "regime": regime_of[r["name"]],
                     "weights": r["weights"], "steps": r["steps"], "minutes": r["minutes"],
                     "share": share_of[r["name"]], "start": start, "examples_before": before[r["name"]],
                     "examples_seen": meta.get("metrics", {}).get("examples_seen"),
                     "exact": {k: v[0] for k, v in per_k.items() if v is not None},
                     "bit": {k: v[1] for k, v in per_k.items() if v is not None},
                     "depth": depth, "depth_kind": "ACT hops/token" if "act_hops" in res else
                     ("supervision steps (adaptive)" if depth is not None else ""),
                     "decode": res.get("decode", "parallel"), "n": res["n"],
                     "curve": learning_curve(out / r["name"], before[r["name"]])})
    study = {"study": "ca1d", "scale": scale, "budget": report["budget"], "common": report["common"],
             "members": rows, "baselines": baselines(out / _baseline_member(rows), max_examples)}
    atomic_write_text(entry(out, "study.json"), json.dumps(study, indent=2))
    atomic_write_text(entry(out, "study.txt"), format_study(study) + "\n")
    plots.plot_study(study, entry(out, "study.png"))
    plots.plot_study_curves(study, entry(out, "study-curves.png"))
    return study


def plan_study(out: str | Path, steps: int, minutes: float, models: tuple[str, ...], regimes: tuple[str, ...],
               scale: str, common: list[str] = (), per_k: bool = False
               ) -> tuple[Scale, list[tuple[Member, str]], int, float]:
    """(the scale, its (member, regime) in training order with the user's overrides last, steps, minutes)."""
    if scale not in SCALES:
        raise UserError(f"study ca1d: --scale must be {' or '.join(SCALES)}, got {scale!r}")
    plan = SCALES[scale]
    models, regimes = tuple(models) or plan.models, tuple(regimes) or plan.regimes
    bad = [m for m in models if m not in STUDY_MODELS] + [r for r in regimes if r not in REGIMES]
    if bad:
        raise UserError(f"study ca1d: unknown model or regime {', '.join(bad)}; models: {', '.join(STUDY_MODELS)}; "
                        f"regimes: {', '.join(REGIMES)}")
    if not steps and not minutes:
        minutes = plan.minutes  # 0 at the GPU scale: every member its preset's steps
    chosen = members(Path(out).resolve(), plan, tuple(models), tuple(regimes), per_k)
    if not chosen:
        raise UserError("study ca1d: no member for these --models and --regimes")
    # the user's --set overrides come last, after the scale's per-family and per-member settings
    chosen = [(dataclasses.replace(m, overrides=(*m.overrides, *common)), r) for m, r in chosen]
    return plan, chosen, steps, minutes


SETTINGS = ("model.family", "model.n_layers", "model.hidden", "model.act", "model.act_max_hop", "model.act_halting",
            "data.ca1d.layout", "data.ca1d.k", "train.regime", "train.steps", "train.max_minutes",
            "train.batch_size", "train.lr", "train.lr_warmup_steps", "train.lr_decay", "train.lr_decay_span",
            "train.lr_min_ratio", "train.optimizer", "train.beta1", "train.beta2", "train.weight_decay",
            "train.grad_clip", "grpo.sampling", "grpo.group_size", "grpo.beta")  # what --dry-run prints


def dry_run(out: str | Path, steps: int = 0, minutes: float = 0.0, models: tuple[str, ...] = (),
            regimes: tuple[str, ...] = (), scale: str = "cpu", common: list[str] = (), per_k: bool = False) -> str:
    """The members a study would train, in order, each with its resolved settings (SETTINGS): nothing is trained,
    built or written."""
    plan, chosen, steps, minutes = plan_study(out, steps, minutes, models, regimes, scale, common, per_k)
    lines = [f"1dCA study ({scale}), {len(chosen)} members in training order; budget: "
             + plots.budget_text({"steps": steps, "minutes": minutes})]
    for m, regime in chosen:
        cfg = m.config(list(plan.common), steps, minutes)
        start = start_of(plan, m.name, regime)
        values = [f"{key}={value_at(cfg, key)}" for key in SETTINGS
                  if not (key.startswith("model.act_") and cfg.model.act == "off")
                  and not (key.startswith("grpo.") and cfg.train.regime != "grpo")]
        lines.append(f"{m.name} ({regime}; preset {m.preset}; share {m.share:g}"
                     + (f"; from {start}" if start else "")
                     + (f"; steps: as many as {m.steps_of}" if m.steps_of else "") + ")")
        lines.append("    " + " ".join(values))
    return "\n".join(lines)


def _baseline_member(rows: list[dict]) -> str:
    """The member whose test split the baselines are computed on: one answering one k per example in the
    causal layout (neox), else the first."""
    return next((r["name"] for r in rows if r["regime"] == "fixed" and r["family"] == "neox"), rows[0]["name"])


def learning_curve(run: Path, before: int = 0) -> dict:
    """A member's periodic evaluations (train.eval_every) against the training examples drawn by then, counting the
    `before` examples of the members its weights started from: {"examples": [...], "exact": {"1": [...], ...}}
    (exact per k; "all" where the run reports no k)."""
    _, evals = read_metrics(run)
    out: dict = {"examples": [], "exact": {}}
    for e in evals:
        if "examples_seen" not in e:
            continue
        per_k = {group[len("k="):]: v for group, v in exact_by_group(e).items() if group.startswith("k=")}
        out["examples"].append(before + int(e["examples_seen"]))
        for k, v in (per_k or {"all": e["eval_exact"]}).items():
            out["exact"].setdefault(k, []).append(v)
    return out


def baselines(run: Path, max_examples: int = 0) -> dict[str, dict[str, float]]:
    """The non-learned predictors' exact match per k (`Ca1dTask.baselines`: copy, periodic, oracle) on the test
    examples a member was evaluated on (its data.path: every layout of a study holds the same orbits)."""
    from ponder.tasks import task_for
    from ponder.tasks.dataset import read_split

    cfg = config_from_checkpoint(run)[1]
    arrays, meta = read_split(cfg.data.path, "test")
    task = task_for(cfg.data, meta, cfg.data.path)
    n = max_examples or len(arrays.inputs)
    return {name: {str(k): v for k, v in per_k.items()}
            for name, per_k in task.baselines(arrays.inputs[:n], arrays.labels[:n]).items()}


def format_study(study: dict) -> str:
    rows = study["members"]
    head = (f"{'member':>17} | {'regime':>9} | {'from':>8} | {'weights':>9} | {'examples':>9} | {'min':>5} | "
            + " | ".join(f"{'EM k=' + str(k):>7}" for k in KS) + " | "
            + " | ".join(f"{'bit k=' + str(k):>7}" for k in KS) + f" | {'depth':>5}")
    lines = [f"1dCA study ({study['scale']}): exact match (EM) and bit accuracy per k on {rows[0]['n']} test examples "
             f"of unseen rules; budget: {plots.budget_text(study['budget'])}", head, "-" * len(head)]

    def pct(d: dict, k: int) -> str:
        v = d.get(str(k))
        return f"{100 * v:6.1f}%" if v is not None else f"{'-':>7}"

    for r in rows:
        seen = f"{r['examples_seen']:>9,}" if r["examples_seen"] is not None else f"{'?':>9}"
        depth = f"{r['depth']:5.2f}" if r["depth"] is not None else f"{'-':>5}"
        lines.append(f"{r['name']:>17} | {r['regime']:>9} | {r.get('start') or '-':>8} | {r['weights']:>9,} | {seen} | "
                     f"{r['minutes']:5.1f} | "
                     + " | ".join(pct(r["exact"], k) for k in KS) + " | "
                     + " | ".join(pct(r["bit"], k) for k in KS) + f" | {depth}")
    for name, per_k in study.get("baselines", {}).items():
        lines.append(f"{name:>17} | {'baseline':>9} | {'-':>8} | {'-':>9} | {'-':>9} | {'-':>5} | "
                     + " | ".join(pct(per_k, k) for k in KS) + " | " + " | ".join(f"{'':>7}" for _ in KS)
                     + f" | {'-':>5}")
    lines.append("depth: mean ACT hops per token (act, constant) or mean supervision steps under adaptive halting "
                 "(recursion); from: the member whose weights it started from; examples: training examples it drew "
                 "itself (grpo: prompts, group_size completions each); "
                 "baselines (no learning): the last given state, the visible period continued, and the oracle that "
                 "applies every truth-table entry the given transitions show")
    return "\n".join(lines)
