"""The GPU scale of `ponder study ca1d` against the reference's paper scripts (the `ACT` branch of
RodkinIvan/associative-recurrent-memory-transformer, ../shared/reference/ca1d.md): every member's resolved config
holds the values of the script it reproduces, so a drift in a preset, a study scale or the study's code fails here.
The values were read from the scripts and their trainer (lm_experiments_tools/trainer.py: AdamW built with torch's
default betas, `get_linear_schedule_with_warmup` over --num_training_steps = 2 x ITERS, --clip_grad_value passed to
clip_grad_norm_) and, for GRPO, TRL's GRPOConfig defaults (no warm-up, linear decay to 0 over max_steps, weight decay
0, max_grad_norm 1.0)."""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil

import pytest

from ponder import UserError, config, study
from ponder.config import resolve, value_at

# What every supervised script shares: --optimizer AdamW --weight_decay 0.01 --lr_scheduler linear
# --num_warmup_steps 1000 --num_training_steps $(($ITERS*2)), TBS=256, LR=3e-4; torch's AdamW betas
SUPERVISED = {"train.regime": "supervised", "train.optimizer": "adamw", "train.beta1": 0.9, "train.beta2": 0.999,
              "train.weight_decay": 0.01, "train.lr_decay": "linear", "train.lr_decay_span": 2.0,
              "train.lr_min_ratio": 0.0, "train.lr_counter": "after", "train.batch_size": 256, "train.lr": 3e-4,
              "train.lr_warmup_steps": 1000,
              "train.ema": False, "train.loss": "softmax", "data.ca1d.radius": 2, "data.ca1d.width": 20,
              "data.ca1d.context": 10, "data.ca1d.determined": False}
# GPTNeoXForCausalLM of create_config.py: hidden 128, 4 layers, 4 heads, intermediate 4 x 128, rotary_pct 0.25
NEOX = {"model.family": "neox", "model.n_layers": 4, "model.hidden": 128, "model.n_heads": 4, "model.expansion": 4.0,
        "model.rotary_pct": 0.25, "model.act": "off"}
# TRL GRPOTrainer (train_grpo_gpt_neox.py): LR 3e-4, max_steps = ITERS = 10000, sampled token by token (generate),
# TRL's defaults for what the script leaves unset
GRPO = {"train.regime": "grpo", "train.optimizer": "adamw", "train.beta1": 0.9, "train.beta2": 0.999,
        "train.weight_decay": 0.0, "train.lr_decay": "linear", "train.lr_decay_span": 1.0, "train.lr_min_ratio": 0.0,
        "train.lr_counter": "after", "train.lr_warmup_steps": 0, "train.grad_clip": 1.0, "train.lr": 3e-4,
        "train.steps": 10000,
        "grpo.sampling": "autoregressive"}

REFERENCE = {  # member of `ponder study ca1d --scale gpu` -> (the script, the values it sets)
    "neox": ("scripts/cell_autom/finetune_ca_gptneox.sh", {
        **SUPERVISED, **NEOX, "train.steps": 40000, "train.grad_clip": 0.5, "data.ca1d.layout": "causal"}),
    "neox-k2": ("scripts/cell_autom/finetune_ca_gptneox.sh (SHIFTS=(2))", {
        **SUPERVISED, **NEOX, "train.steps": 40000, "train.grad_clip": 0.5, "data.ca1d.k": 2}),
    "neox-L8": ("scripts/cell_autom/finetune_ca_gptneox_depth.sh (NUM_LAYERS 8)", {
        **SUPERVISED, **NEOX, "model.n_layers": 8, "train.steps": 40000, "train.grad_clip": 0.5}),
    "neox-L11": ("scripts/cell_autom/finetune_ca_gptneox_depth.sh (NUM_LAYERS 11)", {
        **SUPERVISED, **NEOX, "model.n_layers": 11, "train.steps": 40000, "train.grad_clip": 0.5}),
    "lstm": ("scripts/cell_autom/finetune_ca_lstm.sh", {
        **SUPERVISED, "model.family": "lstm", "model.n_layers": 4, "model.hidden": 128, "train.steps": 30000,
        "train.lr": 1e-3, "train.lr_warmup_steps": 0, "train.grad_clip": 1.0}),
    "mamba": ("scripts/finetune_ca_mamba.sh", {
        **SUPERVISED, "model.family": "mamba", "model.n_layers": 4, "model.hidden": 128, "model.act": "layer",
        "model.act_max_hop": 4, "model.act_penalty": 3e-4, "data.ca1d.layout": "segments", "train.steps": 40000,
        "train.grad_clip": 0.1}),
    "armt": ("scripts/cell_autom/finetune_ca_armt.sh", {
        **SUPERVISED, "model.family": "armt", "model.n_layers": 4, "model.hidden": 128, "model.n_heads": 4,
        "model.mem_tokens": 16, "model.mem_dim": 32, "model.dpfp_nu": 3, "data.ca1d.layout": "segments",
        "train.steps": 40000, "train.grad_clip": 0.1}),
    "neox-act2": ("scripts/cell_autom/finetune_gpt_neox_1s_act_full.sh", {
        **SUPERVISED, **NEOX, "model.act": "model", "model.act_max_hop": 2, "model.act_halting": "adaptive",
        "model.act_penalty": 3e-4, "train.steps": 30000, "train.grad_clip": 0.1}),
    "neox-act4": ("scripts/cell_autom/finetune_gpt_neox_2s_act_full.sh", {
        **SUPERVISED, **NEOX, "model.act": "model", "model.act_max_hop": 4, "model.act_halting": "adaptive",
        "model.act_penalty": 3e-4, "train.steps": 30000, "train.grad_clip": 0.1}),
    "neox-cd": ("scripts/cell_autom/finetune_gpt_neox_1s_act_full_constant_depth3.sh", {
        **SUPERVISED, **NEOX, "model.act": "model", "model.act_max_hop": 3, "model.act_halting": "constant",
        "train.steps": 30000, "train.grad_clip": 1.0}),
    "neox-cot": ("scripts/ca_oo/finetune_gpt_neox_cot.sh", {
        **SUPERVISED, **NEOX, "data.ca1d.layout": "cot", "train.steps": 40000, "train.grad_clip": 1.0}),
    "neox-oo": ("scripts/ca_oo/finetune_gpt_neox.sh", {
        **SUPERVISED, **NEOX, "data.ca1d.layout": "oo", "train.steps": 40000, "train.grad_clip": 1.0}),
    "neox-grpo": ("scripts/ca_grpo/finetune_ca_gptneox_grpo_from_cpt.sh", {
        **GRPO, **NEOX, "train.batch_size": 2048, "grpo.group_size": 8, "grpo.beta": 0.01}),
    "neox-grpo-scratch": ("scripts/ca_grpo/finetune_ca_gptneox_grpo.sh", {
        **GRPO, **NEOX, "train.batch_size": 1024, "grpo.group_size": 4, "grpo.beta": 0.0}),
}


