"""Model families by name. Each takes (ModelConfig, vocab_size, seq_len, num_puzzle_ids) and implements one
supervision step: initial_state / reset / forward(state, inputs, puzzle_ids) -> StepOutput (`ponder.models.base`):
the recursive families (TRM, HRM, URM, the fixed-depth Transformer) and the 1dCA study's causal sequence models
(GPT-NeoX, LSTM, Mamba, ARMT)."""

from __future__ import annotations

from torch import nn

from ponder import UserError
from ponder.config import ModelConfig
from ponder.models.armt import ARMT
from ponder.models.hrm import HRM
from ponder.models.lstm import LSTM
from ponder.models.mamba import Mamba
from ponder.models.neox import NeoX
from ponder.models.trm import TRM
from ponder.models.urm import URM, Transformer

MODELS = {"trm": TRM, "hrm": HRM, "urm": URM, "transformer": Transformer,
          "neox": NeoX, "lstm": LSTM, "mamba": Mamba, "armt": ARMT}


def build_model(cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1) -> nn.Module:
    if cfg.family not in MODELS:
        raise UserError(f"unknown model.family '{cfg.family}'; known: {', '.join(MODELS)}")
    return MODELS[cfg.family](cfg, vocab_size, seq_len, num_puzzle_ids)


def count_params(model: nn.Module) -> int:
    """Trainable weights; buffers (initial states, the puzzle-identifier table) are not counted, as in the papers."""
    return sum(p.numel() for p in model.parameters())
