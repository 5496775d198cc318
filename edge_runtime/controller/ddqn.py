"""The paper's double-DQN policy over (L, ℓ), trained in the simulator (torch; imported only when used).

State: the last 64 draft confidences q(x) of accepted draft tokens (zero-padded, most recent last) and the uplink
state (0 low / 1 high). Actions: L ∈ {1..10, 12} × two ℓ values = 22. Reward per round 0.5·E[N]/T (E[N] from the
verifier's α), the last round of an episode gets episode tokens / episode time. Discount 0.1, Adam lr 1e-4,
batch 64, replay 10,000, target network copied every 30 steps, ε 1.0 → 0.01 (×0.998 per episode).
Net: 64→128→128 (window) ‖ 2→32→32 (mean, last confidence) ‖ 1→16→16 (channel) → 128 → actions.
Rewards are multiplied by ``reward_scale`` (default 1/50) to keep Q values O(1); this does not change the policy.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import Controller
from .model import expected_tokens
from .types import ChannelView, ControllerError, Decision, RoundObservation

log = logging.getLogger(__name__)

PAPER_LENGTHS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12)
WINDOW = 64


@dataclass(frozen=True)
class DdqnHyper:
    discount: float = 0.1
    lr: float = 1e-4
    lr_end: float | None = None  # linear decay of the learning rate to this over training (None: constant)
    batch: int = 64
    replay: int = 10_000
    target_every: int = 30
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay: float = 0.998
    reward_scale: float = 1.0 / 50.0


class ReplayBuffer:
    """Fixed-size ring buffer of transitions in preallocated arrays (O(1) add, O(batch) sample)."""

    def __init__(self, capacity: int, state_dim: int, seed: int = 0) -> None:
        self.s = np.zeros((capacity, state_dim), dtype=np.float32)
        self.s2 = np.zeros((capacity, state_dim), dtype=np.float32)
        self.a = np.zeros(capacity, dtype=np.int64)
        self.r = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)
        self.capacity = capacity
        self.size = 0
        self._next = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def append(self, item: tuple[np.ndarray, int, float, np.ndarray, bool]) -> None:
        i = self._next
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = item[0], item[1], item[2], item[3], float(item[4])
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        idx = self._rng.integers(0, self.size, n)
        return (torch.from_numpy(self.s[idx]), torch.from_numpy(self.a[idx]), torch.from_numpy(self.r[idx]),
                torch.from_numpy(self.s2[idx]), torch.from_numpy(self.done[idx]))


class QNet(nn.Module):
    def __init__(self, n_actions: int, window: int = WINDOW) -> None:
        super().__init__()
        self.window = window
        self.win = nn.Sequential(nn.Linear(window, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.stats = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.chan = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(128 + 32 + 16, 128), nn.ReLU(), nn.Linear(128, n_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        return self.head(torch.cat([self.win(x[:, :w]), self.stats(x[:, w:w + 2]), self.chan(x[:, w + 2:w + 3])], 1))


class DdqnController(Controller):
    """Greedy (or ε-greedy while training) policy from a Q network. No per-token early stop (as in the paper)."""

    def __init__(
        self,
        ells: Sequence[int] = (240, 720),
        lengths: Sequence[int] = PAPER_LENGTHS,
        hyper: DdqnHyper | None = None,
        seed: int = 0,
        state_of_view: Callable[[ChannelView | None], int] | None = None,
        state_rates_bps: Sequence[float] | None = None,
    ) -> None:
        """``state_rates_bps``: the rates of the channel states (low, high); when the executor gives no channel view,
        the state is the one nearest to the last measured uplink rate (ChannelEstimator)."""
        if not ells or not lengths or min(lengths) < 1 or min(ells) < 1:
            raise ControllerError("need non-empty positive ells and lengths")
        self.ells = tuple(ells)
        self.lengths = tuple(lengths)
        self.actions = [(L, e) for e in self.ells for L in self.lengths]
        self.hyper = hyper or DdqnHyper()
        self._gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.online = QNet(len(self.actions))
        self.target = QNet(len(self.actions))
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=self.hyper.lr)
        self.replay = ReplayBuffer(self.hyper.replay, WINDOW + 3, seed)
        self._rng = random.Random(seed)
        self.epsilon = 0.0
        self.steps = 0
        self.estimator = None
        if state_rates_bps:
            from edge_runtime.channel.estimator import ChannelEstimator

            self.estimator = ChannelEstimator(prior_rate_bps=float(np.mean(state_rates_bps)),
                                              state_rates_bps=state_rates_bps)
        self.state_of_view = state_of_view or self._state_of_view
        self._window: deque[float] = deque(maxlen=WINDOW)
        self.name = "ddqn"
        self.losses: list[float] = []

    def _state_of_view(self, view: ChannelView | None) -> int:
        if view is not None and view.state is not None:
            return int(view.state)
        if self.estimator is not None and self.estimator.rounds:
            return int(self.estimator.view(use_last=True).state or 0)
        return 0

    # --- Controller interface ---
    def state(self, channel: ChannelView | None) -> np.ndarray:
        w = np.zeros(WINDOW, dtype=np.float32)
        if self._window:
            vals = np.fromiter(self._window, dtype=np.float32)
            w[-vals.size:] = vals
            stats = (float(vals.mean()), float(vals[-1]))
        else:
            stats = (0.0, 0.0)
        return np.concatenate([w, np.array([*stats, float(self.state_of_view(channel))], dtype=np.float32)])

    def act(self, state: np.ndarray) -> int:
        if self.epsilon > 0 and self._rng.random() < self.epsilon:
            return self._rng.randrange(len(self.actions))
        with torch.no_grad():
            return int(self.online(torch.from_numpy(state)[None]).argmax(1).item())

    def choose(self, channel: ChannelView | None = None) -> Decision:
        length, ell = self.actions[self.act(self.state(channel))]
        return Decision(length, ell)

    def observe(self, obs: RoundObservation) -> None:
        self._window.extend(float(c) for c in obs.confidences[:obs.accepted])
        if self.estimator is not None and obs.elapsed_s is not None and obs.uplink_bits > 0:
            self.estimator.observe_round(obs.uplink_bits, obs.elapsed_s, obs.verify_s)

    def reset(self) -> None:
        self._window.clear()

    # --- learning ---
    def learn_step(self) -> float | None:
        h = self.hyper
        if len(self.replay) < h.batch:
            return None
        s, a, r, s2, done = self.replay.sample(h.batch)
        q = self.online(s).gather(1, a[:, None]).squeeze(1)
        with torch.no_grad():
            a2 = self.online(s2).argmax(1, keepdim=True)  # double DQN: online picks, target evaluates
            y = r + h.discount * (1.0 - done) * self.target(s2).gather(1, a2).squeeze(1)
        loss = nn.functional.smooth_l1_loss(q, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.steps += 1
        if self.steps % h.target_every == 0:
            self.target.load_state_dict(self.online.state_dict())
        return float(loss.item())

    def save(self, path: str | Path) -> None:
        torch.save({"state_dict": self.online.state_dict(), "ells": list(self.ells), "lengths": list(self.lengths),
                    "window": WINDOW}, path)

    @classmethod
    def load(cls, path: str | Path, **kw: object) -> DdqnController:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("window") != WINDOW:
            raise ControllerError(f"{path}: window {blob.get('window')} != {WINDOW}")
        ctl = cls(ells=blob["ells"], lengths=blob["lengths"], **kw)  # type: ignore[arg-type]
        ctl.online.load_state_dict(blob["state_dict"])
        ctl.target.load_state_dict(blob["state_dict"])
        return ctl


@dataclass
class TrainLog:
    episode_throughput: list[float]
    losses: list[float]


def train_ddqn(
    agent: DdqnController,
    executor: object,
    seqs: Sequence[int],
    episodes: int,
    max_new_tokens: int,
    eps_decay: float | None = None,
    progress: bool = False,
) -> TrainLog:
    """Train ``agent`` on a RoundExecutor (normally SimRoundExecutor) for ``episodes`` episodes cycling ``seqs``."""
    from tqdm import tqdm

    h = agent.hyper
    decay = h.eps_decay if eps_decay is None else eps_decay
    agent.epsilon = h.eps_start
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny network: one thread is fastest and leaves the other cores alone
    out = TrainLog([], [])
    try:
        for ep in tqdm(range(episodes), disable=not progress, desc="ddqn", unit="ep"):
            agent.reset()
            executor.begin(seqs[ep % len(seqs)])  # type: ignore[attr-defined]
            tokens, elapsed = 0, 0.0
            s = agent.state(executor.channel_view())  # type: ignore[attr-defined]
            while tokens < max_new_tokens:
                a = agent.act(s)
                length, ell = agent.actions[a]
                res = executor.execute(Decision(length, ell), lambda c, p: True)  # type: ignore[attr-defined]
                agent.observe(res.observation)
                tokens += res.emitted
                elapsed += res.round_time_s
                done = tokens >= max_new_tokens
                obs = res.observation
                alphas = obs.alphas if obs.alphas is not None else [1.0] * obs.accepted + [0.0]
                r = tokens / elapsed if done else 0.5 * expected_tokens(alphas[:obs.drafted]) / res.round_time_s
                s2 = agent.state(executor.channel_view())  # type: ignore[attr-defined]
                agent.replay.append((s, a, r * h.reward_scale, s2, done))
                loss = agent.learn_step()
                if loss is not None:
                    out.losses.append(loss)
                s = s2
            out.episode_throughput.append(tokens / elapsed)
            agent.epsilon = max(h.eps_end, agent.epsilon * decay)
            if h.lr_end is not None:
                lr = h.lr + (h.lr_end - h.lr) * (ep + 1) / episodes
                for group in agent.opt.param_groups:
                    group["lr"] = lr
    finally:
        torch.set_num_threads(threads)
    agent.epsilon = 0.0
    return out
