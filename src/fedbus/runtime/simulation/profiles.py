"""Client profiles: how fast a simulated client computes, sends, receives, and how reliable it is.

A profile turns the work a handler reports and the size of each message into simulated seconds:

- compute: ``samples / speed`` (samples per second), plus ``HANDLER_TIME`` for every handler run;
- transfer: ``8 * encoded_size / (bandwidth_mbps * 1e6)`` over the client's downlink (server to
  client) or uplink (client to server), and the slower of the two between two clients;
- latency: seconds added to every message to or from the client (both ends' between clients);
- dropout: the probability that the client silently loses a message it receives (it does not
  reply; the sender finds out through its own timeout).

With no profiles configured every client gets ``ClientProfile()``: identical and reliable. The
server is never the bottleneck: it computes and transfers instantly, with no latency.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = [
    "HANDLER_TIME",
    "SERVER_PROFILE",
    "ClientProfile",
    "ProfileDistribution",
    "ProfileSource",
    "ProfileTable",
    "load_profiles_csv",
]

#: Simulated seconds every handler run costs on top of the samples it reports (1 ms).
HANDLER_TIME = 1e-3


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """One client's system characteristics (defaults: a reliable mid-range device).

    Attributes
    ----------
    speed
        Training samples processed per simulated second.
    uplink_mbps, downlink_mbps
        Bandwidth in megabits per second.
    latency
        One-way latency in seconds.
    dropout
        Probability in [0, 1] of silently losing a message it receives.
    """

    speed: float = 2000.0
    uplink_mbps: float = 20.0
    downlink_mbps: float = 100.0
    latency: float = 0.05
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("speed", "uplink_mbps", "downlink_mbps"):
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(
                    f"ClientProfile: {name} must be > 0, got {getattr(self, name)}"
                )
        if not self.latency >= 0:
            raise InvalidArgumentError(f"ClientProfile: latency must be >= 0, got {self.latency}")
        if not 0 <= self.dropout <= 1:
            raise InvalidArgumentError(
                f"ClientProfile: dropout must be in [0, 1], got {self.dropout}"
            )


#: The server's profile: instant compute and transfer, no latency, never drops.
SERVER_PROFILE = ClientProfile(
    speed=math.inf, uplink_mbps=math.inf, downlink_mbps=math.inf, latency=0.0
)

ProfileSource = Callable[[int], ClientProfile]


@dataclass(frozen=True, slots=True)
class ProfileDistribution:
    """Profiles drawn per client from seeded distributions, lazily and reproducibly.

    Client ``i``'s profile depends only on ``(seed, i)``, so 100,000 registered clients cost
    nothing until they are used, and the same client gets the same profile in every run.

    Attributes
    ----------
    speed, speed_sigma
        Median samples/s and the sigma of its log-normal spread (0 = all equal).
    slow_fraction, slow_factor
        A fraction of clients that are ``slow_factor`` times slower (correlated slowness).
    uplink_mbps, downlink_mbps, latency, dropout
        As in ``ClientProfile``, the same for every client.
    seed
        Seed of the draws.
    """

    speed: float = 2000.0
    speed_sigma: float = 0.0
    slow_fraction: float = 0.0
    slow_factor: float = 10.0
    uplink_mbps: float = 20.0
    downlink_mbps: float = 100.0
    latency: float = 0.05
    dropout: float = 0.0
    seed: int = 0

    def typical(self) -> ClientProfile:
        """The median device: the configured speed, links, latency and dropout, no spread."""
        return ClientProfile(
            speed=self.speed,
            uplink_mbps=self.uplink_mbps,
            downlink_mbps=self.downlink_mbps,
            latency=self.latency,
            dropout=self.dropout,
        )

    def __call__(self, node_id: int) -> ClientProfile:
        """The profile of client ``node_id``."""
        rng = np.random.default_rng([self.seed, node_id, 0x9E0F11E5])
        speed = self.speed * float(np.exp(self.speed_sigma * rng.standard_normal()))
        if rng.random() < self.slow_fraction:
            speed /= self.slow_factor
        return dataclasses.replace(self.typical(), speed=speed)


@dataclass(frozen=True, slots=True)
class ProfileTable:
    """Profiles given per client (e.g. from a device trace); others get ``default``."""

    profiles: Mapping[int, ClientProfile]
    default: ClientProfile = ClientProfile()

    def __call__(self, node_id: int) -> ClientProfile:
        """The profile of client ``node_id``."""
        return self.profiles.get(node_id, self.default)


_CSV_COLUMNS = tuple(field.name for field in fields(ClientProfile))


def load_profiles_csv(path: str | Path) -> dict[int, ClientProfile]:
    """Read a device trace: a CSV with a header and one row per client.

    Columns: ``node_id`` and any of ``speed, uplink_mbps, downlink_mbps, latency, dropout``
    (missing columns take the ``ClientProfile`` defaults).
    """
    profiles: dict[int, ClientProfile] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        unknown = columns - {"node_id", *_CSV_COLUMNS}
        if "node_id" not in columns or unknown:
            raise InvalidArgumentError(
                f"{path}: a profile CSV needs a node_id column and only the columns "
                f"{', '.join(_CSV_COLUMNS)}; found {sorted(columns)}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                node_id = int(row["node_id"])
                values = {key: float(row[key]) for key in _CSV_COLUMNS if row.get(key)}
                profiles[node_id] = ClientProfile(**values)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"{path}, line {line}: {exc}") from exc
    return profiles
