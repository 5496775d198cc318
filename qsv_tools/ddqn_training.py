"""The paper's double-DQN policy over (L, ℓ), trained in the simulator (torch; imported only when used).

State: the last 64 draft confidences q(x) of accepted draft tokens (zero-padded, most recent last) and the uplink
state (0 low / 1 high). Actions: L ∈ {1..10, 12} × two ℓ values = 22. Reward per round 0.5·E[N]/T (E[N] from the
verifier's α), the last round of an episode gets episode tokens / episode time. Discount 0.1, Adam lr 1e-4,
batch 64, replay 10,000, target network copied every 30 steps, ε 1.0 → 0.01 (×0.998 per episode).
Net: 64→128→128 (window) ‖ 2→32→32 (mean, last confidence) ‖ 1→16→16 (channel) → 128 → actions.
Rewards are multiplied by ``reward_scale`` (default 1/50) to keep Q values O(1); this does not change the policy.

Boards run the trained policy without torch: ``DdqnController.export_onnx`` (or :func:`export_policy_onnx` for a
saved ``.pt``) writes the ONNX format that :mod:`edge_runtime.controller.ddqn_policy` loads.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_runtime.controller.base import Controller
from edge_runtime.controller.ddqn_policy import ONNX_INPUT, ONNX_OUTPUT, PAPER_LENGTHS, STATE_DIM, WINDOW, DdqnPolicy
from edge_runtime.controller.model import expected_tokens
from edge_runtime.controller.types import ChannelView, ControllerError, Decision, RoundObservation

__all__ = ["PAPER_LENGTHS", "WINDOW", "DdqnController", "DdqnHyper", "QNet", "ReplayBuffer", "TrainLog",
           "export_policy_onnx", "train_ddqn"]

log = logging.getLogger(__name__)


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


class DdqnController(DdqnPolicy):
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
        super().__init__(ells, lengths, state_of_view=state_of_view, state_rates_bps=state_rates_bps)
        self.hyper = hyper or DdqnHyper()
        self._gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.online = QNet(len(self.actions))
        self.target = QNet(len(self.actions))
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=self.hyper.lr)
        self.replay = ReplayBuffer(self.hyper.replay, STATE_DIM, seed)
        self._rng = random.Random(seed)
        self.epsilon = 0.0
        self.steps = 0
        self.losses: list[float] = []

    # --- Controller interface (state, choose, observe, reset: DdqnPolicy) ---
    def q_values(self, states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32).reshape(-1, STATE_DIM))
            return self.online(x).numpy()

    def act(self, state: np.ndarray) -> int:
        if self.epsilon > 0 and self._rng.random() < self.epsilon:
            return self._rng.randrange(len(self.actions))
        with torch.no_grad():
            return int(self.online(torch.from_numpy(state)[None]).argmax(1).item())

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
        blob = {"state_dict": self.online.state_dict(), "ells": list(self.ells), "lengths": list(self.lengths),
                "window": WINDOW}
        if self.state_rates_bps:
            blob["state_rates_bps"] = list(self.state_rates_bps)
        torch.save(blob, path)

    def export_onnx(self, path: str | Path, opset: int = 17) -> Path:
        """Write the online Q network as the board's policy format: ONNX ``state`` [B, 67] → ``q`` [B, actions] with
        the action grid in its ``qsv.*`` metadata (loaded torch-free by ``ddqn_policy.OnnxDdqnController``)."""
        import warnings

        import onnx

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        net = QNet(len(self.actions)).eval()
        net.load_state_dict(self.online.state_dict())
        # the TorchScript exporter is deprecated but exact and fast for this MLP
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, (torch.zeros(1, STATE_DIM),), str(path), dynamo=False, input_names=[ONNX_INPUT],
                              output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: {0: "batch"},
                                                                        ONNX_OUTPUT: {0: "batch"}},
                              opset_version=opset)
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, self.onnx_metadata())
        onnx.save(model, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path, **kw: object) -> DdqnController:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("window") != WINDOW:
            raise ControllerError(f"{path}: window {blob.get('window')} != {WINDOW}")
        if blob.get("state_rates_bps") and "state_rates_bps" not in kw:
            kw["state_rates_bps"] = blob["state_rates_bps"]
        ctl = cls(ells=blob["ells"], lengths=blob["lengths"], **kw)  # type: ignore[arg-type]
        ctl.online.load_state_dict(blob["state_dict"])
        ctl.target.load_state_dict(blob["state_dict"])
        return ctl


def export_policy_onnx(pt_path: str | Path, onnx_path: str | Path | None = None) -> Path:
    """Convert a saved policy (``DdqnController.save``, .pt) to the board's ONNX format; default output: the same
    name with ``.onnx``."""
    pt_path = Path(pt_path)
    return DdqnController.load(pt_path).export_onnx(onnx_path or pt_path.with_suffix(".onnx"))


def export_main(argv: Sequence[str] | None = None) -> int:
    """``qsv experiment ddqn-onnx POLICY.pt [OUT.onnx]``: write a saved policy in the board's ONNX format."""
    import argparse

    parser = argparse.ArgumentParser(prog="qsv experiment ddqn-onnx", description=export_main.__doc__)
    parser.add_argument("policy", type=Path, help="policy saved by training (ddqn_<scenario>.pt)")
    parser.add_argument("out", type=Path, nargs="?", help="output .onnx (default: POLICY with .onnx)")
    args = parser.parse_args(argv)
    print(export_policy_onnx(args.policy, args.out))  # the command's result on stdout
    return 0


