"""The one cosine schedule against the formulas each training loop used before it, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from builders.presets import PRESETS
from builders.schedules import cosine_factor, cosine_schedule

# The settings the builds use (every preset's recover lr and length, the student and teacher lrs) and
# awkward ones (one step, odd and prime lengths, bases that are not a power of two).
BASES = sorted({p.lr for p in PRESETS.values()} | {p.eval_lr for p in PRESETS.values()} | {1e-3, 2e-3, 0.01, 0.1, 0.3})
TOTALS = sorted({p.total_iterations for p in PRESETS.values()} | {1, 2, 7, 997, 4200})


def old_recover_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * step / total))


def old_teacher_factor(step: int, total_steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / total_steps))


def old_student_factor(step: int, total_steps: int) -> float:  # evaluate's and continual's
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def learning_rates(schedule_for, base: float, total: int, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    schedule = schedule_for(optimizer, total)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_the_factor_starts_at_one_halves_midway_and_stays_at_zero_after_the_end():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5, abs=1e-15)
    assert cosine_factor(10, 10) == 0.0
    assert cosine_factor(11, 10) == cosine_factor(10_000, 10) == 0.0
    assert [cosine_factor(s, 4) for s in range(5)] == sorted((cosine_factor(s, 4) for s in range(5)), reverse=True)


@pytest.mark.parametrize("total", TOTALS)
def test_recover_learning_rates_are_the_old_formulas_to_the_bit(total):
    for base in BASES:
        new = [base * cosine_factor(step, total) for step in range(total)]
        assert new == [old_recover_lr(base, step, total) for step in range(total)], base


@pytest.mark.parametrize("total", [1, 7, 400, 997])
@pytest.mark.parametrize("old_factor", [old_teacher_factor, old_student_factor])
def test_the_scheduler_gives_the_old_lambda_schedulers_rates_to_the_bit(total, old_factor):
    def old(optimizer, total_steps):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: old_factor(step, total_steps))

    for base in BASES:
        # The teacher loop steps exactly total times; evaluate's schedule may be stepped past the end.
        steps = total if old_factor is old_teacher_factor else total + 3
        assert learning_rates(cosine_schedule, base, total, steps) == learning_rates(old, base, total, steps), base


def test_the_schedules_state_resumes_as_a_checkpoint_keeps_it():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = cosine_schedule(optimizer, 10)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    state = schedule.state_dict()
    assert state["lr_lambdas"] == [None]  # nothing of the function itself goes into a checkpoint
    resumed_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    resumed = cosine_schedule(resumed_optimizer, 10)
    resumed.load_state_dict(state)
    optimizer.step(), schedule.step(), resumed_optimizer.step(), resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.01 * cosine_factor(5, 10)
