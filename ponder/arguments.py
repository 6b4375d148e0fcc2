"""The `ponder` command line's grammar: one parser function per command. Each sets `func`, the name of the command
function in `ponder.cli` that runs it; flags and their help live here, what they do lives in the library."""

from __future__ import annotations

import argparse
import dataclasses

from ponder import UserError

OVERRIDES = dict(nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-4")
FORCE = dict(action="store_true",
             help="write into an --out folder ponder did not make, beside what is there (nothing replaced)")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the whole usage block otherwise)
        where = "" if self.prog == "ponder" else f"{self.prog}: "  # main() prints "ponder: error:" already
        raise UserError(f"{where}{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    from ponder import __version__

    p = Parser(prog="ponder", description="Recurrent-depth reasoning models: train, evaluate, scale test-time depth.")
    p.add_argument("--version", action="version", version=f"ponder {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (_demo, _data, _train, _eval, _import_, _solve, _compare, _study, _report, _info, _lm, _bench):
        add(sub)
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


def _demo(sub) -> None:
    d = sub.add_parser("demo", help="train and evaluate the embedded CPU demo (no download, ~10 minutes)")
    d.add_argument("overrides", **OVERRIDES)
    d.add_argument("--out", help="run directory (default runs/demo-<time>)")
    d.add_argument("--minutes", type=float, default=None, help="training wall-time budget (default: the preset's)")
    d.set_defaults(func="demo")


def _data(sub) -> None:
    from ponder.config import field_docs
    from ponder.tasks import TASKS

    d = sub.add_parser("data", help="build a dataset directory in the HRM/TRM npy layout")
    tasks = d.add_subparsers(dest="task", required=True, parser_class=Parser, metavar="TASK")
    for name, task in TASKS.items():  # one sub-command per registered task, its options from its config dataclass
        section = task.config
        docs = {key: text.replace("%", "%%") for key, text in field_docs(section).items()}  # argparse formats help
        t = tasks.add_parser(name, help=task.summary, description=section.__doc__.split("\n\n")[0])
        t.add_argument("--out", required=True, help="dataset directory to write (train/, test/, identifiers.json)")
        t.add_argument("--seed", type=int, default=0, help="seed: same arguments -> byte-identical files")
        t.add_argument("--force", action="store_true", help="rebuild over an existing dataset")
        for f in dataclasses.fields(section):
            kind = {"int": int, "str": str, "float": float, "bool": bool, "tuple[str, ...]": tuple}[
                f.type if isinstance(f.type, str) else f.type.__name__]
            flag = "--" + f.name.replace("_", "-")
            if kind is tuple:  # a list of paths
                t.add_argument(flag, dest=f.name, nargs="+", metavar="PATH", default=None,
                               help=f"{docs.get(f.name, '')} (default none)")
            elif kind is bool:
                t.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{docs.get(f.name, '')} (default {f.default})")
            else:
                t.add_argument(flag, dest=f.name, type=kind, default=None,
                               help=f"{docs.get(f.name, '')} (default {f.default!r})")
        t.set_defaults(func="data")


def _train(sub) -> None:
    from ponder.config import preset_names

    d = sub.add_parser("train", help="train a preset")
    d.add_argument("preset", nargs="?", help=f"shipped preset ({', '.join(preset_names())}) or a YAML path")
    d.add_argument("overrides", **OVERRIDES)
    d.add_argument("--out", help="run directory (default runs/<preset>-<time>)")
    d.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint, exactly")
    d.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (runs `torchrun --standalone --nproc-per-node N`; "
                        "train.batch_size stays the global batch); or launch `torchrun ... -m ponder train` yourself")
    d.set_defaults(func="train")


def _eval(sub) -> None:
    d = sub.add_parser("eval", help="evaluate a checkpoint: scaling table, adaptive halting, plot")
    d.add_argument("checkpoint", help="a checkpoint directory or a run directory (latest checkpoint)")
    d.add_argument("overrides", **OVERRIDES)
    d.add_argument("--data", help="dataset directory (default: the one the run trained on)")
    d.add_argument("--out", help="output directory (default <checkpoint>/eval)")
    d.add_argument("--force", **FORCE)
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
    d.set_defaults(func="eval")


def _import_(sub) -> None:
    d = sub.add_parser("import", help="turn an official TRM/HRM/URM checkpoint into a ponder run",
                       description="Convert a checkpoint saved by the official pretrain.py (the state_dict of "
                                   "ACTLossHead, with or without torch.compile's _orig_mod. prefix; URM's dict with "
                                   "model_state_dict) into a run directory that `ponder eval` reads. The preset (and "
                                   "overrides) must describe the checkpoint's architecture; every missing, "
                                   "unexpected or mis-shaped tensor is named.")
    d.add_argument("checkpoint", help="the official checkpoint file (e.g. step_26040 or step_N.pt)")
    d.add_argument("overrides", **OVERRIDES)
    d.add_argument("--family", required=True, choices=("trm", "hrm", "urm"), help="the official code it comes from")
    d.add_argument("--preset", required=True, help="the matching preset, e.g. sudoku-extreme-hrm (or a YAML path)")
    d.add_argument("--out", required=True, help="run directory to create")
    d.add_argument("--data", help="the dataset it is evaluated on (checked against the checkpoint's vocabulary and "
                                  "puzzle table, and recorded for ponder eval)")
    d.set_defaults(func="import")


def _solve(sub) -> None:
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
    d.add_argument("overrides", **OVERRIDES)
    d.add_argument("--trace", action="store_true", help="print the answer after every supervision step up to N_sup")
    d.add_argument("--png", metavar="FILE", help="draw the puzzle and the answer after each step into FILE")
    d.add_argument("--k", type=int, default=None, help="1dCA: the step ahead to predict (models trained on mixed k)")
    d.add_argument("--test-input", type=int, default=0, help="ARC: which of the task's test inputs (0-based)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    d.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    d.set_defaults(func="solve")


def _compare(sub) -> None:
    d = sub.add_parser("compare", help="train several models on the same data and budget; one table and plot",
                       description="Each MEMBER is NAME=PRESET[,key=value,...], e.g. trm=demo "
                                   "hrm=demo,model.family=hrm. Resumable: finished members are not retrained.")
    d.add_argument("members", nargs="+", metavar="MEMBER", help="NAME=PRESET[,key=value,...]")
    d.add_argument("--out", required=True, help="comparison directory (one run directory per member)")
    d.add_argument("--force", **FORCE)
    d.add_argument("--steps", type=int, default=0, help="budget: optimiser steps per member")
    d.add_argument("--minutes", type=float, default=0.0, help="budget: wall-clock minutes per member")
    d.add_argument("--data", help="dataset directory for all members (default: built once into OUT/data)")
    d.add_argument("--eval-steps", type=int, default=0, help="test-time supervision steps (default 2 x largest N_sup)")
    _every_member(d)
    d.set_defaults(func="compare")


def _every_member(d) -> None:
    """The options compare and study share: settings for every member."""
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every member (repeatable)")
    d.add_argument("--max-examples", type=int, default=0, help="evaluate on the first N test examples (0 = all)")


def _study(sub) -> None:
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
    d.add_argument("--force", **FORCE)
    d.add_argument("--steps", type=int, default=0, help="budget: optimiser steps per member (times its share)")
    d.add_argument("--minutes", type=float, default=0.0,
                   help="budget: wall-clock minutes per member, times its share (CPU scale: 15 by default, about "
                        "3 h on 2 cores; GPU scale: by default each member its preset's steps, the reference's)")
    d.add_argument("--scale", default="cpu", help="cpu (the paper's task at the sizes 2 CPU cores train) or gpu "
                                                  "(the paper's task and models)")
    d.add_argument("--models", default="", help="comma-separated subset of neox,lstm,mamba,armt,trm,hrm,urm "
                                                "(default: the scale's)")
    d.add_argument("--regimes", default="", help="comma-separated subset of fixed,per-k,depth,act,constant,cot,oo,"
                                                 "grpo,grpo-control,grpo-scratch,recursion (default: the scale's)")
    d.add_argument("--per-k", action="store_true",
                   help="the fixed-depth models trained one per k (NAME-k1 .. -k4, the paper's main comparison) "
                        "instead of one model for every k (k given as a token: the reference's adaptive variant)")
    d.add_argument("--dry-run", action="store_true",
                   help="print the members in training order with their resolved settings; train nothing")
    _every_member(d)
    d.set_defaults(func="study")


def _report(sub) -> None:
    d = sub.add_parser("report", help="write DIR/report.html: one self-contained page for a run, compare or study",
                       description="One HTML file with everything inlined (no network, no script): summary, "
                                   "training curves, the evaluation's scaling table, adaptive halting and pictures, "
                                   "sweeps, timings, machine, config. For a compare or study: its table and plots, "
                                   "every member's curves and a page per member. ponder train, eval, compare and "
                                   "study write it at their end; this command rewrites it.")
    d.add_argument("directory", metavar="DIR", help="a run directory, or a compare / study --out directory")
    d.set_defaults(func="report")


def _info(sub) -> None:
    from ponder.config import preset_names

    d = sub.add_parser("info", help="print the resolved config and the weight count")
    d.add_argument("preset", help=f"shipped preset ({', '.join(preset_names())}) or a YAML path")
    d.add_argument("overrides", **OVERRIDES)
    d.set_defaults(func="info")


def _lm(sub) -> None:
    from ponder.config import preset_names

    d = sub.add_parser("lm", help="retrofitted recurrence: cut a pretrained LM into prelude/core/coda, train, sweep R",
                       description="Turn a Hugging Face causal LM into a depth-recurrent one (lm.prelude/core/coda), "
                                   "train it with a recurrence curriculum (GSM8K), measure accuracy against R.")
    lm = d.add_subparsers(dest="lm_command", required=True, parser_class=Parser, metavar="COMMAND")
    for name, text in (("train", "surgery + training; --resume RUN continues a run exactly"),
                       ("run", "surgery + training + the GSM8K sweep over lm.eval_recurrences (the CPU recipe)")):
        t = lm.add_parser(name, help=text)
        lm_presets = ", ".join(n for n in preset_names() if n.startswith("lm-"))
        t.add_argument("preset", nargs="?", help=f"shipped preset ({lm_presets}) or a YAML path")
        t.add_argument("overrides", **OVERRIDES)
        t.add_argument("--out", help="run directory (default runs/<preset>-<time>)")
        if name == "train":
            t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint, exactly")
        else:
            t.set_defaults(resume=None)
        t.set_defaults(func="lm_train")
    t = lm.add_parser("eval", help="GSM8K accuracy and perplexity at each R of lm.eval_recurrences: table, JSON, PNG")
    t.add_argument("run", help="a `ponder lm` checkpoint or run directory (latest checkpoint)")
    t.add_argument("overrides", **OVERRIDES)
    t.add_argument("--out", help="output directory (default <checkpoint>/lm_eval)")
    t.add_argument("--force", **FORCE)
    t.set_defaults(func="lm_eval")


def _bench(sub) -> None:
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
    d.set_defaults(func="bench")
