"""The `ponder` command: thin; it parses, resolves the config and dispatches to the library.

    ponder demo                          train + evaluate the embedded CPU demo (generated Sudoku), ~10 minutes
    ponder data TASK --out DIR ...       build a dataset directory (sudoku | maze | ca1d | arc; HRM/TRM npy layout)
    ponder train PRESET [k=v ...]        train; --resume RUN continues a run exactly
    ponder eval CHECKPOINT [--data DIR]  test-time scaling table, adaptive halting, JSON + PNG
    ponder solve CHECKPOINT PUZZLE       a trained model's answer to your own puzzle (--trace: after every step)
    ponder import FILE --family F --preset P --out RUN   an official TRM/HRM/URM checkpoint as a ponder run
    ponder compare NAME=PRESET[,k=v] ... several models, same data and budget: one table and plot
    ponder study ca1d --out DIR --minutes M   the 1dCA study's table: every model x regime, one command
    ponder info PRESET [k=v ...]         resolved config and weight count
    ponder bench                         throughput and GFLOP/s against the machine's matmul ceiling
    ponder lm train|run PRESET [k=v ...] retrofitted recurrence on a pretrained LM (run = train + GSM8K R-sweep)
    ponder lm eval RUN [k=v ...]         GSM8K accuracy and perplexity against test-time recurrences R

Bad input (missing file, malformed row, unknown preset or key, a checkpoint that is not one) prints one line on
stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from ponder import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the whole usage block otherwise)
        where = "" if self.prog == "ponder" else f"{self.prog}: "  # main() prints "ponder: error:" already
        raise UserError(f"{where}{message} (see --help)")


# ---------------------------------------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from ponder.demo import run_demo
    from ponder.run import default_run_dir

    out = default_run_dir("demo", args.out)
    run_demo(out, args.overrides, args.minutes)
    _report(out)
    return 0


def cmd_data(args) -> int:
    from ponder.config import DataConfig
    from ponder.tasks import TASKS, build_dataset

    section = TASKS[args.task].config
    fields = {f.name for f in dataclasses.fields(section)}
    options = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    cfg = DataConfig(task=args.task, seed=args.seed, **{args.task: section(**options)})
    out = Path(args.out)
    if (out / "train" / "dataset.json").exists() and not args.force:
        raise UserError(f"{out}: already holds a dataset; pass --force to rebuild it in place")
    t = time.perf_counter()
    build_dataset(cfg, out)
    from ponder.tasks.dataset import read_metadata

    for split in ("train", "test"):
        m = read_metadata(out, split)
        print(f"{out / split}: {m.total_groups} groups, vocab {m.vocab_size}, seq_len {m.seq_len}")
    print(f"built in {time.perf_counter() - t:.1f}s")
    return 0


def _resume_overrides(args, command: str) -> list[str]:
    """`--resume RUN [k=v ...]`: every positional argument must be an override (the run keeps its preset)."""
    overrides = ([args.preset] if args.preset else []) + args.overrides
    if any("=" not in o for o in overrides):
        raise UserError(f"{command} --resume RUN takes only key=value overrides (the run keeps its preset)")
    return overrides


def cmd_train(args) -> int:
    from ponder import distributed
    from ponder.config import resolve
    from ponder.run import choose_run_dir, default_run_dir, fresh_run_dir, resumed_config
    from ponder.trainer import train

    resume = False
    if args.resume:
        cfg, run_dir, resume = resumed_config(args.resume, _resume_overrides(args, "ponder train"))
    else:
        if not args.preset:
            raise UserError("ponder train: give a PRESET (e.g. demo) or --resume RUN_DIR")
        cfg = resolve(args.preset, args.overrides)
        run_dir = None
    if args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # the convenience: re-launch this command under torchrun
        if cfg.train.batch_size % args.nproc:
            raise UserError(f"train.batch_size={cfg.train.batch_size} must be divisible by --nproc {args.nproc}")
        return _torchrun(args, run_dir or fresh_run_dir(default_run_dir(args.preset, args.out), cfg))
    run_dir = run_dir or choose_run_dir(default_run_dir(args.preset, args.out), cfg)
    world = distributed.world()
    with distributed.leaving():
        run = train(cfg, run_dir, resume=resume, progress=world.main)
    if world.main:
        print(f"trained {run.step} steps in {run.seconds / 60:.1f} min; checkpoint {run.checkpoint}")
        _report(run_dir)
    return 0


def _report(directory: Path) -> None:
    """The run's report page, rewritten at the end of train, eval and compare (a failure only warns)."""
    from ponder.report import report_quietly

    page = report_quietly(directory)
    if page:
        print(f"report: {page}")


