"""Complete, resumable checkpoints, written atomically.

    <run>/ckpt/step_00001234/
      model.safetensors   raw weights + buffers (initial states, puzzle-identifier table)
      ema.safetensors     the same with EMA weights (what evaluation loads, as the official checkpoints are EMA)
      state.pt            optimiser state, step, RNG states, ACT carry, data position (for --resume; absent in a
                          checkpoint imported from the official code, which holds weights only)
      config.yaml         the fully resolved config
      meta.json           step, the run's id, sha256 of every other file, dataset shape (vocab, seq_len,
                          identifiers), weight count, last metrics

A checkpoint is written into a temporary directory and renamed into place, so a crash or Ctrl-C mid-write never
leaves a half checkpoint under a real name, and the previous good one stays until the new one is complete.

A checkpoint knows whose it is and what it holds: meta.json records the id of the run that wrote it (RUN/.ponder,
`run_id`), so resuming refuses a checkpoint folder copied from another run, and a folder whose name is not its step;
and the sha256 of each file, verified whenever the file is loaded (eval, solve, resume, train.init), so a flipped bit
is one line naming the file, never a silently changed weight. Checkpoints of earlier versions (no hashes, no id) load
as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ponder import UserError
from ponder.config import Config, dump_yaml, from_dict, load_yaml, upgrade
from ponder.files import (fsync_dir, fsync_tree, new_marker, out_of_space, read_json, read_marker, refuse_link,
                          usual_permissions, write_marker)

CKPT_DIR = "ckpt"


HASHED = ("model.safetensors", "ema.safetensors", "state.pt", "config.yaml")  # meta.json's sha256 covers these


def run_id(run_dir: Path) -> str:
    """The id of the run in `run_dir` (its RUN/.ponder marker: kind "run", a random id written once; made when
    missing: a new run, an import, or a run of an earlier ponder). Call it as the run's owner."""
    marker = read_marker(run_dir)
    if marker is None:
        marker = new_marker(run_dir, "run")
    elif marker["kind"] != "run":
        raise UserError(f"{run_dir}: holds a ponder {marker['kind']}, not a run; give another --out")
    return marker["id"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_verified(ckpt: Path, name: str) -> bytes:
    """The bytes of a checkpoint's file, checked against the sha256 its meta.json records (checkpoints of earlier
    versions record none and are read as they are); a mismatch is a UserError naming the file."""
    path = Path(ckpt) / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror})") from None
    hashes = load_meta(ckpt).get("sha256") if (Path(ckpt) / "meta.json").exists() else None
    if isinstance(hashes, dict) and name in hashes and hashlib.sha256(data).hexdigest() != hashes[name]:
        raise UserError(f"{path}: corrupt (its sha256 differs from the one meta.json recorded when it was written); "
                        f"use another checkpoint of the run")
    return data


def check_name(ckpt: Path) -> None:
    """A step folder's name must be its step (a renamed or copied folder would reorder the run's checkpoints)."""
    step = load_meta(ckpt).get("step")
    if ckpt.name.startswith("step_") and ckpt.name != f"step_{step:08d}":
        raise UserError(f"{ckpt}: its name says step {ckpt.name[5:].lstrip('0') or 0} but meta.json says step {step} "
                        f"(renamed or copied?); move it out of {ckpt.parent}")


def step_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}"


def weight_rms(sd: dict) -> float:
    """The root mean square of every floating-point weight: the measure of a checkpoint's sanity (a diverging run's
    weights blow up long before its loss turns NaN)."""
    total, count = 0.0, 0
    for v in sd.values():
        if torch.is_floating_point(v):
            total += float(v.detach().double().pow(2).sum())
            count += v.numel()
    return (total / max(1, count)) ** 0.5


