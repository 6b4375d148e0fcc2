"""The behaviour fingerprint: fixed tiny runs through the CLI, hashed, so that a refactor can show it changed nothing.

    python bench/fingerprint.py OUT            # fingerprint of the ponder that `python -m ponder` imports here
    PYTHONPATH=/path/to/other/checkout python bench/fingerprint.py OUT2   # another checkout, same interpreter

Three runs, each seeded, in float32 on one thread (PONDER_AUTO_DTYPE=float32, train.threads=1): the demo's TRM on
generated Sudoku (train with evaluations during training, then `ponder eval` with pictures), GPT-NeoX on the 1dCA
task (`ca1d-neox`, tiny), and GRPO from that checkpoint. Printed, one line each: the SHA-256 of the trained weights
(model and EMA safetensors, tensor by tensor), of metrics.jsonl with timing fields removed, of results.json without
paths and timings, of the evaluation table as printed, and of every PNG's pixels (decoded, so metadata such as a
matplotlib version string does not count). Two checkouts that print the same lines train the same weights and
produce the same metrics, tables and figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

TIMING = ("elapsed", "per_s", "seconds", "time", "wall", "speed", "minutes")
ADDED = ("examples_seen",)  # fields added to metrics.jsonl since the first fingerprint (issue 29: eval rows record it)
PATHLIKE = ("checkpoint", "data", "run", "path")
TINY = ["train.device=cpu", "train.threads=1", "train.max_minutes=0", "train.checkpoint_every=0", "train.log_every=2"]
DEMO = ["train.steps=6", "train.eval_every=3", "data.sudoku.train_size=200", "data.sudoku.test_size=16", *TINY]
NEOX = ["train.steps=6", "train.batch_size=16", "model.hidden=32", "model.n_heads=2", "data.ca1d.train_size=400",
        "data.ca1d.test_size=64", "train.eval_every=3", "train.lr_warmup_steps=2", *TINY]
GRPO = ["train.regime=grpo", "train.steps=3", "train.batch_size=8", "grpo.group_size=4", "train.eval_every=3", *TINY]


def ponder(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PONDER_AUTO_DTYPE": "float32"}
    done = subprocess.run([sys.executable, "-m", "ponder", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"ponder {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def weights(path: Path) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + tensors[name].contiguous().view(-1).view(dtype=__import__("torch").uint8)
                 .numpy().tobytes())
    return h.hexdigest()[:16]


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in ADDED and not any(t in k for t in TIMING)
                and not any(k == p or k.endswith("_" + p) for p in PATHLIKE)}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def metrics(path: Path) -> str:
    rows = [untimed(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return digest(json.dumps(rows, sort_keys=True).encode())


def pixels(path: Path) -> str:
    import matplotlib.image

    return digest(matplotlib.image.imread(str(path)).tobytes())


def table(stdout: str) -> str:
    keep = [line for line in stdout.splitlines() if not line.startswith(("wrote", "report:"))]
    return digest("\n".join(keep).encode())


def fingerprint_run(name: str, run: Path, lines: list[str]) -> None:
    ckpt = max((run / "ckpt").iterdir())
    lines.append(f"{name} weights: {weights(ckpt / 'model.safetensors')}")
    if (ckpt / "ema.safetensors").exists():
        lines.append(f"{name} ema weights: {weights(ckpt / 'ema.safetensors')}")
    lines.append(f"{name} metrics.jsonl (untimed): {metrics(run / 'metrics.jsonl')}")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    lines: list[str] = []
    ponder(["train", "demo", "--out", "demo", *DEMO], out)
    fingerprint_run("demo", out / "demo", lines)
    done = ponder(["eval", "demo", "--out", "demo-eval", "--pictures", "1", "eval.max_examples=16"], out)
    lines.append(f"demo eval table: {table(done.stdout)}")
    lines.append(f"demo results.json: {digest(json.dumps(untimed(json.loads((out / 'demo-eval' / 'results.json').read_text())), sort_keys=True).encode())}")
    for png in sorted((out / "demo-eval").glob("*.png")):
        lines.append(f"demo {png.name} pixels: {pixels(png)}")
    ponder(["train", "ca1d-neox", "--out", "neox", *NEOX], out)
    fingerprint_run("neox", out / "neox", lines)
    env = {**os.environ, "PONDER_AUTO_DTYPE": "float32"}
    older = subprocess.run([sys.executable, "-m", "ponder", "info", "ca1d-neox", "train.init=x"], cwd=out, env=env,
                           capture_output=True).returncode != 0  # before the rename the key was grpo.init
    ponder(["train", "ca1d-neox", "--out", "grpo", *NEOX[1:], *GRPO, f"{'grpo' if older else 'train'}.init=neox"], out)
    fingerprint_run("grpo", out / "grpo", lines)
    text = "\n".join(lines) + "\n"
    (out / "fingerprint.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    main(Path(sys.argv[1]).resolve())