def cmd_report(args) -> int:
    from ponder.report import write_report

    print(f"wrote {write_report(args.directory)}")
    return 0


def _torchrun(args, run_dir: Path) -> int:
    """`ponder train --nproc N ...` = `torchrun --standalone --nproc-per-node N -m ponder train ... --out RUN`."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "ponder", "train"]
    if args.resume:
        cmd += ["--resume", str(run_dir)] + ([args.preset] if args.preset else []) + list(args.overrides)
    else:
        cmd += [args.preset, *args.overrides, "--out", str(run_dir)]
    return subprocess.call(cmd)


def cmd_eval(args) -> int:
    from ponder.runtime import resolve_device

    resolve_device(args.device, "--device")
    if args.sweep:
        from ponder.evaluate import format_sweep, sweep_checkpoint

        key, sep, values = args.sweep.partition("=")
        if not sep:
            raise UserError(f"--sweep expects KEY=V1,V2,..., got {args.sweep!r}")
        sweep, out = sweep_checkpoint(args.checkpoint, key, [v for v in values.split(",") if v], args.data,
                                      args.overrides, args.out, args.device, ema=not args.raw)
        print(format_sweep(sweep))
        print(f"wrote {out / 'sweep.json'}, {out / 'sweep.png'}")
        _report_for(sweep["checkpoint"])
        return 0
    from ponder import distributed

    world = distributed.init(args.device)  # under torchrun the test examples are shared out and gathered
    with distributed.leaving():
        return _eval(args, world)


def _eval(args, world) -> int:
    from ponder.evaluate import evaluate_checkpoint, format_table

    if args.adaptive:
        from ponder.evaluate import adaptive_checkpoint, format_adaptive

        res, out = adaptive_checkpoint(args.checkpoint, args.data, args.overrides, args.out, args.device,
                                       ema=not args.raw)
        if world.main:
            print(format_adaptive(res))
            print(f"wrote {out / 'adaptive.json'}")
            _report_for(res["checkpoint"])
        return 0
    res, out = evaluate_checkpoint(args.checkpoint, args.data, args.overrides, args.out, args.device, args.pictures,
                                   ema=not args.raw, show=args.show, split=args.split, outputs=args.save_outputs)
    if not world.main:
        return 0
    for text in res.pop("_examples", []):
        print(text, end="\n\n")
    print(format_table(res))
    for key, value in res["task_metrics"].items():
        if key in ("test_inputs", "puzzles"):  # counts (ARC voting)
            print(f"{key}: {int(value)}")
        elif not key.startswith("pass@") or key.split("@")[1].split("_")[0] in ("1", "2"):  # pass@5.. in the JSON
            print(f"{key}{'' if res.get('one_pass') else ' at N_sup'}: {100 * value:.1f}%")
    if (out / "submission.json").exists():
        print(f"wrote {out / 'submission.json'} (Kaggle format, two attempts per test input)")
    print(f"wrote {out / 'results.json'}" + (f", {out / 'scaling.png'}" if (out / "scaling.png").exists() else "")
          + (f", {out / 'outputs.safetensors'}" if args.save_outputs else ""))
    _report_for(res["checkpoint"])
    return 0


def _report_for(ckpt: str | Path) -> None:
    """After an evaluation of a checkpoint inside a run: that run's report page."""
    from ponder.evaluate import run_of

    run = run_of(Path(ckpt))
    if run is not None:
        _report(run)


