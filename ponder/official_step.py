"""The official TRM training step, re-typed as plain PyTorch in the official code's own structure: the baseline that
`ponder bench` times ponder's step against, side by side in the same run (`--vs-official`, on by default for TRM).

Why it is here: the official code cannot run on a CPU (its optimiser, `adam-atan2`, is a CUDA-only build, and its
attention calls flash-attn), so "is ponder's step as lean as the official one" needs the official step's structure
written out, with the same maths and the same shapes. It follows the TinyRecursiveModels code (commit e7b6871, MIT):

- `CastedLinear` (the weight cast to the input's dtype at every call), `rms_norm` as a function (upcast to float32,
  x * rsqrt(mean(x^2) + eps), cast back), `SwiGLU` = down(silu(gate) * up) of `gate_up.chunk(2)`;
- post-norm blocks: TRM-MLP transposes, applies `mlp_t` over the sequence and norms while transposed; TRM-Att runs
  qkv -> RoPE (in float32) -> attention (SDPA here, flash-attn there) -> o;
- `ReasoningModule`: h + injection, then the blocks; the recursion: H_cycles - 1 cycles under `torch.no_grad`, the
  last with gradient; the carry detached; `lm_head` on the answer state, `q_head` on position 0 in float32;
- the ACT wrapper: reset halted slots with `torch.where`, steps + 1, halting by q_halt > 0 with exploration;
- the loss head: stablemax cross-entropy in float64 divided per example by its label count, BCE on the halting
  logit against "the whole sequence is right", the metrics dict stacked and copied to the host (as `train_batch`
  does for logging);
- `(1 / B) * loss` backward; the optimiser, then `EMAHelper.update`: `shadow = (1 - mu) * param + mu * shadow`,
  parameter by parameter.
The optimiser is torch's `AdamW` with its defaults (a stand-in for the CUDA kernel, the same work per element as
Adam-atan2); the sparse puzzle-embedding table is left out (a few hundred bytes per example, the same in both).
Only what sets the speed is kept: no data loading, no distributed reduction, no checkpointing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ponder.config import Config, ModelConfig
from ponder.models.layers import swiglu_width, trunc_normal_


def rms_norm(hidden_states: Tensor, variance_epsilon: float) -> Tensor:
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.square().mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + variance_epsilon)
    return hidden_states.to(input_dtype)


class CastedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=1.0 / in_features**0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), bias=self.bias.to(x.dtype) if self.bias is not None else None)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, inter * 2)
        self.down_proj = CastedLinear(inter, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.head_dim, self.num_heads = hidden_size // num_heads, num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size)
        self.o_proj = CastedLinear(hidden_size, hidden_size)

    def forward(self, cos_sin, hidden_states: Tensor) -> Tensor:
        b, s, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(b, s, 3 * self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, :self.num_heads], qkv[:, :, self.num_heads:2 * self.num_heads], qkv[:, :, 2 * self.num_heads:]
        if cos_sin is not None:
            cos, sin = cos_sin
            dtype = q.dtype
            q, k = q.to(cos.dtype), k.to(cos.dtype)
            q = (q * cos.unsqueeze(-2)) + (rotate_half(q) * sin.unsqueeze(-2))
            k = (k * cos.unsqueeze(-2)) + (rotate_half(k) * sin.unsqueeze(-2))
            q, k = q.to(dtype), k.to(dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, expansion: float, seq_len: int, mlp_t: bool, eps: float):
        super().__init__()
        self.mlp_t = SwiGLU(seq_len, expansion) if mlp_t else None
        self.self_attn = None if mlp_t else Attention(hidden, heads)
        self.mlp = SwiGLU(hidden, expansion)
        self.norm_eps = eps

    def forward(self, cos_sin, hidden_states: Tensor) -> Tensor:
        if self.mlp_t is not None:
            hidden_states = hidden_states.transpose(1, 2)
            out = self.mlp_t(hidden_states)
            hidden_states = rms_norm(hidden_states + out, variance_epsilon=self.norm_eps)
            hidden_states = hidden_states.transpose(1, 2)
        else:
            hidden_states = rms_norm(hidden_states + self.self_attn(cos_sin, hidden_states), self.norm_eps)
        out = self.mlp(hidden_states)
        return rms_norm(hidden_states + out, variance_epsilon=self.norm_eps)


class ReasoningModule(nn.Module):
    def __init__(self, layers: list[Block]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: Tensor, input_injection: Tensor, cos_sin) -> Tensor:
        hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin, hidden_states)
        return hidden_states


class OfficialTRM(nn.Module):
    """TinyRecursiveReasoningModel_ACTV1 with its loss head, for Sudoku-shaped batches (vocab V, L cells)."""

    def __init__(self, cfg: Config, vocab_size: int, seq_len: int, forward_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.forward_dtype = forward_dtype  # the official bf16 runs cast weights per call, no autocast
        mc = cfg.model
        d, self.prefix = mc.hidden, mc.puzzle_emb_len
        total = seq_len + self.prefix
        self.mc, self.embed_scale = mc, math.sqrt(d)
        self.embed_tokens = nn.Parameter(trunc_normal_(torch.empty(vocab_size, d), std=1.0 / self.embed_scale))
        self.lm_head = CastedLinear(d, vocab_size)
        self.q_head = CastedLinear(d, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)
        self.cos_sin = None
        if mc.pos_encoding == "rope":
            head = d // mc.n_heads
            inv_freq = 1.0 / (mc.rope_theta ** (torch.arange(0, head, 2, dtype=torch.float32) / head))
            freqs = torch.outer(torch.arange(total, dtype=torch.float32), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_sin = (emb.cos(), emb.sin())
        self.L_level = ReasoningModule([Block(d, mc.n_heads, mc.expansion, total, mc.mixer == "mlp", mc.norm_eps)
                                        for _ in range(mc.n_layers)])
        self.register_buffer("H_init", trunc_normal_(torch.empty(d), std=1).to(forward_dtype))
        self.register_buffer("L_init", trunc_normal_(torch.empty(d), std=1).to(forward_dtype))

    def initial_carry(self, batch: dict) -> dict:
        b, total = batch["inputs"].shape[0], batch["inputs"].shape[1] + self.prefix
        empty = torch.empty(b, total, self.mc.hidden, dtype=self.forward_dtype, device=batch["inputs"].device)
        return {"z_H": empty, "z_L": empty.clone(), "steps": torch.zeros(b, dtype=torch.int32),
                "halted": torch.ones(b, dtype=torch.bool), "current_data": {k: torch.empty_like(v) for k, v in batch.items()}}

    def inner(self, z_H: Tensor, z_L: Tensor, inputs: Tensor):
        embedding = F.embedding(inputs.to(torch.int32), self.embed_tokens.to(self.forward_dtype))
        if self.prefix:
            embedding = torch.cat((embedding.new_zeros(inputs.shape[0], self.prefix, self.mc.hidden), embedding), 1)
        input_embeddings = self.embed_scale * embedding
        with torch.no_grad():
            for _ in range(self.mc.n_cycles - 1):
                for _ in range(self.mc.n_latent):
                    z_L = self.L_level(z_L, z_H + input_embeddings, self.cos_sin)
                z_H = self.L_level(z_H, z_L, self.cos_sin)
        for _ in range(self.mc.n_latent):
            z_L = self.L_level(z_L, z_H + input_embeddings, self.cos_sin)
        z_H = self.L_level(z_H, z_L, self.cos_sin)
        output = self.lm_head(z_H)[:, self.prefix:]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return z_H.detach(), z_L.detach(), output, q_logits[..., 0]

    def forward(self, carry: dict, batch: dict) -> tuple[dict, Tensor, dict]:
        halted = carry["halted"]
        z_H = torch.where(halted.view(-1, 1, 1), self.H_init, carry["z_H"])
        z_L = torch.where(halted.view(-1, 1, 1), self.L_init, carry["z_L"])
        steps = torch.where(halted, 0, carry["steps"])
        data = {k: torch.where(halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
                for k, v in carry["current_data"].items()}
        z_H, z_L, logits, q_halt = self.inner(z_H, z_L, data["inputs"])
        n_sup = self.mc.n_supervision
        with torch.no_grad():
            steps = steps + 1
            halted = steps >= n_sup
            if self.training and n_sup > 1:
                halted = halted | (q_halt > 0)
                min_halt = (torch.rand_like(q_halt) < self.mc.halt_exploration_prob) * torch.randint_like(
                    steps, low=2, high=n_sup + 1)
                halted = halted & (steps >= min_halt)
        new_carry = {"z_H": z_H, "z_L": z_L, "steps": steps, "halted": halted, "current_data": data}
        labels = data["labels"]
        with torch.no_grad():
            mask = labels != -100
            loss_counts = mask.sum(-1)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)
            is_correct = mask & (torch.argmax(logits, dim=-1) == labels)
            seq_is_correct = is_correct.sum(-1) == loss_counts
            valid = halted & (loss_counts > 0)
            metrics = {"count": valid.sum(),
                       "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                       "exact_accuracy": (valid & seq_is_correct).sum(),
                       "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_is_correct)).sum(),
                       "steps": torch.where(valid, steps, 0).sum()}
        lm_loss = (stablemax_cross_entropy(logits, labels, mask) / loss_divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_is_correct.to(q_halt.dtype), reduction="sum")
        metrics.update(lm_loss=lm_loss.detach(), q_halt_loss=q_halt_loss.detach())
        return new_carry, lm_loss + 0.5 * q_halt_loss, metrics


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, valid_mask: Tensor) -> Tensor:
    x = logits.to(torch.float64)
    s_x = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    logprobs = torch.log(s_x / torch.sum(s_x, dim=-1, keepdim=True))
    transformed = torch.where(valid_mask, labels, 0)
    picked = torch.gather(logprobs, index=transformed.to(torch.long).unsqueeze(-1), dim=-1).squeeze(-1)
    return -torch.where(valid_mask, picked, 0)


class EMAHelper:
    def __init__(self, module: nn.Module, mu: float):
        self.mu = mu
        self.shadow = {n: p.data.clone() for n, p in module.named_parameters() if p.requires_grad}

    def update(self, module: nn.Module) -> None:
        for name, param in module.named_parameters():
            if param.requires_grad:
                self.shadow[name].data = (1.0 - self.mu) * param.data + self.mu * self.shadow[name].data


def covers(model: ModelConfig) -> bool:
    """Whether the official TRM step structure here is the same computation as ponder's model `model`: TRM with
    its two latents and the paper's halting (not single_z, not the continue head)."""
    return model.family == "trm" and not model.single_z and not model.act_continue