@functools.lru_cache(maxsize=None)
def gpu_members(per_k: bool = False) -> dict[str, tuple]:
    """member name -> (its resolved config, Member, regime) at the GPU scale, no budget given."""
    plan, chosen, steps, minutes = study.plan_study("out", 0, 0.0, study.STUDY_MODELS, study.REGIMES, "gpu", [],
                                                    per_k)
    return {m.name: (resolve(m.preset, [*plan.common, *m.overrides, *m.budget(steps, minutes)]), m, r)
            for m, r in chosen}


def mismatches(members: dict[str, tuple]) -> list[str]:
    """'member key: ponder X, script Y' for every value of REFERENCE the resolved members do not hold."""
    out = []
    for name, (script, values) in REFERENCE.items():
        if name not in members:
            out.append(f"{name}: no such member ({script})")
            continue
        cfg = members[name][0]
        out += [f"{name} {key}: ponder {value_at(cfg, key)!r}, {script} {want!r}" for key, want in values.items()
                if value_at(cfg, key) != want]
    return out


def test_every_gpu_member_holds_its_reference_scripts_values():
    assert mismatches(gpu_members()) == []


def _with(cfg, key: str, value):
    section, *rest = key.split(".")
    if not rest[1:]:
        return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{rest[0]: value})})
    sub = getattr(cfg, section)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(
        sub, **{rest[0]: dataclasses.replace(getattr(sub, rest[0]), **{rest[1]: value})})})


WORDS = ("causal", "segments", "layer", "model", "constant", "adaptive", "grpo", "supervised", "cosine", "adam_atan2",
         "parallel", "stablemax", "before", "after", "lstm", "mamba", "neox")


def planted(cfg, key: str):
    """cfg with the value at `key` changed to another valid one."""
    value = value_at(cfg, key)
    if isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, (int, float)):
        candidates = [type(value)(value + 1), type(value)(value / 2) if value else type(value)(1) / 2]
    else:
        candidates = [w for w in WORDS if w != value]
    for candidate in candidates:
        try:
            return _with(cfg, key, candidate)
        except UserError:  # refused by the config's checks: try the next
            continue
    raise AssertionError(f"no valid value other than {value!r} for {key}")


@pytest.mark.parametrize("name, key", [(n, k) for n, (_, values) in REFERENCE.items() for k in values])
def test_a_planted_change_of_any_value_is_named(name, key):
    members = gpu_members()
    cfg, member, regime = members[name]
    changed = planted(cfg, key)
    assert value_at(changed, key) != value_at(cfg, key)
    assert [m for m in mismatches({**members, name: (changed, member, regime)}) if m.startswith(f"{name} {key}:")]