def save(run_dir: Path, step: int, model_sd: dict, ema_sd: dict | None, state: dict | None, cfg: Config, meta: dict,
         keep: int = 2) -> Path:
    """Write checkpoint `step` of a run (state None: weights only, as an imported checkpoint), files and folder
    flushed to disk before the rename, and keep the newest `keep`, plus the newest sane one (`sane`) when those are
    not: a run going bad never prunes its last good state."""
    meta = {**meta, "weight_rms": weight_rms(model_sd), "run_id": run_id(run_dir)}
    _record_first(run_dir, step, meta["weight_rms"])
    root = Path(run_dir) / CKPT_DIR
    refuse_link(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_path(run_dir, step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_sd.items()}, str(tmp / "model.safetensors"))
        if ema_sd is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema_sd.items()}, str(tmp / "ema.safetensors"))
        if state is not None:
            torch.save(state, tmp / "state.pt")
        (tmp / "config.yaml").write_text(dump_yaml(cfg))
        hashes = {name: sha256(tmp / name) for name in HASHED if (tmp / name).exists()}
        (tmp / "meta.json").write_text(json.dumps({"step": step, **meta, "sha256": hashes}, indent=2))
        for f in tmp.iterdir():  # safetensors writes 0600 files
            usual_permissions(f)
        usual_permissions(tmp, folder=True)
        fsync_tree(tmp)
    except BaseException as e:  # a full disk, Ctrl-C: the half-written folder goes, the previous one stays newest
        full = out_of_space(e, root)  # torch and safetensors say it their own ways: one OSError(ENOSPC)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from None
        raise
    if final.exists():  # re-saving a step (e.g. Ctrl-C right after a periodic save): swap, then drop the old one
        old = root / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    found = list_checkpoints(run_dir)
    keep_too = newest_sane(run_dir, cfg.train.sane_weight_ratio)
    for stale in found[:-keep] if keep > 0 else []:
        if stale != keep_too:  # renamed out of the step names first: a kill mid-delete leaves no half step folder
            gone = root / f".pruned-{stale.name}-{os.getpid()}"
            os.rename(stale, gone)
            shutil.rmtree(gone, ignore_errors=True)
    return final


def _record_first(run_dir: Path, step: int, rms: float) -> None:
    """The run's first checkpoint's figures, kept in its marker (RUN/.ponder "first"): the fixed reference of
    `newest_sane`, which pruning cannot move forward."""
    marker = read_marker(run_dir)
    if marker is not None and not isinstance(marker.get("first"), dict):
        marker["first"] = {"step": step, "weight_rms": rms}
        write_marker(run_dir, marker)


def newest_sane(run_dir: Path, ratio: float) -> Path | None:
    """The newest checkpoint whose training loss was finite and whose weight RMS is at most `ratio` times the
    run's first checkpoint's (recorded in RUN/.ponder when it was written; for a run of an earlier version, the
    oldest checkpoint still there). None when no checkpoint records both."""
    found = [(p, _meta_quietly(p)) for p in list_checkpoints(run_dir)]
    rms = [(p, m) for p, m in found if isinstance(m.get("weight_rms"), (int, float))]
    if not rms:
        return None
    try:
        recorded = (read_marker(run_dir) or {}).get("first", {}).get("weight_rms")
    except UserError:
        recorded = None
    first = recorded if type(recorded) in (int, float) else min(rms, key=lambda pm: pm[1].get("step", 0))[1]["weight_rms"]
    for p, m in reversed(rms):
        loss = m.get("metrics", {}).get("loss") if isinstance(m.get("metrics"), dict) else None
        finite = loss is None or (isinstance(loss, (int, float)) and loss == loss and abs(loss) != float("inf"))
        if finite and m["weight_rms"] <= ratio * max(first, 1e-12):
            return p
    return None


def _meta_quietly(ckpt: Path) -> dict:
    try:
        return load_meta(ckpt)
    except UserError:
        return {}


