"""Online posterior updates for `asd serve`: accept/reject feedback on answered requests folds
into the Beta posteriors q_i(b) of the state each request ended in — (stopped tier, p̂ bin),
climbed or started cold — through `Policy.update` (re-solved at the policy's λ), and the counts
are persisted atomically beside the policy (`asd.fsutil.atomic_write`: temporary file, fsync,
rename), so a restart keeps them. The calibrated policy file itself is never touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from asd.engine.policy import Policy
from asd.errors import ConfigError
from asd.fsutil import atomic_write

FORMAT = "asd.feedback"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeedbackStore:
    """Accepted/rejected counts per (state, tier, bin) — state 0 climbed, 1 cold — for one policy
    file, kept in a JSON file; `policy` is the calibrated policy with every count folded in."""

    def __init__(self, policy: Policy, policy_path: str | Path, path: str | Path | None = None):
        self.policy = policy
        self.persist = True  # False: counts are kept in memory only (`asd serve` beside a read-only policy)
        self.policy_path = Path(policy_path)
        self.path = Path(path) if path else self.policy_path.with_name(self.policy_path.name + ".feedback.json")
        self.policy_sha256 = file_sha256(self.policy_path)
        shape = (2, policy.n_tiers, policy.tables.n_bins)
        self.accepted = np.zeros(shape)
        self.rejected = np.zeros(shape)
        self.n = 0
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            accepted = np.asarray(data["accepted"], dtype=np.float64)
            rejected = np.asarray(data["rejected"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a readable feedback file ({type(exc).__name__}: {exc})") from None
        if data.get("format") != FORMAT or data.get("policy_sha256") != self.policy_sha256:
            raise ConfigError(f"{self.path}: feedback recorded for another policy file than {self.policy_path} "
                              "(move it away to start afresh)")
        if accepted.shape != self.accepted.shape or rejected.shape != self.rejected.shape:
            raise ConfigError(f"{self.path}: counts have shape {accepted.shape}, the policy needs {self.accepted.shape}")
        if (accepted < 0).any() or (rejected < 0).any() or not (np.isfinite(accepted).all() and np.isfinite(rejected).all()):
            raise ConfigError(f"{self.path}: counts must be finite and >= 0")
        self.policy = _folded(self.policy, accepted, rejected)
        self.accepted, self.rejected, self.n = accepted, rejected, int(data.get("n", 0))

    def add(self, tier: int, bin_: int, cold: bool, accepted: bool) -> Policy:
        """Record one observation, update the policy, persist; returns the updated policy. All
        or nothing: where the file cannot be written (OSError raised) nothing is counted, so a
        client that retries is not counted twice."""
        accepted_delta, rejected_delta = np.zeros_like(self.accepted), np.zeros_like(self.rejected)
        (accepted_delta if accepted else rejected_delta)[int(cold), tier, bin_] = 1.0
        policy = _folded(self.policy, accepted_delta, rejected_delta)
        counts = (self.accepted + accepted_delta, self.rejected + rejected_delta, self.n + 1)
        if self.persist:
            self._write(*counts)
        self.accepted, self.rejected, self.n = counts
        self.policy = policy
        return policy

    def save(self) -> None:
        self._write(self.accepted, self.rejected, self.n)

    def _write(self, accepted: np.ndarray, rejected: np.ndarray, n: int) -> None:
        payload = {"format": FORMAT, "policy": str(self.policy_path), "policy_sha256": self.policy_sha256,
                   "n": n, "states": ["climbed", "cold"], "accepted": accepted.tolist(), "rejected": rejected.tolist()}
        atomic_write(self.path, json.dumps(payload).encode())  # creates missing directories

    def summary(self) -> dict:
        return {"path": str(self.path), "observations": self.n,
                "accepted": int(self.accepted.sum()), "rejected": int(self.rejected.sum())}


def _folded(policy: Policy, accepted: np.ndarray, rejected: np.ndarray) -> Policy:
    """`policy` with one observation per count folded in by `Policy.update` (a new policy; the
    old one is kept by whoever still holds it until they take the new one)."""
    rows = []
    for outcome, counts in ((1.0, accepted), (0.0, rejected)):
        for state, tier, bin_ in zip(*np.nonzero(counts)):
            rows += [(tier, bin_, state, outcome)] * int(round(counts[state, tier, bin_]))
    if not rows:
        return policy
    tier, bin_, cold, outcome = (np.array(c) for c in zip(*rows))
    return policy.update(tier, outcome, bins=bin_, cold=cold.astype(bool))