def test_a_planted_change_in_a_preset_file_or_the_scale_fails(tmp_path, monkeypatch):
    """The same check read from the files: a changed clip in the GPT-NeoX preset, a changed hop in the GPU scale."""
    presets = tmp_path / "presets"
    shutil.copytree(config.PRESET_DIR, presets)
    neox = presets / "ca1d-neox.yaml"
    neox.write_text(neox.read_text().replace("grad_clip: 0.5 ", "grad_clip: 1.0 "))
    scale = presets / "studies" / "ca1d-gpu.yaml"
    scale.write_text(scale.read_text().replace("act_hops: [2, 4]", "act_hops: [2, 3]"))
    monkeypatch.setattr(config, "PRESET_DIR", presets)
    monkeypatch.setattr(study, "PRESET_DIR", presets)
    monkeypatch.setitem(study.SCALES, "gpu", study.load_scale("gpu"))
    found = mismatches(gpu_members.__wrapped__())
    assert "neox train.grad_clip: ponder 1.0, scripts/cell_autom/finetune_ca_gptneox.sh 0.5" in found
    assert any(m.startswith("neox-act4: no such member") for m in found)


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_grpos_control_is_grpo_with_the_supervised_loss(scale):
    """The control member: the same start, data and optimiser as GRPO, its prompts per step (completions / group)
    as batch, the supervised loss, and as many steps as GRPO took (Member.steps_of)."""
    plan, chosen, steps, minutes = study.plan_study("out", 0, 0.0, ("neox",), ("per-k", "fixed", "grpo",
                                                                               "grpo-control"), scale)
    cfgs = {m.name: (resolve(m.preset, [*plan.common, *m.overrides, *m.budget(steps, minutes)]), m) for m, _ in chosen}
    (grpo, g), (control, c) = cfgs["neox-grpo"], cfgs["neox-grpo-control"]
    assert c.steps_of == "neox-grpo" and control.train.regime == "supervised" and grpo.train.regime == "grpo"
    assert control.train.init == grpo.train.init and grpo.train.init.endswith("neox-gen")
    assert control.train.batch_size == grpo.train.batch_size // grpo.grpo.group_size
    for key in ("lr", "lr_warmup_steps", "lr_decay", "lr_decay_span", "lr_min_ratio", "optimizer", "beta1", "beta2",
                "weight_decay", "grad_clip", "seed", "dtype", "eval_every", "ema"):
        assert getattr(control.train, key) == getattr(grpo.train, key), key
    assert control.model == grpo.model and control.data == grpo.data and grpo.data.ca1d.layout == "generate"
    assert not control.train.ema  # GRPO evaluates the weights themselves; the control's are not averaged either
    names = [m.name for m, _ in chosen]
    assert names.index("neox-gen") < names.index("neox-grpo") < names.index("neox-grpo-control")


def test_per_k_trains_one_fixed_model_per_k():
    members = gpu_members(per_k=True)
    for family in ("neox", "lstm", "mamba", "armt"):
        assert family not in members  # the mixed-k (adaptive) variant is replaced
        for k in (1, 2, 3, 4):
            cfg, _, regime = members[f"{family}-k{k}"]
            assert cfg.data.ca1d.k == k and cfg.model.family == family and regime == "per-k"
    assert members["neox-k3"][0].train == gpu_members()["neox"][0].train  # the same script's values at every k


def hf_linear(update: int, base: float, warmup: int, total: int) -> float:
    """transformers' get_linear_schedule_with_warmup, as the reference's trainer steps it (optimizer.step(), then
    lr_scheduler.step()): update n (1-based) uses the factor at scheduler step n - 1."""
    s = update - 1
    factor = s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    return base * factor


@pytest.mark.parametrize("name", ["neox", "lstm", "neox-act2", "neox-grpo"])
def test_the_learning_rate_follows_the_reference_schedule_at_every_step(name):
    from ponder.optim import set_lr

    cfg = gpu_members()[name][0]
    tc = cfg.train
    total = 2 * tc.steps if tc.regime == "supervised" else tc.steps  # --num_training_steps $(($ITERS*2)); TRL max_steps

    class Opt:
        param_groups = [{}]

    for update in (1, 2, tc.lr_warmup_steps, tc.lr_warmup_steps + 1, tc.steps // 2, tc.steps):
        if update >= 1:
            assert math.isclose(set_lr(update, tc, Opt()), hf_linear(update, tc.lr, tc.lr_warmup_steps, total),
                                rel_tol=1e-12, abs_tol=1e-15), update
    if name == "neox":  # 40k iterations of 80k scheduled: the lr ends near half its peak
        assert math.isclose(set_lr(tc.steps, tc, Opt()), 3e-4 * 40001 / 79000, rel_tol=1e-12)


def test_dry_run_prints_every_member_with_its_settings_and_writes_nothing(tmp_path, capsys):
    from ponder.cli import main

    out = tmp_path / "study"
    regimes = ",".join(study.REGIMES)  # the default set and the rest (oo, grpo-scratch)
    assert main(["study", "ca1d", "--out", str(out), "--scale", "gpu", "--regimes", regimes, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    for name in REFERENCE:
        assert f"\n{name} (" in text, name
    act2 = text.split("\nneox-act2 (")[1].split("\n")[1]
    assert "model.act=model" in act2 and "model.act_max_hop=2" in act2 and "train.steps=30000" in act2
    assert "train.lr_decay_span=2.0" in act2 and "train.beta2=0.999" in act2 and "train.grad_clip=0.1" in act2
    assert "steps: as many as neox-grpo" in text