def cmd_solve(args) -> int:
    from ponder.runtime import resolve_device
    from ponder.solve import draw_solution, format_solution, solve

    resolve_device(args.device, "--device")
    res = solve(args.checkpoint, args.puzzle, args.overrides, args.device, ema=not args.raw, k=args.k,
                test_input=args.test_input)
    print(format_solution(res, trace=args.trace))
    if args.png:
        draw_solution(res, Path(args.png))
        print(f"wrote {args.png}")
    return 0


def cmd_import(args) -> int:
    from ponder.official import import_checkpoint
    from ponder.run import fresh_run_dir

    ckpt = import_checkpoint(args.checkpoint, args.family, args.preset, args.overrides,
                             fresh_run_dir(Path(args.out)), args.data)
    print(f"imported {args.checkpoint} as {ckpt}; evaluate it with: ponder eval {args.out}"
          + ("" if args.data else " --data DIR (no dataset was given to record)"))
    return 0


def cmd_compare(args) -> int:
    from ponder.compare import compare, format_compare, parse_member

    report = compare([parse_member(m) for m in args.members], args.out, args.set or [], args.steps, args.minutes,
                     args.data, args.eval_steps, args.max_examples)
    print(format_compare(report))
    print(f"wrote {Path(args.out) / 'compare.json'}, compare.txt, compare.png")
    _report(Path(args.out))
    return 0


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip()) if text else known
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"--{what}: unknown {', '.join(bad)}; choose from {', '.join(known)}")
    return names


def cmd_study(args) -> int:
    from ponder.study import STUDY_MODELS, REGIMES, format_study, study_ca1d

    if args.steps > 0 and args.minutes > 0:
        raise UserError("ponder study: give one budget per member, --steps N or --minutes M")
    regimes = _names(args.regimes, REGIMES, "regimes") if args.regimes else ()
    models = _names(args.models, STUDY_MODELS, "models") if args.models else ()
    study = study_ca1d(args.out, args.steps, args.minutes, models, regimes, args.scale, args.set or [],
                       args.max_examples)
    print(format_study(study))
    print(f"wrote {Path(args.out) / 'study.json'}, study.txt, study.png, study-curves.png")
    _report(Path(args.out))
    return 0


