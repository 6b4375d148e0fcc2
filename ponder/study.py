"""`ponder study ca1d`: the 1dCA-Reasoning study's table in one command ("Beyond Memorization", section 7 of
../shared/reference/ca1d.md), with ponder's recursive models beside the study's ways to get depth:

    fixed      the fixed-depth models: GPT-NeoX, LSTM, Mamba (reads segments), ARMT (segments + memory)
    depth      GPT-NeoX with more layers (the depth sweep)
    act        GPT-NeoX with per-token ACT over its layers (model.act=layer)
    constant   GPT-NeoX with every layer repeated a constant act_max_hop times (the reference's "CD")
    cot        GPT-NeoX trained on the written-out future states s_c .. s_c+3 (teacher-forced), answering by
               generating them (token-level chain of thought: supervised intermediate states)
    oo         GPT-NeoX predicting all four future states in parallel from masks (the non-CoT baseline of cot)
    grpo       GPT-NeoX trained by GRPO on the reward of its final answer only, from the `neox` member's checkpoint
               (the reference's from-checkpoint variant; `grpo-scratch` from random weights)
    recursion  TRM, HRM, URM: latent recursion with deep supervision (ponder's; the study did not test it)

Every member is a `ponder compare` member: one data split (the same rules and orbits, written in each member's
layout), one budget (--minutes or --steps per member), one evaluator; resumable, and a member whose settings changed
is refused. k is drawn from 1..4 per example (one model per member answers every k; the paper trains one model per
k). The table: exact match and bit accuracy per k, weights, training examples seen, wall time, mean ACT hops or
supervision steps; as text, JSON and a PNG (accuracy per k, one line per member).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ponder import UserError, checkpoint, plots
from ponder.compare import Member, compare

REGIMES = ("fixed", "depth", "act", "constant", "cot", "oo", "grpo", "grpo-scratch", "recursion")
DEFAULT_REGIMES = ("fixed", "depth", "act", "constant", "cot", "grpo", "recursion")
MODELS = ("neox", "lstm", "mamba", "armt", "trm", "hrm", "urm")
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


# The CPU version (about an hour on 2 cores at --minutes 5: 65 min measured; README, "1dCA-Reasoning: the study's
# regimes"): the data of ca1d-seq-cpu / ca1d-cpu (elementary radius-1 rules, 8 cells, 4 given states, 192 train and 64 disjoint test rules)
# with k drawn from 1..4 per example. GPT-NeoX and ARMT at d 64 with rotary on every head dimension and lr 2e-3:
# measured on 2 cores with k mixed, d 64 runs 2.2x the steps of d 128 per minute (0.19 against 0.42 s per step of
# 128 examples) and rotary on 25% of a 16-wide head (4 dimensions) left it at 18% exact after 600 steps where 100%
# reached 31%.
CPU = Scale(
    sequence={"neox": "ca1d-seq-cpu", "lstm": "ca1d-seq-cpu", "mamba": "ca1d-seq-cpu", "armt": "ca1d-seq-cpu"},
    recursive="ca1d-cpu",
    common=("data.ca1d.k=0", "data.ca1d.max_k=4", "data.ca1d.train_size=100000", "data.ca1d.test_size=2000",
            "eval.batch_size=500"),
    depth=(8,),
    layouts={"neox": "causal", "lstm": "causal", "mamba": "causal", "armt": "segments"},
    family_overrides={"neox": ("model.hidden=64", "model.rotary_pct=1.0", "train.lr=2e-3"),
                      "armt": ("model.hidden=64", "model.rotary_pct=1.0", "train.lr=2e-3"),
                      # mambapy's scan on a CPU: 3.2 s per step of batch 128 x 72 tokens at d 64 and 2 layers
                      # (and the causal layout, 46 tokens, rather than the reference's segments, 72)
                      "mamba": ("model.hidden=64", "model.n_layers=2"),
                      "lstm": ()},
    member_overrides={"urm": ("model.loops=4", "model.no_grad_loops=2", "model.ffn=conv_swiglu"),
                      "grpo": ("train.lr=1e-4", "train.batch_size=128", "grpo.group_size=8", "grpo.beta=0.01",
                               "grpo.sampling=parallel"),
                      "grpo-scratch": ("train.batch_size=128", "grpo.group_size=8")},
)
# The paper's scale (GPU): the study's presets (radius 2, 20 cells, 10 given states, 950k / 100k examples).
GPU = Scale(
    sequence={"neox": "ca1d-neox", "lstm": "ca1d-lstm", "mamba": "ca1d-mamba", "armt": "ca1d-armt"},
    recursive="ca1d-trm-att",
    common=("data.ca1d.k=0", "data.ca1d.max_k=4"),
    depth=(8, 11),
    layouts={"neox": "causal", "lstm": "causal", "mamba": "segments", "armt": "segments"},
    family_overrides={},
    member_overrides={"urm": ("model.loops=8", "model.no_grad_loops=2", "model.ffn=conv_swiglu"),
                      "grpo": ("train.lr=3e-4", "train.batch_size=1024", "grpo.group_size=8", "grpo.beta=0.01",
                               "grpo.sampling=parallel"),
                      "grpo-scratch": ("train.lr=3e-4", "train.batch_size=1024", "grpo.group_size=4")},
)
SCALES = {"cpu": CPU, "gpu": GPU}


def members(out: Path, scale: Scale, models: tuple[str, ...], regimes: tuple[str, ...]) -> list[tuple[Member, str]]:
    """(compare member, regime) of every model x regime asked for, in training order (neox before grpo, which
    starts from its checkpoint)."""
    def seq(family: str, *extra: str) -> tuple[str, tuple[str, ...]]:
        return scale.sequence[family], (f"model.family={family}", *extra, *scale.family_overrides.get(family, ()))

    layout = scale.layouts
    chosen: list[tuple[str, str, str, tuple[str, ...]]] = []  # (name, regime, preset, overrides)
    if "fixed" in regimes or "grpo" in regimes:  # grpo starts from neox's checkpoint
        for family in ("neox", "lstm", "mamba", "armt"):
            if family in models and ("fixed" in regimes or family == "neox"):
                chosen.append((family, "fixed", *seq(family, f"data.ca1d.layout={layout[family]}")))
    if "neox" in models:
        causal = "data.ca1d.layout=causal"
        if "depth" in regimes:
            chosen += [(f"neox-L{n}", "depth", *seq("neox", causal, f"model.n_layers={n}")) for n in scale.depth]
        if "act" in regimes:
            chosen.append(("neox-act", "act", *seq("neox", causal, "model.act=layer", "train.grad_clip=0.1")))
        if "constant" in regimes:
            chosen.append(("neox-cd", "constant", *seq("neox", causal, "model.act=layer", "model.act_halting=constant",
                                                        "model.act_max_hop=4", "train.grad_clip=0.1")))
        if "cot" in regimes:
            chosen.append(("neox-cot", "cot", *seq("neox", "data.ca1d.layout=cot")))
        if "oo" in regimes:
            chosen.append(("neox-oo", "oo", *seq("neox", "data.ca1d.layout=oo")))
        if "grpo" in regimes:
            chosen.append(("neox-grpo", "grpo", *seq("neox", causal, "train.regime=grpo", f"grpo.init={out / 'neox'}")))
        if "grpo-scratch" in regimes:
            chosen.append(("neox-grpo-scratch", "grpo-scratch", *seq("neox", causal, "train.regime=grpo")))
    if "recursion" in regimes:
        for family in ("trm", "hrm", "urm"):
            if family in models:
                chosen.append((family, "recursion", scale.recursive, (f"model.family={family}",
                                                                      "data.ca1d.layout=puzzle")))
    out_members = []
    for name, regime, preset, overrides in chosen:
        extra = scale.member_overrides.get(name, scale.member_overrides.get(regime, ()))
        out_members.append((Member(name, preset, tuple(overrides) + tuple(extra)), regime))
    return out_members


def _per_k(result: dict, k: int) -> tuple[float, float] | None:
    """(exact, bit accuracy) at k: the stratum k=<k> (one k per example), or the task's per-state metrics (cot, oo:
    every example answers every k); at N_sup for the recursive models."""
    group = result.get("groups", {}).get(f"k={k}")
    if group is not None:
        at = min(result["n_supervision"], len(group["exact"])) - 1
        return group["exact"][at], group["cell"][at]
    metrics = result.get("task_metrics", {})
    if f"exact k={k}" in metrics:
        return metrics[f"exact k={k}"], metrics[f"cell k={k}"]
    return None


def study_ca1d(out: str | Path, steps: int = 0, minutes: float = 0.0, models: tuple[str, ...] = MODELS,
               regimes: tuple[str, ...] = DEFAULT_REGIMES, scale: str = "cpu", common: list[str] = (),
               max_examples: int = 0) -> dict:
    """Train and evaluate every member (via `ponder compare`), then write study.json / study.txt / study.png."""
    bad = [m for m in models if m not in MODELS] + [r for r in regimes if r not in REGIMES]
    if bad:
        raise UserError(f"study ca1d: unknown model or regime {', '.join(bad)}; models: {', '.join(MODELS)}; "
                        f"regimes: {', '.join(REGIMES)}")
    if scale not in SCALES:
        raise UserError(f"study ca1d: --scale must be {' or '.join(SCALES)}, got {scale!r}")
    out = Path(out)
    chosen = members(out.resolve(), SCALES[scale], tuple(models), tuple(regimes))
    if not chosen:
        raise UserError("study ca1d: no member for these --models and --regimes")
    # the user's --set overrides come last, after the scale's per-family and per-member settings
    chosen = [(Member(m.name, m.preset, (*m.overrides, *common)), r) for m, r in chosen]
    report = compare([m for m, _ in chosen], out, list(SCALES[scale].common), steps, minutes,
                     max_examples=max_examples)
    regime_of = {m.name: r for m, r in chosen}
    rows = []
    for r in report["members"]:
        res = r["result"]
        meta = checkpoint.load_meta(checkpoint.find(out / r["name"]))
        per_k = {str(k): _per_k(res, k) for k in KS}
        depth = (res["act_hops"]["mean"] if "act_hops" in res else
                 res["adaptive"]["mean_steps"] if not res.get("one_pass") else None)
        rows.append({"name": r["name"], "family": r["family"], "regime": regime_of[r["name"]],
                     "weights": r["weights"], "steps": r["steps"], "minutes": r["minutes"],
                     "examples_seen": meta.get("metrics", {}).get("examples_seen"),
                     "exact": {k: v[0] for k, v in per_k.items() if v is not None},
                     "bit": {k: v[1] for k, v in per_k.items() if v is not None},
                     "depth": depth, "depth_kind": "ACT hops/token" if "act_hops" in res else
                     ("supervision steps (adaptive)" if depth is not None else ""),
                     "decode": res.get("decode", "parallel"), "n": res["n"]})
    study = {"study": "ca1d", "scale": scale, "budget": report["budget"], "common": report["common"], "members": rows}
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.txt").write_text(format_study(study) + "\n")
    plots.plot_study(study, out / "study.png")
    return study


def format_study(study: dict) -> str:
    rows = study["members"]
    b = study["budget"]
    budget = f"{b['steps']} steps" if b["steps"] else f"{b['minutes']:g} min"
    head = (f"{'member':>17} | {'regime':>9} | {'weights':>9} | {'examples':>9} | {'min':>5} | "
            + " | ".join(f"{'EM k=' + str(k):>7}" for k in KS) + " | "
            + " | ".join(f"{'bit k=' + str(k):>7}" for k in KS) + f" | {'depth':>5}")
    lines = [f"1dCA study ({study['scale']}): exact match (EM) and bit accuracy per k on {rows[0]['n']} test examples "
             f"of unseen rules; every member {budget}", head, "-" * len(head)]

    def pct(d: dict, k: int) -> str:
        v = d.get(str(k))
        return f"{100 * v:6.1f}%" if v is not None else f"{'-':>7}"

    for r in rows:
        seen = f"{r['examples_seen']:>9,}" if r["examples_seen"] is not None else f"{'?':>9}"
        depth = f"{r['depth']:5.2f}" if r["depth"] is not None else f"{'-':>5}"
        lines.append(f"{r['name']:>17} | {r['regime']:>9} | {r['weights']:>9,} | {seen} | {r['minutes']:5.1f} | "
                     + " | ".join(pct(r["exact"], k) for k in KS) + " | "
                     + " | ".join(pct(r["bit"], k) for k in KS) + f" | {depth}")
    lines.append("depth: mean ACT hops per token (act, constant) or mean supervision steps under adaptive halting "
                 "(recursion); examples: training examples drawn (grpo: prompts, group_size completions each)")
    return "\n".join(lines)
