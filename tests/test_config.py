"""Config: presets parse, overrides are typed, unknown keys are named errors."""

import pytest

from ponder import UserError
from ponder.config import Config, dump_yaml, from_dict, preset_names, resolve, to_dict
from ponder.models import build_model, count_params
from ponder.tasks import get_task


@pytest.mark.parametrize("name", [n for n in preset_names() if not n.startswith("lm-")])  # lm-*: test_lm_train
def test_every_preset_parses_and_builds(name):
    cfg = resolve(name)
    meta = get_task(cfg.data).metadata()
    assert count_params(build_model(cfg.model, meta.vocab_size, meta.seq_len)) > 0


def test_paper_presets_match_the_paper():
    mlp = resolve("sudoku-extreme-trm-mlp")
    assert (mlp.model.n_latent, mlp.model.n_cycles, mlp.model.n_supervision) == (6, 3, 16)
    assert (mlp.train.batch_size, mlp.train.lr, mlp.train.weight_decay, mlp.train.ema_rate) == (768, 1e-4, 1.0, 0.999)
    assert count_params(build_model(mlp.model, 11, 81)) == 5_028_866
    assert count_params(build_model(resolve("sudoku-extreme-trm-att").model, 11, 81)) == 6_828_034


def test_overrides_are_typed():
    cfg = resolve("demo", ["model.hidden=32", "train.lr=3e-4", "train.ema=false", "data.sudoku.size=4"])
    assert cfg.model.hidden == 32 and cfg.train.lr == 3e-4 and cfg.train.ema is False and cfg.data.sudoku.size == 4
    assert isinstance(resolve("demo", ["train.lr=1"]).train.lr, float)  # int accepted where float is expected


@pytest.mark.parametrize("override,needle", [
    ("model.hiden=3", "unknown config key 'model.hiden'; valid keys: model.family, model.hidden"),
    ("trian.lr=3", "unknown config key 'trian'"),
    ("model.hidden=abc", "'model.hidden' expects int"),
    ("model.hidden=1.5", "'model.hidden' expects int"),
    ("train.ema=3", "'train.ema' expects bool"),
    ("model.mixer=conv", "model.mixer must be"),
    ("nonsense", "not of the form key=value"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(UserError, match=None) as e:
        resolve("demo", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'nope'; shipped presets: .*demo"):
        resolve("nope")


def test_round_trip_through_yaml():
    import yaml

    cfg = resolve("demo", ["model.hidden=48"])
    assert from_dict(Config, yaml.safe_load(dump_yaml(cfg))) == cfg
    assert from_dict(Config, to_dict(cfg)) == cfg


# The paper presets against the official recipes (../shared/reference/trm_hrm.md section 6, urm_retrofit.md 1.2-1.4):
# changing one of these values in a shipped preset fails here.
OFFICIAL = {"model.hidden": 512, "model.n_heads": 8, "model.n_supervision": 16, "model.halt_exploration_prob": 0.1,
            "train.batch_size": 768, "train.lr": 1e-4, "train.lr_warmup_steps": 2000, "train.lr_min_ratio": 1.0,
            "train.beta1": 0.9, "train.beta2": 0.95, "train.optimizer": "adam_atan2", "train.loss": "stablemax",
            "train.halt_loss_weight": 0.5, "train.grad_clip": 0.0, "train.lr_counter": "before"}
TRM = {"model.family": "trm", "model.n_layers": 2, "model.n_cycles": 3, "model.puzzle_emb_len": 16,
       "train.ema": True, "train.ema_rate": 0.999}
SUDOKU = {"train.weight_decay": 1.0, "train.puzzle_emb_lr": 1e-4, "train.puzzle_emb_weight_decay": 1.0}
ARC = {"train.weight_decay": 0.1, "train.puzzle_emb_lr": 1e-2, "train.puzzle_emb_weight_decay": 0.1}
HRM = {"model.family": "hrm", "model.n_layers": 4, "model.n_cycles": 2, "model.n_latent": 2, "model.puzzle_emb_len": 1,
       "model.act_continue": True, "train.ema": False}
URM = {"model.family": "urm", "model.n_layers": 4, "model.loops": 12, "model.no_grad_loops": 6,
       "model.ffn": "conv_swiglu", "model.conv_kernel": 2, "model.conv_placement": "ffn", "model.puzzle_emb_len": 1,
       "train.ema": True, "train.ema_rate": 0.999, "train.lr_counter": "after"}
PINNED = {
    "sudoku-extreme-trm-mlp": {**TRM, **SUDOKU, "model.n_latent": 6, "model.mixer": "mlp", "model.pos_encoding": "none",
                               "train.steps": 65104},
    "sudoku-extreme-trm-att": {**TRM, **SUDOKU, "model.n_latent": 6, "model.mixer": "attention",
                               "model.pos_encoding": "rope", "train.steps": 65104},
    "maze-hard-trm-att": {**TRM, **SUDOKU, "model.n_latent": 4, "model.mixer": "attention",
                          "model.pos_encoding": "rope"},  # the maze command sets the Sudoku decay values too
    "arc1-trm-att": {**TRM, **ARC, "model.n_latent": 4, "model.pos_encoding": "rope"},
    "arc2-trm-att": {**TRM, **ARC, "model.n_latent": 4, "model.pos_encoding": "rope"},
    "sudoku-extreme-hrm": {**HRM, **SUDOKU, "train.steps": 26041},
    "arc1-hrm": {**HRM, **ARC},
    "sudoku-extreme-urm": {**URM, **SUDOKU, "train.batch_size": 128},
    "arc1-urm": {**URM, **ARC},
    "arc2-urm": {**URM, **ARC, "train.optimizer": "muon"},
}


@pytest.mark.parametrize("name", PINNED)
def test_paper_presets_keep_the_official_recipes(name):
    values = to_dict(resolve(name))
    for key, want in {**OFFICIAL, **PINNED[name]}.items():
        section, field = key.split(".")
        assert values[section][field] == want, f"{name}: {key} is {values[section][field]!r}, official {want!r}"


def test_on_off_yes_no_stay_strings():
    """YAML 1.1 would read off/on/yes/no as booleans: `train.compile=off` and `model.act: off` are strings here,
    true/false are still booleans."""
    cfg = resolve("demo", ["train.compile=off", "model.act=off", "train.ema=false"])
    assert cfg.train.compile == "off" and cfg.model.act == "off" and cfg.train.ema is False
    from ponder.config import load_yaml

    assert load_yaml("a: off\nb: yes\nc: true\nd: 1e-3\ne: 2") == {"a": "off", "b": "yes", "c": True, "d": "1e-3", "e": 2}
