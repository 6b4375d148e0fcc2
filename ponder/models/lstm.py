"""LSTM: the 1dCA study's recurrent baseline (the reference's `modeling_lstm.LSTMModel`): a token embedding of width
hidden, n_layers stacked single-layer `nn.LSTM`s of width hidden (no residual, no norm), a linear head with bias.
Paper config: hidden 128, 4 layers; 561,280 weights with the reference's 128-token vocabulary. With model.act=layer
each LSTM is run again on its own output sequence per token (`ponder.models.halting`); act=model iterates the stack
(the reference's one 4-layer nn.LSTM)."""

from __future__ import annotations

from torch import Tensor, nn

from ponder.config import ModelConfig
from ponder.models.base import Sequence
from ponder.models.halting import adaptive


class LSTMLayer(nn.Module):
    """One single-layer LSTM over the sequence, returning its output sequence."""

    def __init__(self, d: int):
        super().__init__()
        self.lstm = nn.LSTM(d, d, num_layers=1, batch_first=True)

    def forward(self, h: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        return self.lstm(h)[0]


class LSTM(Sequence):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(cfg, vocab_size, seq_len)
        d = cfg.hidden
        self.embedding = nn.Embedding(vocab_size, d)
        self.layers, self.act_units = adaptive(nn.ModuleList(LSTMLayer(d) for _ in range(cfg.n_layers)), d, cfg)
        self.head = nn.Linear(d, vocab_size)

    def causal_logits(self, inputs: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        h = self.embedding(inputs)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)
