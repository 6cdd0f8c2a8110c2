"""Online posterior updates for `asd serve`: accept/reject feedback on answered requests folds
into the Beta posteriors q_i(b) of the (stopped tier, p̂ bin) each request ended in, the policy is
re-solved for its λ, and the counts are persisted atomically (temporary file + fsync + rename)
beside the policy, so a restart keeps them. The calibrated policy file itself is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from asd.engine.policy import Policy
from asd.errors import ConfigError

FORMAT = "asd.feedback"


def update_posteriors(policy: Policy, accepted: np.ndarray, rejected: np.ndarray) -> None:
    """Fold observed counts per (tier, bin), each (L, B), into the policy's Beta posteriors and
    re-solve at its λ: α += accepted, β += rejected, n_obs += both."""
    tables = policy.tables
    tables.alpha[...] += accepted
    tables.beta[...] += rejected
    tables.n_obs[...] += accepted + rejected
    policy.q_stop, policy.q_mean = tables.quality(policy.risk)
    policy.solve(policy.lam)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeedbackStore:
    """Accepted/rejected counts per (tier, bin) for one policy file, kept in a JSON file."""

    def __init__(self, policy: Policy, policy_path: str | Path, path: str | Path | None = None):
        self.policy = policy
        self.policy_path = Path(policy_path)
        self.path = Path(path) if path else self.policy_path.with_name(self.policy_path.name + ".feedback.json")
        self.policy_sha256 = file_sha256(self.policy_path)
        shape = (policy.n_tiers, policy.tables.n_bins)
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
        self.accepted, self.rejected, self.n = accepted, rejected, int(data.get("n", 0))
        update_posteriors(self.policy, accepted, rejected)

    def add(self, tier: int, bin_: int, accepted: bool) -> None:
        """Record one observation, update the policy, persist."""
        accepted_delta, rejected_delta = np.zeros_like(self.accepted), np.zeros_like(self.rejected)
        (accepted_delta if accepted else rejected_delta)[tier, bin_] = 1.0
        update_posteriors(self.policy, accepted_delta, rejected_delta)
        self.accepted += accepted_delta
        self.rejected += rejected_delta
        self.n += 1
        self.save()

    def save(self) -> None:
        payload = {"format": FORMAT, "policy": str(self.policy_path), "policy_sha256": self.policy_sha256,
                   "n": self.n, "accepted": self.accepted.tolist(), "rejected": self.rejected.tolist()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def summary(self) -> dict:
        return {"path": str(self.path), "observations": self.n,
                "accepted": int(self.accepted.sum()), "rejected": int(self.rejected.sum())}
