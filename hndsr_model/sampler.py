"""DDIM sampling with a cosine noise schedule in continuous time (diffusers' DDIM as the model).

The state is ``x_t = alpha_t * x0 + sigma_t * eps`` with ``alpha_t = cos(pi t / 2)`` and
``sigma_t = sin(pi t / 2)``; the network predicts ``v = alpha_t * eps - sigma_t * x0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# t = 1 would make alpha exactly 0; start slightly inside so x0 stays recoverable.
T_MAX = 0.999


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise coefficients at time(s) ``t`` in [0, 1]."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward process: ``(x_t, v_target)`` for a batch with per-sample times ``t (B,)``."""
    alpha, sigma = (c[:, None, None, None] for c in alpha_sigma(t))
    return alpha * x0 + sigma * noise, alpha * noise - sigma * x0


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic (eta = 0) DDIM over ``steps`` evenly spaced times from ``T_MAX`` to 0."""

    steps: int

    def timesteps(self) -> list[float]:
        """Times visited, from noisiest to clean: ``steps + 1`` values ending at 0."""
        return [T_MAX * (1 - i / self.steps) for i in range(self.steps + 1)]

    def step(self, v: torch.Tensor, t: float, t_next: float, x_t: torch.Tensor) -> torch.Tensor:
        """Move ``x_t`` from time ``t`` to ``t_next`` given the network's v-prediction."""
        alpha, sigma = alpha_sigma(torch.tensor(t))
        alpha_next, sigma_next = alpha_sigma(torch.tensor(t_next))
        x0 = alpha * x_t - sigma * v
        eps = sigma * x_t + alpha * v
        return alpha_next * x0 + sigma_next * eps
