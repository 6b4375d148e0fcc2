"""GRPO without intermediate supervision (the 1dCA study's section 5b; Shao et al. 2024, DeepSeekMath): a causal
sequence model learns to predict s_{c-1+k} from the reward of its own sampled answers, never seeing an intermediate
state. `ponder train PRESET train.regime=grpo` runs it (a `ponder compare` / `ponder study` member too).

One step, for P = train.batch_size / group_size prompts of the causal layout (`SEP s_0 .. SEP s_{c-1} [K] GEN`):
1. sample G = grpo.group_size completions per prompt from the current policy softmax(logits / temperature), with the
   model's KV cache (`Sequence.generate`), each up to grpo.reasoning_tokens + W + 1 tokens; a PAD (the reference's
   eos) ends a completion, and the tokens after it are neither rewarded nor trained. grpo.sampling=parallel draws
   the W answer cells independently from one pass over the masked target instead: the policy that a model trained
   from masks (the causal layout's supervised checkpoint) actually is; decoding such a model token by token feeds it
   inputs it never saw in training (measured on a d-64 GPT-NeoX: 35.9% exact from masks, 6.2% decoded greedily);
2. reward r = the fraction of the W target cells the answer gets right (`Task.reward`: the answer is the first W
   tokens, or with reasoning tokens the W tokens after the last SEP); nothing rewards intermediate states;
3. advantage A = (r - mean of its group) / (std of its group + std_eps) (the unbiased std, as TRL's GRPOTrainer);
4. loss = mean over completions of the mean over their tokens of
      -min(rho A, clip(rho, 1 - clip, 1 + clip) A) + beta KL_t,   rho = pi(o_t) / pi_old(o_t),
   KL_t = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator against the frozen initial model), as in the GRPO
   paper; grpo.iterations optimiser steps per batch of completions (1: pi_old = pi, rho = 1 and the gradient is the
   plain group-normalised policy gradient; more: the clipping bites);
5. log reward, its spread within groups, completion length, exact answers per k, KL and the clipped fraction.

Why not TRL's `GRPOTrainer`: it wants a `transformers` model with a tokenizer and string prompts from a `datasets`
dataset, and its own checkpointing; ponder's LSTM and Mamba are not HF models, the 1dCA tokens are not text, and a
run here must resume bit-identically through the run layer like every other trainer (tests/test_regimes.py). The loop
is the ~100 lines below; the maths is tested against a hand-computed group.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ponder import UserError, checkpoint, distributed, runtime
from ponder.config import Config
from ponder.evaluate import completion_length, evaluate_during_training
from ponder.models import build_model, count_params
from ponder.optim import build_optimizer, set_lr
from ponder.run import (Loop, Meter, Resumable, Run, RunLog, check_finite, resume_point, resumed_precision, run_meta,
                        warm_start)
from ponder.tasks import prepare_data, task_for
from ponder.tasks.batches import Sampler, batch_tensors
from ponder.tasks.dataset import read_split

END = 0  # PAD ends a completion (the dataset's pad id; the reference maps it to its eos)


# ---------------------------------------------------------------------------------------------------------------------
# the maths


def group_advantages(rewards: Tensor, group: int, eps: float = 1e-4) -> Tensor:
    """(N,) rewards, consecutive groups of `group` completions of one prompt -> (N,) advantages."""
    r = rewards.float().view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).view(-1)


def completion_mask(completion: Tensor, end: int = END) -> Tensor:
    """(N, M) bool: the tokens of each completion up to and including its first end token."""
    ends = (completion == end).int()
    return (torch.cumsum(ends, 1) - ends) == 0


def clipped_objective(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip: float,
                      beta: float = 0.0, ref_logp: Tensor | None = None) -> tuple[Tensor, dict]:
    """The GRPO loss (to minimise) from per-token log-probabilities (N, M) of the sampled tokens under the policy,
    the sampling policy and the reference, advantages (N,) and the completion mask (N, M)."""
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    per_token = -torch.minimum(ratio * a, torch.clamp(ratio, 1 - clip, 1 + clip) * a)
    kl = torch.zeros_like(logp)
    if beta > 0:
        diff = ref_logp - logp
        kl = torch.exp(diff) - diff - 1
        per_token = per_token + beta * kl
    m = mask.float()
    lengths = m.sum(1).clamp_min(1)
    loss = ((per_token * m).sum(1) / lengths).mean()
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float()
        stats = {"kl": float(((kl * m).sum(1) / lengths).mean()),
                 "clipped": float((clipped * m).sum() / m.sum().clamp_min(1))}
    return loss, stats


def token_logprobs(model, seq: Tensor, positions: Tensor, tokens: Tensor, temperature: float
                   ) -> tuple[Tensor, Tensor | None]:
    """(N, M) log pi(tokens) at `positions` (M,) of a pass over `seq` (the policy softmax(logits / T) that sampled
    them), and the per-example ACT ponder cost of the pass (None without ACT)."""
    out = model(model.initial_state(seq.shape[0], seq.device), seq, torch.zeros_like(seq[:, 0]))
    logits = out.logits[:, positions].float() / temperature  # aligned: position t holds the prediction of token t
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return logp, out.aux_loss


def sample(model, inputs: Tensor, answer: Tensor, start: int, length: int, cfg: Config, generator
           ) -> tuple[Tensor, Tensor, Tensor]:
    """(completions (N, M), the sequence the policy reads them from, their positions (M,)) for N = prompts x group.
    autoregressive: token by token after the prompt, each fed back; parallel: the answer positions' tokens drawn
    independently from one pass over the inputs (the masks stay inputs)."""
    gc = cfg.grpo
    if gc.sampling == "autoregressive":
        prompt = inputs[:, :start].repeat_interleave(gc.group_size, 0)
        completion = model.generate(prompt, length, gc.temperature, generator)
        return completion, torch.cat((prompt, completion), 1), torch.arange(start, start + length)
    seq = inputs.repeat_interleave(gc.group_size, 0)
    logits = model(model.initial_state(seq.shape[0], seq.device), seq, torch.zeros_like(seq[:, 0])).logits
    probs = torch.softmax(logits[:, answer].float() / gc.temperature, -1)  # (N, W, V)
    drawn = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    return drawn, seq, answer


# ---------------------------------------------------------------------------------------------------------------------
# the loop


def check_setup(cfg: Config, task, model) -> int:
    """The prompt length; refuse what GRPO cannot run on."""
    if distributed.world().parallel:
        raise UserError("train.regime=grpo runs in one process (no torchrun)")
    if not model.generates:
        raise UserError(f"train.regime=grpo samples answers token by token: model.family must be neox, lstm or mamba, "
                        f"got {cfg.model.family}")
    if task.policy_refusal():
        raise UserError(task.policy_refusal())
    if cfg.grpo.sampling == "parallel" and task.teacher_forced:
        raise UserError("grpo.sampling=parallel reads the answer positions' inputs, which this layout fills with the "
                        "true answer: use grpo.sampling=autoregressive (or data.ca1d.layout=causal, the masks)")
    if cfg.train.ema:
        raise UserError("train.regime=grpo samples from, trains and saves the weights themselves, with no moving "
                        "average: set train.ema=false")
    if cfg.train.batch_size % cfg.grpo.group_size:
        raise UserError(f"train.batch_size={cfg.train.batch_size} (completions per step) must be divisible by "
                        f"grpo.group_size={cfg.grpo.group_size}")
    return task.prompt_length()


@torch.no_grad()
def frozen_logprobs(model, reference, seq, where, completion, cfg: Config, device) -> tuple:
    """(the sampling policy's log-probabilities, kept fixed over grpo.iterations > 1 updates, else None; the
    frozen reference's for the KL penalty, else None)."""
    gc = cfg.grpo
    with runtime.autocast(cfg.train.dtype, device):
        old = token_logprobs(model, seq, where, completion, gc.temperature)[0] if gc.iterations > 1 else None
        ref = token_logprobs(reference, seq, where, completion, gc.temperature)[0] if reference is not None else None
    return old, ref


def add_metrics(meter: Meter, loss, reward, mask, stats: dict, strata: np.ndarray | None, group_size: int) -> None:
    """One GRPO step's metrics: loss, mean reward and its spread within groups, exact answers (overall and per
    stratum of the task, `strata` per prompt: 1dCA's k, as exact_k1 ...), completion length, KL to the reference,
    share of clipped ratios."""
    meter.add("loss", loss.item())
    meter.add("reward", float(reward.sum()), len(reward))
    meter.add("reward_std", float(reward.view(-1, group_size).std(1).sum()), len(reward) // group_size)
    meter.add("exact", float((reward == 1).sum()), len(reward))
    meter.add("completion_length", float(mask.sum()), len(reward))
    meter.add("kl", stats["kl"])
    meter.add("clipped", stats["clipped"])
    if strata is None:
        return
    strata = np.repeat(strata, group_size)
    for label in np.unique(strata):
        meter.add(f"exact_{label.replace('=', '')}", float((reward.cpu().numpy()[strata == label] == 1).sum()),
                  float((strata == label).sum()))


def train_grpo(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
               until: int | None = None) -> Run:
    run_dir = Path(run_dir)
    tc, gc = cfg.train, cfg.grpo
    device = runtime.resolve_device(tc.device)
    point = resume_point(run_dir, cfg, keep=("model", "train.batch_size", "grpo")) if resume else None
    data_dir = prepare_data(cfg.data, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runtime.set_threads(tc.threads, device)
    cfg = runtime.settle_dtype(resumed_precision(cfg, point), device)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    arrays, meta = read_split(data_dir, "train")
    task = task_for(cfg.data, meta, data_dir)
    model = build_model(cfg.model, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers).to(device)
    start = check_setup(cfg, task, model)
    # the from-checkpoint variant: a supervised model; loaded on resume too, as the KL penalty's frozen reference
    started = warm_start(model, tc.init) if tc.init else {}
    reference = copy.deepcopy(model).eval().requires_grad_(False) if gc.beta > 0 else None  # the KL penalty's
    params = list(model.parameters())
    opt = build_optimizer(model, tc)
    sampler = Sampler(arrays, tc.seed)
    gen = torch.Generator(device=device).manual_seed(tc.seed)  # the completions' sampling
    aug_rng = np.random.default_rng([tc.seed, 1])
    prompts = tc.batch_size // gc.group_size
    length = completion_length(cfg, meta.seq_len, start)
    answer = torch.as_tensor(task.answer_positions(), device=device)  # parallel sampling: the masked positions
    reasoning = gc.reasoning_tokens > 0
    resumable = Resumable(torch_rng=True, optimizer=opt, sampler=sampler, generator=gen, aug_rng=aug_rng,
                          reference=reference)
    step, elapsed, seen = resumable.restore(point, model) if point is not None else (0, 0.0, 0)

    log = RunLog(run_dir, cfg, step=step)
    meta_out = run_meta(meta, count_params(model), data_dir, 1, **started)

    def save(step: int, metrics: dict, elapsed: float) -> Path:
        return checkpoint.save(run_dir, step, model.state_dict(), None, resumable.state(step, elapsed, seen), cfg,
                               {**meta_out, "metrics": {**metrics, "examples_seen": seen}}, keep=tc.keep_checkpoints)

    meter = Meter()
    with Loop(tc, log, save, run_dir, step, elapsed, until, progress) as loop:
        for step in loop:
            lr = set_lr(step, tc, opt)
            inputs, labels, _ = batch_tensors(arrays, sampler.take(prompts), meta.ignore_label_id, device,
                                              task if tc.augment else None, aug_rng)
            seen += prompts
            model.eval()
            with torch.no_grad(), runtime.autocast(tc.dtype, device):
                completion, seq, where = sample(model, inputs, answer, start, length, cfg, gen)
            model.train()
            target = labels.repeat_interleave(gc.group_size, 0).cpu().numpy()
            reward = torch.as_tensor(task.reward(completion.cpu().numpy(), target, reasoning), device=device)
            advantages = group_advantages(reward, gc.group_size, gc.std_eps)
            mask = completion_mask(completion) if gc.sampling == "autoregressive" else torch.ones_like(completion,
                                                                                                      dtype=torch.bool)
            old, ref = frozen_logprobs(model, reference, seq, where, completion, cfg, device)
            for _ in range(gc.iterations):
                with runtime.autocast(tc.dtype, device):
                    logp, cost = token_logprobs(model, seq, where, completion, gc.temperature)
                    loss, stats = clipped_objective(logp, logp.detach() if old is None else old, advantages, mask,
                                                    gc.clip, gc.beta, ref)
                    if cost is not None:  # per-token ACT: the ponder cost, as in supervised training
                        loss = loss + cost.mean()
                check_finite(loss, step, "try a lower train.lr")
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)

            add_metrics(meter, loss, reward, mask, stats, task.strata(inputs.cpu().numpy()), gc.group_size)
            if loop.log_due:
                loop.log({"lr": lr, **meter.flush(), "examples_seen": seen},
                         "reward {reward:.3f} exact {exact:.3f} length {completion_length:.1f}")
            if loop.due(tc.eval_every):
                loop.log_eval({**evaluate_during_training(cfg, model, None, data_dir, device), "examples_seen": seen},
                              "step {step}: eval exact {eval_exact:.3f} (greedy answers)")
    return loop.result
