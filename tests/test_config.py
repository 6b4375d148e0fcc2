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
