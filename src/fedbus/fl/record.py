"""``RoundRecord``: what one round (one aggregation) leaves behind.

Servers fill one per aggregation, callbacks (``fl.callbacks``) add to it, and ``run`` writes it
as one line of ``metrics.jsonl``. It lives apart from the servers so that callbacks and
settings can name it without importing a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RECORD_METRICS", "RoundRecord"]


@dataclass(slots=True)
class RoundRecord:
    """What happened in one round, i.e. one aggregation (one line of ``metrics.jsonl``).

    ``time`` is the runtime's clock when the round ended: simulated seconds in simulation.
    Test metrics come from central evaluation, federated ones from the clients; ``None`` when
    that evaluation did not run this round. ``late_replies`` counts replies to earlier rounds
    (or earlier attempts of this one) that arrived while this round ran, and were dropped;
    ``refused_replies`` replies that answered a request sent to another node (an impostor), and
    were refused.

    ``straggler_wait`` is the mean time, in the runtime's seconds, that the updates aggregated
    this round waited at the server between their arrival and the aggregation: in a synchronous
    round, the time the fast clients' work sat idle until the slowest answered. ``staleness``
    counts the aggregated updates by how many model versions old they were (all 0 in a
    synchronous run), and ``stale_dropped`` the updates older than the tolerance.
    ``strategy_metrics`` is what the strategy reported for the round (``Strategy.report``:
    differential privacy's epsilon).
    """

    round: int
    time: float = 0.0
    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    clients_sampled: int = 0
    clients_replied: int = 0
    clients_failed: int = 0
    late_replies: int = 0
    refused_replies: int = 0
    retries: int = 0
    straggler_wait: float = 0.0
    stale_dropped: int = 0
    staleness: dict[int, int] = field(default_factory=dict)
    strategy_metrics: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    federated_metrics: dict[str, float] = field(default_factory=dict)


#: The numeric fields of ``RoundRecord`` a callback may watch (``EarlyStopping``).
RECORD_METRICS: tuple[str, ...] = (
    "test_accuracy",
    "test_loss",
    "federated_accuracy",
    "federated_loss",
    "train_loss",
)
