"""Checkpoints of the official TRM, HRM and URM code, imported into ponder runs (`ponder import`).

The official `pretrain.py` scripts save the state_dict of the loss head wrapping the model, `ACTLossHead(model)`,
and by default of its `torch.compile` wrapper: every key starts with `_orig_mod.model.` (or `model.` without
compile). TRM and HRM save the flat state_dict; URM saves {"step", "model_state_dict", "optimizer_states",
"rng_state"}. TRM's saved weights are its EMA weights. The name map to ponder:

    inner.embed_tokens.embedding_weight      embed_tokens.weight
    inner.lm_head.weight, inner.q_head.*     lm_head.weight, q_head.*
    inner.puzzle_emb.weights                 puzzle_emb.weight  (the sparse puzzle-identifier table, a buffer)
    inner.embed_pos.embedding_weight         embed_pos          (learned positions)
    TRM inner.H_init / inner.L_init          y_init / z_init
    HRM inner.H_init / inner.L_init          H_init / L_init
    URM inner.init_hidden                    h_init
    TRM inner.L_level.layers.i. / URM inner.layers.i.        blocks.i.
    HRM inner.H_level.layers.i. / inner.L_level.layers.i.    H_level.i. / L_level.i.
    block self_attn.qkv_proj / self_attn.o_proj              attn.qkv / attn.o
    block mlp.gate_up_proj / mlp.down_proj (mlp_t. the same) mlp.gate_up / mlp.down
    URM block mlp.dwconv                                     mlp.conv

Everything is cast to float32, ponder's storage dtype (URM keeps its depthwise conv in bfloat16; bf16 runs store the
initial states in bfloat16): the values are exact in float32. Checkpoints are read with `weights_only=True`, so a
file that holds code is refused, never run.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ponder import UserError, checkpoint
from ponder.config import Config, resolve
from ponder.models import build_model, count_params
from ponder.run import RunLog

FAMILIES = ("trm", "hrm", "urm")
WRAPPERS = ("_orig_mod.", "model.")  # torch.compile's wrapper, then ACTLossHead's `model`

_COMMON = {"inner.embed_tokens.embedding_weight": "embed_tokens.weight", "inner.lm_head.weight": "lm_head.weight",
           "inner.q_head.weight": "q_head.weight", "inner.q_head.bias": "q_head.bias",
           "inner.puzzle_emb.weights": "puzzle_emb.weight", "inner.embed_pos.embedding_weight": "embed_pos"}
_STATES = {"trm": {"inner.H_init": "y_init", "inner.L_init": "z_init"},
           "hrm": {"inner.H_init": "H_init", "inner.L_init": "L_init"},
           "urm": {"inner.init_hidden": "h_init"}}
_STACKS = {"trm": {"inner.L_level.layers.": "blocks."}, "hrm": {"inner.H_level.layers.": "H_level.",
                                                               "inner.L_level.layers.": "L_level."},
           "urm": {"inner.layers.": "blocks."}}
_BLOCK = {"self_attn.qkv_proj.": "attn.qkv.", "self_attn.o_proj.": "attn.o.", "mlp.gate_up_proj.": "mlp.gate_up.",
          "mlp.down_proj.": "mlp.down.", "mlp_t.gate_up_proj.": "mlp_t.gate_up.", "mlp_t.down_proj.": "mlp_t.down.",
          "mlp.dwconv.": "mlp.conv."}


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of an official checkpoint file, keys as saved (TRM/HRM flat, URM under model_state_dict)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated, foreign or code-carrying file
        raise UserError(f"{path}: not a readable official checkpoint ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None
    if isinstance(data, dict) and "model_state_dict" in data:  # URM's layout
        data = data["model_state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path}: not an official checkpoint (expected a state_dict of tensors, as pretrain.py saves)")
    return data


def ponder_name(key: str, family: str) -> str | None:
    """The ponder state-dict name of an official key, or None when the key has no place in ponder."""
    for prefix in WRAPPERS:
        key = key.removeprefix(prefix)
    if key in _COMMON:
        return _COMMON[key]
    if key in _STATES[family]:
        return _STATES[family][key]
    for stack, target in _STACKS[family].items():
        m = re.fullmatch(re.escape(stack) + r"(\d+)\.(.+)", key)
        if m:
            for old, new in _BLOCK.items():
                if m.group(2).startswith(old):
                    return f"{target}{m.group(1)}.{new}{m.group(2)[len(old):]}"
    return None


def to_ponder(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Official tensors -> ponder names, float32. A key with no ponder name is a UserError naming it."""
    if family not in FAMILIES:
        raise UserError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    out = {}
    for key, value in state.items():
        name = ponder_name(key, family)
        if name is None:
            raise UserError(f"official tensor {key} has no counterpart in ponder's {family.upper()} (is --family "
                            f"right?)")
        out[name] = value.detach().to(torch.float32) if value.is_floating_point() else value
    return out


def dataset_shape(weights: dict[str, torch.Tensor], cfg: Config, data: str | None) -> tuple[int, int, int]:
    """(vocab_size, seq_len, num_puzzle_identifiers) the imported model is built with: the dataset's when `data` is
    given, checked against the checkpoint's token and puzzle tables; otherwise the checkpoint's tables and the
    preset task's sequence length."""
    vocab = int(weights["embed_tokens.weight"].shape[0])
    ids = int(weights["puzzle_emb.weight"].shape[0]) if "puzzle_emb.weight" in weights else 1
    if not data:
        from ponder.tasks import get_task

        return vocab, get_task(cfg.data).metadata().seq_len, ids
    from ponder.tasks.dataset import read_metadata

    meta = read_metadata(data, "test")
    if meta.vocab_size != vocab:
        raise UserError(f"{data}: vocabulary {meta.vocab_size}, but the checkpoint's token table has {vocab} rows")
    if cfg.model.puzzle_emb and meta.num_puzzle_identifiers != ids:
        raise UserError(f"{data}: {meta.num_puzzle_identifiers} puzzle identifiers, but the checkpoint's puzzle table "
                        f"has {ids} rows: its rows are the identifiers of the dataset it was trained on (build the "
                        f"data with the same builder, options and seed)")
    return vocab, meta.seq_len, ids


def import_checkpoint(path: str | Path, family: str, preset: str, overrides: list[str], out: str | Path,
                      data: str | None = None) -> Path:
    """`ponder import`: an official checkpoint -> a ponder run directory (config.yaml, ckpt/step_00000000 with the
    weights, no training state) that `ponder eval` reads like any run. Returns the checkpoint directory."""
    cfg = resolve(preset, overrides)
    if cfg.model.family != family:
        raise UserError(f"--family {family} but the preset's model.family is {cfg.model.family} (give a {family} "
                        f"preset or model.family={family})")
    weights = to_ponder(read_official(path), family)
    vocab, seq_len, ids = dataset_shape(weights, cfg, data)
    model = build_model(cfg.model, vocab, seq_len, ids)
    checkpoint.load_into(model, weights, str(path))
    out = Path(out)
    RunLog(out, cfg).close()  # config.yaml (and empty logs) like a trained run
    meta = {"vocab_size": vocab, "seq_len": seq_len, "num_puzzle_identifiers": ids, "params": count_params(model),
            "data": str(Path(data).resolve()) if data else "", "imported_from": str(Path(path).resolve()),
            "family": family, "metrics": {}}
    return checkpoint.save(out, 0, model.state_dict(), None, None, cfg, meta)