@dataclass
class TrainLog:
    episode_throughput: list[float]
    losses: list[float]


class _Exploring(Controller):
    """The agent while it trains, as the episode's controller: ε-greedy actions, no early stop; after every round
    (``round_done``, run_episode's hook) the transition (s, a, r, s', done) goes to the replay buffer and the online
    network takes one learning step."""

    def __init__(self, agent: DdqnController, executor: Any, max_new_tokens: int, log: TrainLog) -> None:
        self.agent = agent
        self.name = agent.name
        self.executor = executor
        self.max_new_tokens = max_new_tokens
        self.log = log
        self.tokens, self.elapsed = 0, 0.0
        self._next: np.ndarray | None = None  # s' of the last round: the next round's state
        self._sa: tuple[np.ndarray, int] | None = None

    def reset(self) -> None:
        self.agent.reset()
        self.tokens, self.elapsed, self._next = 0, 0.0, None

    def choose(self, channel: ChannelView | None = None) -> Decision:
        s = self._next if self._next is not None else self.agent.state(channel)
        a = self.agent.act(s)
        self._sa = (s, a)
        length, ell = self.agent.actions[a]
        return Decision(length, ell)

    def observe(self, obs: RoundObservation) -> None:
        self.agent.observe(obs)

    def round_done(self, decision: Decision, res: Any) -> None:
        assert self._sa is not None
        h = self.agent.hyper
        self.tokens += res.emitted
        self.elapsed += res.round_time_s
        done = self.tokens >= self.max_new_tokens
        obs = res.observation
        alphas = obs.alphas if obs.alphas is not None else [1.0] * obs.accepted + [0.0]
        r = self.tokens / self.elapsed if done else 0.5 * expected_tokens(alphas[:obs.drafted]) / res.round_time_s
        s2 = self.agent.state(self.executor.channel_view())
        s, a = self._sa
        self.agent.replay.append((s, a, r * h.reward_scale, s2, done))
        loss = self.agent.learn_step()
        if loss is not None:
            self.log.losses.append(loss)
        self._next = s2


def train_ddqn(
    agent: DdqnController,
    executor: Any,
    seqs: Sequence[int],
    episodes: int,
    max_new_tokens: int,
    eps_decay: float | None = None,
    progress: bool = False,
) -> TrainLog:
    """Train ``agent`` on a setup of qsv_tools.sim (normally SimRoundExecutor) for ``episodes`` episodes cycling
    ``seqs``: each episode is one generation of the round engine (qsv_tools.sim.episode.run_episode)."""
    from tqdm import tqdm

    from qsv_tools.sim.episode import run_episode

    h = agent.hyper
    decay = h.eps_decay if eps_decay is None else eps_decay
    agent.epsilon = h.eps_start
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny network: one thread is fastest and leaves the other cores alone
    out = TrainLog([], [])
    trainer = _Exploring(agent, executor, max_new_tokens, out)
    try:
        for ep in tqdm(range(episodes), disable=not progress, desc="ddqn", unit="ep"):
            result = run_episode(trainer, executor, seqs[ep % len(seqs)], max_new_tokens, on_round=trainer.round_done)
            out.episode_throughput.append(result.throughput)
            agent.epsilon = max(h.eps_end, agent.epsilon * decay)
            if h.lr_end is not None:
                lr = h.lr + (h.lr_end - h.lr) * (ep + 1) / episodes
                for group in agent.opt.param_groups:
                    group["lr"] = lr
    finally:
        torch.set_num_threads(threads)
    agent.epsilon = 0.0
    return out