def official_step(cfg: Config, vocab_size: int, seq_len: int, inputs: Tensor, labels: Tensor,
                  forward_dtype: torch.dtype = torch.float32, compile_backend: str = "off"):
    """A closure running one official training step on the batch (slots never refilled, as in the bench's own
    step: the compute does not depend on which examples the slots hold). compile_backend: as the official
    `pretrain.py` does by default, the model with its loss head through `torch.compile(dynamic=False)`."""
    tc = cfg.train
    torch.manual_seed(0)
    model = OfficialTRM(cfg, vocab_size, seq_len, forward_dtype).to(inputs.device).train()
    forward = model if compile_backend == "off" else torch.compile(model, backend=compile_backend, dynamic=False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    ema = EMAHelper(model, tc.ema_rate) if tc.ema else None
    batch = {"inputs": inputs, "labels": labels}
    state = {"carry": model.initial_carry(batch)}  # every slot halted: the first step takes the batch
    b = inputs.shape[0]

    def step() -> None:
        state["carry"], loss, metrics = forward(state["carry"], batch)
        ((1 / b) * loss).backward()
        opt.step()
        opt.zero_grad()
        torch.stack([metrics[k] for k in sorted(metrics)]).cpu()
        if ema is not None:
            ema.update(model)

    return step