def recover(run_dir: Path) -> list[str]:
    """Clear what a killed `save` left in RUN/ckpt (call it holding the run's lock): a `.old-step_N-PID` folder (the
    previous copy of a step being re-saved) is put back when step_N is missing, else removed; `.tmp-*` folders (half
    written) and `.pruned-*` folders (an old checkpoint being deleted) are removed. Returns one note per folder, for
    stderr."""
    root = Path(run_dir) / CKPT_DIR
    notes = []
    if not root.is_dir():
        return notes
    for old in sorted(root.glob(".old-step_*")):
        final = root / old.name[len(".old-"):].rsplit("-", 1)[0]
        if not final.exists() and (old / "meta.json").exists():
            os.rename(old, final)
            notes.append(f"{final}: put back (a re-save of this step was killed between its two renames)")
        else:
            shutil.rmtree(old, ignore_errors=True)
            notes.append(f"{old}: removed (the replaced copy of {final.name}, left by a killed save)")
    for tmp in sorted(root.glob(".tmp-*")):
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        shutil.rmtree(tmp, ignore_errors=True)
        notes.append(f"{tmp}: removed ({size / 1e6:.1f} MB of a checkpoint write that was killed)")
    for pruned in sorted(root.glob(".pruned-*")):
        shutil.rmtree(pruned, ignore_errors=True)
        notes.append(f"{pruned}: removed (an old checkpoint whose pruning was killed)")
    return notes


def moved_aside(run_dir: Path) -> bool:
    """Whether a complete checkpoint waits in a `.old-step_*` folder (a re-save killed between its renames) for
    `recover` to put it back."""
    root = Path(run_dir) / CKPT_DIR
    return root.is_dir() and any((p / "meta.json").exists() for p in root.glob(".old-step_*"))


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []


def latest_for_resume(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir}: --resume given but the run holds no checkpoint")
    own = read_marker(run_dir)
    for ckpt in found:
        check_name(ckpt)
        theirs = load_meta(ckpt).get("run_id")
        if own is not None and isinstance(theirs, str) and theirs != own["id"]:
            raise UserError(f"{ckpt}: a checkpoint of another run (run id {theirs[:12]}; this run is {own['id'][:12]}, "
                            f"{run_dir}/.ponder); move it out of {run_dir}/{CKPT_DIR} to resume")
    return found[-1]


def find(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint or run directory")
    if (path / "meta.json").exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise UserError(f"{path}: not a checkpoint (no meta.json) and holds no checkpoints under {CKPT_DIR}/")
    check_name(found[-1])
    return found[-1]


def load_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str | Path) -> None:
    """Fill every tensor of `model` from `weights` (a checkpoint's, or an imported official one's); a missing,
    unexpected or mis-shaped tensor is a UserError naming it, with the shape each side has."""
    check_fit(model.state_dict(), weights, where)
    model.load_state_dict(weights)


