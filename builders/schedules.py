"""The cosine learning-rate schedule every training loop of the builder follows (recover, teachers,
the student protocol, continual learning): one formula, so their learning rates agree to the bit."""

from __future__ import annotations

import math

import torch


def cosine_factor(step: int, total_steps: int) -> float:
    """The fraction of the base learning rate at ``step`` of ``total_steps``: 1 at step 0, falling on
    a half cosine to 0 at ``total_steps``, and 0 after it."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``optimizer``'s learning rates times :func:`cosine_factor`, one step per ``schedule.step()``."""
    # A lambda, not a callable object: LambdaLR then keeps no state of it in state_dict (checkpoints).
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total_steps))


__all__ = ["cosine_factor", "cosine_schedule"]