def cmd_info(args) -> int:
    import yaml

    from ponder.config import load_preset, resolve, used_sections
    from ponder.models import build_model, count_params
    from ponder.tasks import get_task
    from ponder.tasks.dataset import read_metadata

    cfg = resolve(args.preset, args.overrides)
    lm = "lm" in load_preset(args.preset)  # a `ponder lm` preset: the LM, its training and evaluation settings
    print(yaml.safe_dump(used_sections(cfg, lm), sort_keys=False), end="")
    if lm:
        from ponder.lm.train import lm_weight_count

        needs = [f"lm.{k}={v}" for k, v in (("task_data", cfg.lm.task_data), ("eval_data", cfg.lm.eval_data)) if v]
        try:
            n, n_base = lm_weight_count(cfg.lm)
            count = f"{n:,} weights (base {n_base:,}: its layers kept in the sections, the head untied, a 2h x h adapter)"
        except UserError as e:  # the base is not installed here: say how to get it, the config is still shown
            count = f"weights counted once the base model is found ({e})"
        print(f"# a retrofitted LM (`ponder lm train|run`) on base {cfg.lm.base}, prelude {cfg.lm.prelude}, core "
              f"{cfg.lm.core}, coda {cfg.lm.coda}: {count}"
              + (f"; reads your files {', '.join(needs)} (relative to the current directory)" if needs else ""))
        return 0
    built = cfg.data.path and (Path(cfg.data.path) / "train" / "dataset.json").exists()
    meta = read_metadata(cfg.data.path, "train") if built else get_task(cfg.data).metadata()
    model = build_model(cfg.model, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
    kind = f" ({cfg.model.mixer})" if cfg.model.carries_state else (f" (ACT: {cfg.model.act})" if cfg.model.act != "off"
                                                                    else "")
    print(f"# {cfg.model.family.upper()}{kind}, vocab {meta.vocab_size}, seq_len {meta.seq_len}: "
          f"{count_params(model):,} weights (puzzle-identifier table excluded)")
    return 0


def _lm_config(args):
    """(config, run directory) of `ponder lm train/run`: a preset + overrides, or the run being resumed."""
    from ponder.config import resolve
    from ponder.run import default_run_dir, fresh_run_dir, resumed_config

    if getattr(args, "resume", None):
        return resumed_config(args.resume, _resume_overrides(args, "ponder lm train"))
    if not args.preset:
        raise UserError(f"ponder lm {args.lm_command}: give a PRESET (e.g. lm-smollm2-cpu)")
    cfg = resolve(args.preset, args.overrides)
    out = default_run_dir(args.preset, args.out)
    return cfg, fresh_run_dir(out, cfg), False


def cmd_lm_train(args) -> int:
    from ponder.lm.data import check_files
    from ponder.lm.train import train_lm

    cfg, run_dir, resume = _lm_config(args)
    check_files(cfg.lm, evaluating=args.lm_command == "run")  # in a second, not after loading the base model
    print(f"run directory: {run_dir}")
    run = train_lm(cfg, run_dir, resume=resume)
    print(f"trained {run.step} steps in {run.seconds / 60:.1f} min; checkpoint {run.checkpoint}")
    if args.lm_command == "run":
        from ponder.lm.evaluate import evaluate_lm_checkpoint, format_lm_table

        res, out = evaluate_lm_checkpoint(run.checkpoint, out_dir=run_dir / "lm_eval")
        print(format_lm_table(res))
        print(f"wrote {out / 'results.json'}, {out / 'lm_scaling.png'}")
    _report(run_dir)
    return 0


def cmd_lm_eval(args) -> int:
    from ponder.lm.evaluate import evaluate_lm_checkpoint, format_lm_table

    res, out = evaluate_lm_checkpoint(args.run, args.overrides, args.out)
    print(format_lm_table(res))
    print(f"wrote {out / 'results.json'}, {out / 'completions.jsonl'}, {out / 'lm_scaling.png'}")
    return 0


def cmd_bench(args) -> int:
    from ponder.bench import run_bench

    run_bench(args.out, quick=args.quick, compare=args.compare, families=args.families, device=args.device,
              checkpoint=args.checkpoint, compile_backend=args.compile, sizes=args.sizes,
              halt_threshold=args.halt_threshold, official=not args.no_official, dtypes=args.dtypes)
    return 0


# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from ponder.config import field_docs, preset_names
    from ponder.tasks import TASKS

    p = _Parser(prog="ponder", description="Recurrent-depth reasoning models: train, evaluate, scale test-time depth.")
    from ponder import __version__

    p.add_argument("--version", action="version", version=f"ponder {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    overrides = dict(nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-4")

    d = sub.add_parser("demo", help="train and evaluate the embedded CPU demo (no download, ~10 minutes)")
    d.add_argument("overrides", **overrides)
    d.add_argument("--out", help="run directory (default runs/demo-<time>)")
    d.add_argument("--minutes", type=float, default=None, help="training wall-time budget (default: the preset's)")
    d.set_defaults(func=cmd_demo)

    d = sub.add_parser("data", help="build a dataset directory in the HRM/TRM npy layout")
    tasks = d.add_subparsers(dest="task", required=True, parser_class=_Parser, metavar="TASK")
    for name, task in TASKS.items():  # one sub-command per registered task, its options from its config dataclass
        section = task.config
        docs = {key: text.replace("%", "%%") for key, text in field_docs(section).items()}  # argparse formats help
        t = tasks.add_parser(name, help=task.summary, description=section.__doc__.split("\n\n")[0])
        t.add_argument("--out", required=True, help="dataset directory to write (train/, test/, identifiers.json)")
        t.add_argument("--seed", type=int, default=0, help="seed: same arguments -> byte-identical files")
        t.add_argument("--force", action="store_true", help="rebuild over an existing dataset")
        for f in dataclasses.fields(section):
            kind = {"int": int, "str": str, "float": float, "bool": bool}[f.type if isinstance(f.type, str) else f.type.__name__]
            flag = "--" + f.name.replace("_", "-")
            if kind is bool:
                t.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{docs.get(f.name, '')} (default {f.default})")
            else:
                t.add_argument(flag, dest=f.name, type=kind, default=None,
                               help=f"{docs.get(f.name, '')} (default {f.default!r})")
        t.set_defaults(func=cmd_data)

    d = sub.add_parser("train", help="train a preset")
    d.add_argument("preset", nargs="?", help=f"shipped preset ({', '.join(preset_names())}) or a YAML path")
    d.add_argument("overrides", **overrides)
    d.add_argument("--out", help="run directory (default runs/<preset>-<time>)")
    d.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint, exactly")
    d.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (runs `torchrun --standalone --nproc-per-node N`; "
                        "train.batch_size stays the global batch); or launch `torchrun ... -m ponder train` yourself")
    d.set_defaults(func=cmd_train)

    d = sub.add_parser("eval", help="evaluate a checkpoint: scaling table, adaptive halting, plot")
    d.add_argument("checkpoint", help="a checkpoint directory or a run directory (latest checkpoint)")
    d.add_argument("overrides", **overrides)
    d.add_argument("--data", help="dataset directory (default: the one the run trained on)")
    d.add_argument("--out", help="output directory (default <checkpoint>/eval)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--pictures", type=int, default=2, help="step-by-step pictures to write")
    d.add_argument("--split", choices=("test", "train"), default="test",
                   help="evaluate the test split (default) or the train split (what was memorised; no ARC voting)")
    d.add_argument("--raw", action="store_true", help="evaluate the raw weights instead of the EMA ones")
    d.add_argument("--adaptive", action="store_true",
                   help="time adaptive halting (halted puzzles leave the batch; eval.halt_threshold) against all "
                        "N_sup steps: puzzles/s, speed-up, accuracy lost (adaptive.json)")
    d.add_argument("--show", type=int, default=0, metavar="K",
                   help="print the first K test examples with the answer after N_sup steps (also in examples.txt)")
    d.add_argument("--save-outputs", type=int, default=0, metavar="K",
                   help="also write outputs.safetensors: the float32 logits and halting logits of the first K "
                        "examples after every supervision step (as the official evaluate.py saves them)")
    d.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="evaluate once per value of a test-time setting, e.g. model.n_latent=1,2,4,8 (recursion depth)")
    d.set_defaults(func=cmd_eval)

    d = sub.add_parser("import", help="turn an official TRM/HRM/URM checkpoint into a ponder run",
                       description="Convert a checkpoint saved by the official pretrain.py (the state_dict of "
                                   "ACTLossHead, with or without torch.compile's _orig_mod. prefix; URM's dict with "
                                   "model_state_dict) into a run directory that `ponder eval` reads. The preset (and "
                                   "overrides) must describe the checkpoint's architecture; every missing, "
                                   "unexpected or mis-shaped tensor is named.")
    d.add_argument("checkpoint", help="the official checkpoint file (e.g. step_26040 or step_N.pt)")
    d.add_argument("overrides", **overrides)
    d.add_argument("--family", required=True, choices=("trm", "hrm", "urm"), help="the official code it comes from")
    d.add_argument("--preset", required=True, help="the matching preset, e.g. sudoku-extreme-hrm (or a YAML path)")
    d.add_argument("--out", required=True, help="run directory to create")
    d.add_argument("--data", help="the dataset it is evaluated on (checked against the checkpoint's vocabulary and "
                                  "puzzle table, and recorded for ponder eval)")
    d.set_defaults(func=cmd_import)

    d = sub.add_parser("solve", help="a trained model's answer to your own puzzle, with the steps it used",
                       description="Read one puzzle of your own (a Sudoku as its n*n cells with '.' or '0' for "
                                   "blanks, a maze as N lines of '#', ' ', 'S', 'G', a 1dCA orbit as one state of "
                                   "'0'/'1' per line, an ARC task's JSON file named <task id>.json or the id of "
                                   "one of the run's evaluation tasks), as text, a file, or '-' for stdin, and print "
                                   "the model's "
                                   "answer after the supervision step where it halts (at the latest N_sup), with "
                                   "its halting confidence.")
    d.add_argument("checkpoint", help="a checkpoint or run directory (the latest checkpoint)")
    d.add_argument("puzzle", help="the puzzle as text, a file holding it, or - (stdin)")
    d.add_argument("overrides", **overrides)
    d.add_argument("--trace", action="store_true", help="print the answer after every supervision step up to N_sup")
    d.add_argument("--png", metavar="FILE", help="draw the puzzle and the answer after each step into FILE")
    d.add_argument("--k", type=int, default=None, help="1dCA: the step ahead to predict (models trained on mixed k)")
    d.add_argument("--test-input", type=int, default=0, help="ARC: which of the task's test inputs (0-based)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    d.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    d.set_defaults(func=cmd_solve)

    d = sub.add_parser("compare", help="train several models on the same data and budget; one table and plot",
                       description="Each MEMBER is NAME=PRESET[,key=value,...], e.g. trm=demo "
                                   "hrm=demo,model.family=hrm. Resumable: finished members are not retrained.")
    d.add_argument("members", nargs="+", metavar="MEMBER", help="NAME=PRESET[,key=value,...]")
    d.add_argument("--out", required=True, help="comparison directory (one run directory per member)")
    d.add_argument("--steps", type=int, default=0, help="budget: optimiser steps per member")
    d.add_argument("--minutes", type=float, default=0.0, help="budget: wall-clock minutes per member")
    d.add_argument("--data", help="dataset directory for all members (default: built once into OUT/data)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every member (repeatable)")
    d.add_argument("--eval-steps", type=int, default=0, help="test-time supervision steps (default 2 x largest N_sup)")
    d.add_argument("--max-examples", type=int, default=0, help="evaluate on the first N test examples (0 = all)")
    d.set_defaults(func=cmd_compare)

    d = sub.add_parser("study", help="the 1dCA study's table: every model x regime on one split and budget",
                       description="Train and evaluate every model x regime of the 1dCA-Reasoning study (fixed depth, "
                                   "one model per k, depth, ACT, constant depth, ARMT, chain of thought, GRPO) and "
                                   "ponder's recursive models on the same data split, through ponder compare "
                                   "(resumable; a larger budget extends finished members; a member whose settings "
                                   "changed is refused). Writes study.txt/.json/.png and study-curves.png: exact match "
                                   "and bit accuracy per k beside the non-learned baselines, and every member's "
                                   "learning curve.")
    d.add_argument("study", choices=("ca1d",), help="the study (ca1d: 1dCA-Reasoning, 'Beyond Memorization')")
    d.add_argument("--out", required=True, help="study directory (one run directory per member)")
    d.add_argument("--steps", type=int, default=0, help="budget: optimiser steps per member (times its share)")
    d.add_argument("--minutes", type=float, default=0.0,
                   help="budget: wall-clock minutes per member, times its share (CPU scale: 15 by default, about "
                        "3 h on 2 cores)")
    d.add_argument("--scale", default="cpu", help="cpu (the paper's task at the sizes 2 CPU cores train) or gpu "
                                                  "(the paper's task and models)")
    d.add_argument("--models", default="", help="comma-separated subset of neox,lstm,mamba,armt,trm,hrm,urm "
                                                "(default: the scale's)")
    d.add_argument("--regimes", default="", help="comma-separated subset of fixed,per-k,depth,act,constant,cot,oo,"
                                                 "grpo,grpo-scratch,recursion (default: the scale's)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every member (repeatable)")
    d.add_argument("--max-examples", type=int, default=0, help="evaluate on the first N test examples (0 = all)")
    d.set_defaults(func=cmd_study)

    d = sub.add_parser("report", help="write DIR/report.html: one self-contained page for a run, compare or study",
                       description="One HTML file with everything inlined (no network, no script): summary, "
                                   "training curves, the evaluation's scaling table, adaptive halting and pictures, "
                                   "sweeps, timings, machine, config. For a compare or study: its table and plots, "
                                   "every member's curves and a page per member. ponder train, eval, compare and "
                                   "study write it at their end; this command rewrites it.")
    d.add_argument("directory", metavar="DIR", help="a run directory, or a compare / study --out directory")
    d.set_defaults(func=cmd_report)

    d = sub.add_parser("info", help="print the resolved config and the weight count")
    d.add_argument("preset", help=f"shipped preset ({', '.join(preset_names())}) or a YAML path")
    d.add_argument("overrides", **overrides)
    d.set_defaults(func=cmd_info)

    d = sub.add_parser("lm", help="retrofitted recurrence: cut a pretrained LM into prelude/core/coda, train, sweep R",
                       description="Turn a Hugging Face causal LM into a depth-recurrent one (lm.prelude/core/coda), "
                                   "train it with a recurrence curriculum (GSM8K), measure accuracy against R.")
    lm = d.add_subparsers(dest="lm_command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, text in (("train", "surgery + training; --resume RUN continues a run exactly"),
                       ("run", "surgery + training + the GSM8K sweep over lm.eval_recurrences (the CPU recipe)")):
        t = lm.add_parser(name, help=text)
        lm_presets = ", ".join(n for n in preset_names() if n.startswith("lm-"))
        t.add_argument("preset", nargs="?", help=f"shipped preset ({lm_presets}) or a YAML path")
        t.add_argument("overrides", **overrides)
        t.add_argument("--out", help="run directory (default runs/<preset>-<time>)")
        if name == "train":
            t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint, exactly")
        else:
            t.set_defaults(resume=None)
        t.set_defaults(func=cmd_lm_train)
    t = lm.add_parser("eval", help="GSM8K accuracy and perplexity at each R of lm.eval_recurrences: table, JSON, PNG")
    t.add_argument("run", help="a `ponder lm` checkpoint or run directory (latest checkpoint)")
    t.add_argument("overrides", **overrides)
    t.add_argument("--out", help="output directory (default <checkpoint>/lm_eval)")
    t.set_defaults(func=cmd_lm_eval)

    d = sub.add_parser("bench", help="training/eval throughput and GFLOP/s vs the matmul ceiling (not a test)")
    d.add_argument("--out", default="bench/results.json", help="JSON file to write")
    d.add_argument("--quick", action="store_true", help="fewer repetitions")
    d.add_argument("--compare", help="earlier JSON to print ratios against")
    d.add_argument("--families", default="", help="comma-separated subset of trm-mlp,trm-att,hrm,urm,transformer "
                                                  "(default: all)")
    d.add_argument("--sizes", default="paper,small", help="paper (the preset, batch 32 on CPU, 768 on GPU) and/or "
                                                          "small (hidden 128, batch 64 on CPU)")
    d.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    d.add_argument("--compile", default="off", help="torch.compile backend for the step (inductor, aot_eager)")
    d.add_argument("--dtypes", default="float32,bfloat16",
                   help="precisions to measure (bf16 is skipped where its matmuls crawl)")
    d.add_argument("--no-official", action="store_true",
                   help="skip the official TRM step structure timed beside ponder's (ponder.official_step)")
    d.add_argument("--checkpoint", metavar="RUN",
                   help="also time adaptive-halting evaluation of this trained run against all N_sup steps")
    d.add_argument("--halt-threshold", type=float, default=0.0,
                   help="eval.halt_threshold for --checkpoint (0: the paper's rule)")
    d.set_defaults(func=cmd_bench)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the commands read it (UserError on a bad one; --help exits)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (`ponder eval RUN --show 2 eval.max_examples=100`)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        return args.func(args)
    except UserError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # ponder.run.Interrupted says which checkpoint holds the run
        print(f"ponder: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (read-only, full, a path too long, a file where a folder goes)
        import errno

        where = f"{e.filename}: " if e.filename else ""
        print(f"ponder: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1 if e.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT) else EXIT_USAGE
    except Exception as e:
        from ponder.run import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"ponder: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