def check_fit(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], where: str | Path) -> None:
    """UserError naming the first tensor of `weights` missing from, unexpected in or mis-shaped for a model's
    state dict `own` (whose tensors may live on the meta device: only names and shapes are read)."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing:
        raise UserError(f"{where}: no tensor for {missing[0]} ({len(missing)} missing; the checkpoint is of another "
                        f"architecture than this config's model)")
    if unexpected:
        raise UserError(f"{where}: tensor {unexpected[0]} has no place in this config's model ({len(unexpected)} "
                        f"unexpected; check model.* overrides, e.g. model.pos_encoding or model.n_layers)")
    for k, v in weights.items():
        if v.shape != own[k].shape:
            raise UserError(f"{where}: tensor {k} is {tuple(v.shape)} in the checkpoint but {tuple(own[k].shape)} in "
                            f"this config's model (check model.hidden, model.n_heads, model.expansion, "
                            f"model.puzzle_emb_len and the vocabulary/sequence length)")


def build_to_fit(build, weights: dict[str, torch.Tensor], where: str | Path) -> torch.nn.Module:
    """`build()`'s model filled from `weights`, built for real only once a first build on the meta device (names
    and shapes, no memory) fits them: a config that does not describe the checkpoint (a damaged config.yaml asking
    for a model of width 10^7) is one line, not minutes of allocation or an out-of-memory kill."""
    with torch.device("meta"):
        check_fit(build().state_dict(), weights, where)
    model = build()
    model.load_state_dict(weights)
    return model


def unwrapped(name: str) -> list[str]:
    """The plain model's names a tensor inside per-token ACT's wrappers may have had: without the per-layer wrapper
    (model.act=layer: `layers.3.layer.mlp` -> `layers.3.mlp`) or the whole-stack one (model.act=model, one module
    holding the layers: `layers.0.layers.3.mlp` -> `layers.3.mlp`)."""
    stack = re.sub(r"\.0\.layers\.(\d+)\.", r".\1.", name, count=1)
    return [n for n in (name.replace(".layer.", ".", 1), stack) if n != name]


def warm_start(model: torch.nn.Module, path: str | Path) -> dict:
    """train.init: fill `model` from the weights of another run or checkpoint (its EMA weights if it has them).
    Every tensor of the checkpoint must fit one of the model by name and shape, where a name inside ACT's wrappers
    also matches the plain model's (`unwrapped`); the model's tensors the checkpoint lacks keep their initialisation. Returns {"init": checkpoint, "init_examples": what it had drawn, "fresh":
    names left fresh}."""
    ckpt = find(path)
    weights = load_weights(ckpt, ema=True)
    own = model.state_dict()
    source = {}  # model name -> checkpoint name
    for name in own:
        match = next((n for n in (name, *unwrapped(name)) if n in weights), None)
        if match is not None:
            source[name] = match
    unplaced = sorted(set(weights) - set(source.values()))
    if unplaced:
        raise UserError(f"train.init={ckpt}: its tensor {unplaced[0]} has no place in this config's model "
                        f"({len(unplaced)} without one: another architecture?)")
    for name, match in source.items():
        if weights[match].shape != own[name].shape:
            raise UserError(f"train.init={ckpt}: tensor {match} is {tuple(weights[match].shape)} there but "
                            f"{tuple(own[name].shape)} in this config's model (model.hidden, n_heads, expansion or the "
                            f"vocabulary differ)")
    model.load_state_dict({**own, **{name: weights[match] for name, match in source.items()}})
    fresh = [name for name in own if name not in source]
    return {"init": str(ckpt), "init_examples": int(load_meta(ckpt).get("metrics", {}).get("examples_seen", 0)),
            "fresh": fresh}


def load_config(ckpt: Path) -> Config:
    data = read_verified(ckpt, "config.yaml")
    try:
        body = load_yaml(data.decode("utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise UserError(f"{ckpt}/config.yaml: unreadable ({e.__class__.__name__})") from None
    if not isinstance(body, dict):
        raise UserError(f"{ckpt}/config.yaml: expected a mapping of config sections")
    return from_dict(Config, upgrade(body))


def load_meta(ckpt: Path) -> dict:
    """meta.json: an object whose step, if any, is an integer."""
    try:
        meta = read_json(ckpt / "meta.json")
    except UserError as e:
        raise UserError(f"{ckpt}/meta.json: unreadable ({str(e).split(': ', 1)[-1]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step", 0), int):
        raise UserError(f"{ckpt}/meta.json: unreadable (expected an object with an integer step)")
    return meta


def load_weights(ckpt: Path, ema: bool = True) -> dict:
    path = ckpt / ("ema.safetensors" if ema and (ckpt / "ema.safetensors").exists() else "model.safetensors")
    data = read_verified(ckpt, path.name)
    try:
        return load_safetensors(data)
    except (OSError, SafetensorError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


STATE_NUMBERS = {"step": (int, 10**12), "elapsed": (float, 1e12), "examples_seen": (int, 10**15)}  # key: (type, max)


def load_state(ckpt: Path) -> dict:
    """A checkpoint's state.pt (every trainer's), its counters checked: `step`, `elapsed` (seconds) and
    `examples_seen`, where present, are finite numbers in 0..max (STATE_NUMBERS); the rest is checked by the trainer
    that restores it (`run.restoring`)."""
    path = ckpt / "state.pt"
    data = read_verified(ckpt, "state.pt")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(f"{path}: not a readable training state ({e.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a training state (holds a {type(state).__name__}, not a dict)")
    for key, (kind, high) in STATE_NUMBERS.items():
        value = state.get(key, 0)
        fits = type(value) is int or (kind is float and type(value) is float)
        if not (fits and 0 <= value <= high):  # NaN fails the range test too
            raise UserError(f"{path}: {key} must be a number in 0..{high:g}, got {str(value)[:40]!r}")
    return state
