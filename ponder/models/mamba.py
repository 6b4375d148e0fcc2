"""Mamba: the 1dCA study's state-space baseline (the reference's `AdaptiveMambaForCausalLM`: 4 layers, d 128, the
repeat-state segments layout, ACT over layers in its script), built from `mambapy` (pure PyTorch, a parallel scan;
no CUDA-only package): token embedding, n_layers residual Mamba blocks (RMSNorm -> selective SSM, d_inner 2 x hidden,
state model.mamba_state, conv 4), a final RMSNorm and a linear head.

Why mambapy and not `transformers.MambaForCausalLM`: without the CUDA kernels (mamba_ssm, causal_conv1d) the HF model
falls back to a sequential scan that took 117 s for one training step of batch 32 x 231 tokens on this project's
2-core CPU, against 7.9 s for mambapy's parallel scan. The head is not tied to the embedding (mamba_ssm's LM ties
them; untied, a checkpoint's EMA weights stay one tensor per name): 128 x vocab more weights.
"""

from __future__ import annotations

from torch import Tensor, nn

from ponder.config import ModelConfig
from ponder.models.base import Sequence
from ponder.models.halting import adaptive


class Mamba(Sequence):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(cfg, vocab_size, seq_len)
        from mambapy.mamba import MambaConfig, ResidualBlock, RMSNorm

        d = cfg.hidden
        block = MambaConfig(d_model=d, n_layers=cfg.n_layers, d_state=cfg.mamba_state, expand_factor=2, d_conv=4)
        self.embedding = nn.Embedding(vocab_size, d)
        self.layers, self.act_units = adaptive(nn.ModuleList(ResidualBlock(block) for _ in range(cfg.n_layers)), d,
                                               cfg)
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab_size, bias=False)

    def causal_logits(self, inputs: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        h = self.embedding(inputs)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))
