"""Client profiles: how fast a simulated client computes, sends, receives, and how reliable it is.

A profile turns the work a handler reports and the size of each message into simulated seconds:

- compute: ``samples / speed`` (samples per second), plus ``HANDLER_TIME`` for every handler run;
- transfer: ``8 * encoded_size / (bandwidth_mbps * 1e6)`` over the client's downlink (server to
  client) or uplink (client to server), and the slower of the two between two clients;
- latency: seconds added to every message to or from the client (both ends' between clients);
- dropout: the probability that the client silently loses a message it receives (it does not
  reply; the sender finds out through its own timeout);
- availability: the windows of time in which the client is online, once or repeating every
  ``window_period`` seconds (a phone that trains only while charging at night). No windows means
  always online. The simulation holds a message to an offline client until its next window (or
  fails it, as configured), and a message an offline client sends leaves when it is back.

With no profiles configured every client gets ``ClientProfile()``: identical, reliable and always
online. The server is never the bottleneck: it computes and transfers instantly, with no latency,
and it never goes offline.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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

# How many ulps ``next_online`` may step to get from a rounded window start into the window.
_ROUNDING_STEPS = 8


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
    windows
        ``(start, end)`` seconds in which the client is online, sorted and not overlapping; a
        window holds ``start <= t < end``. Empty (the default): always online.
    window_period
        0 (the default): the windows happen once, and after the last the client stays offline
        (its last window may end at ``math.inf``). > 0: the windows repeat every
        ``window_period`` seconds and lie within ``[0, window_period]``.
    """

    speed: float = 2000.0
    uplink_mbps: float = 20.0
    downlink_mbps: float = 100.0
    latency: float = 0.05
    dropout: float = 0.0
    windows: tuple[tuple[float, float], ...] = ()
    window_period: float = 0.0

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
        self._check_windows()

    def _check_windows(self) -> None:
        period = self.window_period
        if not 0 <= period < math.inf:
            raise InvalidArgumentError(
                f"ClientProfile: window_period must be a finite number >= 0 (0 = the windows "
                f"happen once), got {period}"
            )
        # Lists from user code become tuples, so that profiles stay hashable and comparable.
        try:
            windows = tuple((float(start), float(end)) for start, end in self.windows)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"ClientProfile: windows must be (start, end) pairs of seconds, got "
                f"{self.windows!r}"
            ) from exc
        object.__setattr__(self, "windows", windows)
        previous_end = 0.0
        for start, end in windows:
            if not 0 <= start < end:
                raise InvalidArgumentError(
                    f"ClientProfile: window ({start}, {end}) must have 0 <= start < end"
                )
            if start < previous_end:
                raise InvalidArgumentError(
                    f"ClientProfile: windows must be sorted and not overlap; ({start}, {end}) "
                    f"starts before the previous window ends at {previous_end}"
                )
            if period > 0 and end > period:
                raise InvalidArgumentError(
                    f"ClientProfile: window ({start}, {end}) ends after window_period={period}; "
                    "repeating windows must lie within [0, window_period]"
                )
            previous_end = end

    def is_online(self, t: float) -> bool:
        """Whether the client is online at simulated time ``t`` (always, with no windows)."""
        if not self.windows:
            return True
        if self.window_period > 0:
            t %= self.window_period
        return any(start <= t < end for start, end in self.windows)

    def next_online(self, t: float) -> float:
        """The first time ``>= t`` at which the client is online.

        That is ``t`` itself when the client is online at ``t``, else the start of its next
        window, or ``math.inf`` when no window is left (windows that happen once).
        """
        if self.is_online(t):
            return t
        period = self.window_period
        if period == 0:
            return next((start for start, _ in self.windows if start > t), math.inf)
        phase = t % period
        cycle = t - phase  # when t's cycle began
        later = [start for start, _ in self.windows if start > phase]
        online = cycle + later[0] if later else cycle + period + self.windows[0][0]
        # The sum can round to a few ulps before the window opens (is_online would then say
        # no, and a message waiting for the window would wait again): step into it.
        for _ in range(_ROUNDING_STEPS):
            if self.is_online(online):
                break
            online = math.nextafter(online, math.inf)
        return online


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
    availability
        Share of the time each client is online, in (0, 1]; 1 (the default): always online.
    availability_period
        Seconds of one on/off cycle, needed when ``availability < 1``: each client is online
        for ``availability * availability_period`` seconds of every cycle, from a phase drawn
        uniformly per client, so that at any time about that share of clients is online.
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
    availability: float = 1.0
    availability_period: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.availability <= 1:
            raise InvalidArgumentError(
                f"ProfileDistribution: availability must be in (0, 1], got {self.availability}"
            )
        if not 0 <= self.availability_period < math.inf:
            raise InvalidArgumentError(
                "ProfileDistribution: availability_period must be a finite number >= 0, "
                f"got {self.availability_period}"
            )
        if self.availability < 1 and self.availability_period == 0:
            raise InvalidArgumentError(
                f"ProfileDistribution: availability={self.availability} needs "
                "availability_period > 0, the seconds of one on/off cycle"
            )

    def typical(self) -> ClientProfile:
        """The median device: the configured speed, links, latency and dropout, no spread.

        It is always online: it stands for clients that no trace describes.
        """
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
        profile = dataclasses.replace(self.typical(), speed=speed)
        if self.availability == 1:
            return profile
        # Drawn after the other draws, so that adding availability leaves them as they were.
        period = self.availability_period
        start = float(rng.random()) * period
        end = start + self.availability * period
        if end <= period:
            windows: tuple[tuple[float, float], ...] = ((start, end),)
        else:  # the window wraps around the end of the cycle
            windows = ((0.0, min(end - period, start)), (start, period))
        return dataclasses.replace(profile, windows=windows, window_period=period)


@dataclass(frozen=True, slots=True)
class ProfileTable:
    """Profiles given per client (e.g. from a device trace); others get ``default``."""

    profiles: Mapping[int, ClientProfile]
    default: ClientProfile = ClientProfile()

    def __call__(self, node_id: int) -> ClientProfile:
        """The profile of client ``node_id``."""
        return self.profiles.get(node_id, self.default)


_CSV_COLUMNS = tuple(field.name for field in fields(ClientProfile))
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf"
_WINDOW = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*", re.IGNORECASE)


def _parse_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``"0-100;200-350.5"`` as ``((0.0, 100.0), (200.0, 350.5))``."""
    windows = []
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _WINDOW.fullmatch(part)
        if match is None:
            raise ValueError(
                f"windows: expected start-end pairs separated by ';' (e.g. 0-100;200-350.5), "
                f"got {part.strip()!r}"
            )
        windows.append((float(match[1]), float(match[2])))
    return tuple(windows)


def load_profiles_csv(path: str | Path) -> dict[int, ClientProfile]:
    """Read a device trace: a CSV with a header and one row per client.

    Columns: ``node_id`` and any of ``speed, uplink_mbps, downlink_mbps, latency, dropout,
    windows, window_period`` (missing columns and empty cells take the ``ClientProfile``
    defaults). ``windows`` lists the seconds a client is online, as ``start-end`` pairs separated
    by ``;`` (``0-100;200-350.5``; empty: always online); ``window_period`` > 0 repeats them.
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
                values: dict[str, Any] = {
                    key: _parse_windows(row[key]) if key == "windows" else float(row[key])
                    for key in _CSV_COLUMNS
                    if row.get(key)
                }
                profiles[node_id] = ClientProfile(**values)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"{path}, line {line}: {exc}") from exc
    return profiles
