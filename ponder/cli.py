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

import dataclasses
import os
import sys
import time
from pathlib import Path

from ponder import UserError
from ponder.arguments import parse

EXIT_USAGE = 2


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
    t = time.perf_counter()
    build_dataset(cfg, out, force=args.force)
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
                                      args.overrides, args.out, args.device, ema=not args.raw, force=args.force)
        print(format_sweep(sweep))
        print(f"wrote {out / 'sweep.json'}, {out / 'sweep.png'}")
        _report_for(sweep["checkpoint"])
        return 0
    from ponder import distributed

    world = distributed.init(args.device)  # under torchrun the test examples are shared out and gathered
    with distributed.leaving():
        return _eval(args, world)


def _eval(args, world) -> int:
    from ponder.evaluate import evaluate_checkpoint, format_results

    if args.adaptive:
        from ponder.evaluate import adaptive_checkpoint, format_adaptive

        res, out = adaptive_checkpoint(args.checkpoint, args.data, args.overrides, args.out, args.device,
                                       ema=not args.raw, force=args.force)
        if world.main:
            print(format_adaptive(res))
            print(f"wrote {out / 'adaptive.json'}")
            _report_for(res["checkpoint"])
        return 0
    res, out = evaluate_checkpoint(args.checkpoint, args.data, args.overrides, args.out, args.device, args.pictures,
                                   ema=not args.raw, show=args.show, split=args.split, outputs=args.save_outputs,
                                   force=args.force)
    if not world.main:
        return 0
    print(format_results(res))
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
                     args.data, args.eval_steps, args.max_examples, force=args.force)
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
    from ponder.study import STUDY_MODELS, REGIMES, dry_run, format_study, study_ca1d

    if args.steps > 0 and args.minutes > 0:
        raise UserError("ponder study: give one budget per member, --steps N or --minutes M")
    regimes = _names(args.regimes, REGIMES, "regimes") if args.regimes else ()
    models = _names(args.models, STUDY_MODELS, "models") if args.models else ()
    if args.dry_run:
        print(dry_run(args.out, args.steps, args.minutes, models, regimes, args.scale, args.set or [], args.per_k))
        return 0
    study = study_ca1d(args.out, args.steps, args.minutes, models, regimes, args.scale, args.set or [],
                       args.max_examples, force=args.force, per_k=args.per_k)
    print(format_study(study))
    print(f"wrote {Path(args.out) / 'study.json'}, study.txt, study.png, study-curves.png")
    _report(Path(args.out))
    return 0


def cmd_info(args) -> int:
    from ponder.api import describe

    print(describe(args.preset, args.overrides))
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

    res, out = evaluate_lm_checkpoint(args.run, args.overrides, args.out, force=args.force)
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


COMMANDS = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "import": cmd_import,
            "solve": cmd_solve, "compare": cmd_compare, "study": cmd_study, "report": cmd_report, "info": cmd_info,
            "lm_train": cmd_lm_train, "lm_eval": cmd_lm_eval, "bench": cmd_bench}  # `func` set by ponder.arguments


def _interrupted(args) -> str:
    """What a Ctrl-C outside the training loop's own handling leaves (during start-up, or a second one during the
    final save): for a training command, the run's newest complete checkpoint; else that no file is half-written."""
    run = getattr(args, "resume", None) or (getattr(args, "out", None) if getattr(args, "func", "") in (
        "train", "demo", "lm_train") else None)
    if run:
        from ponder.checkpoint import list_checkpoints

        found = list_checkpoints(Path(run))
        return (f"interrupted; {run} holds no checkpoint yet" if not found else
                f"interrupted; the newest complete checkpoint is {found[-1]} (resume with ponder train --resume {run})")
    return "interrupted; files are written whole or not at all, so nothing half-written is left"


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = parse(argv)
        return COMMANDS[args.func](args)
    except UserError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # ponder.run.Interrupted says which checkpoint holds the run
        print(f"ponder: {str(e) or _interrupted(args)}", file=sys.stderr)
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
