"""``fedbus partition``: how a configured run divides its data among its clients.

The dataset is built as ``fedbus run`` builds it (same configuration, same registry, same
seed), then every client's data is asked for once, through ``FederatedDataset.client``, so the
report works for every dataset, those generated on demand included. It gives

- a table: per client, its train and test samples, how many distinct labels it holds and the
  share of its most frequent label; with more than ``MAX_ROWS`` clients, the distribution of
  those numbers over the clients instead of one row each;
- totals, and the smallest, median and largest client;
- a picture: a clients x labels heat map of sample counts, with each client's size as a bar
  beside it (the first ``MAX_ROWS`` clients, and at most ``MAX_LABELS`` labels: the most
  frequent ones, in label order).

Examples
--------
>>> from fedbus.run import load_config
>>> config = load_config(None, ["data.partition=pathological", "federation.num_clients=5"])
>>> from fedbus.run.federation import configured_dataset
>>> stats = client_statistics(configured_dataset(config))
>>> stats.num_labels.tolist()
[2, 2, 2, 2, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import FederatedDataset
from fedbus.run.config import Config
from fedbus.run.federation import configured_dataset
from fedbus.run.plot import check_picture_path, save_figure

if TYPE_CHECKING:  # Matplotlib is imported when the picture is drawn
    from matplotlib.figure import Figure

__all__ = [
    "MAX_LABELS",
    "MAX_ROWS",
    "PartitionStatistics",
    "client_statistics",
    "draw_partition",
    "format_statistics",
    "partition_figure",
    "partition_report",
]

#: Clients listed one per row and drawn in the heat map; beyond, the table summarises.
MAX_ROWS = 100
#: Labels drawn as heat map columns (the most frequent ones); more would be unreadable.
MAX_LABELS = 100

_DPI = 100


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    """What ``client_statistics`` counted; per-client arrays are indexed by client.

    Attributes
    ----------
    train, test : numpy.ndarray
        Training and local test samples of every client.
    num_labels : numpy.ndarray
        Distinct labels of every client (train and test together).
    top_share : numpy.ndarray
        Share of every client's samples that carry its most frequent label.
    first_labels : list of numpy.ndarray
        The labels of the first ``MAX_ROWS`` clients' samples, for the heat map.
    label_totals : numpy.ndarray
        Samples of every label over all clients.
    central_test : int
        Samples of the central test set.
    """

    train: NDArray[np.int64]
    test: NDArray[np.int64]
    num_labels: NDArray[np.int64]
    top_share: NDArray[np.float64]
    first_labels: list[NDArray[np.int64]]
    label_totals: NDArray[np.int64]
    central_test: int

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.train)

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Samples of every client, train and test together."""
        return self.train + self.test


def client_statistics(dataset: FederatedDataset) -> PartitionStatistics:
    """Count every client's samples and labels, asking ``dataset`` for each client once."""
    count = dataset.num_clients
    train = np.zeros(count, dtype=np.int64)
    test = np.zeros(count, dtype=np.int64)
    num_labels = np.zeros(count, dtype=np.int64)
    top_share = np.zeros(count, dtype=np.float64)
    totals = np.zeros(dataset.num_classes, dtype=np.int64)
    first: list[NDArray[np.int64]] = []
    for index in range(count):
        data = dataset.client(index)
        labels = np.concatenate([data.y_train, data.y_test]).astype(np.int64)
        per_label = np.bincount(labels, minlength=dataset.num_classes)
        train[index], test[index] = data.num_train, data.num_test
        num_labels[index] = np.count_nonzero(per_label)
        top_share[index] = per_label.max() / len(labels) if len(labels) else 0.0
        totals += per_label[: dataset.num_classes]
        if index < MAX_ROWS:
            first.append(labels)
    central = len(dataset.test_set()[1])
    return PartitionStatistics(train, test, num_labels, top_share, first, totals, central)


def format_statistics(stats: PartitionStatistics, title: str = "") -> str:
    """The table and totals ``fedbus partition`` prints."""
    lines = [title] if title else []
    header = f"{'client':>8}  {'train':>8}  {'test':>8}  {'labels':>6}  {'top label share':>15}"
    if stats.num_clients <= MAX_ROWS:
        lines.append(header)
        for index in range(stats.num_clients):
            lines.append(
                f"{index:>8}  {stats.train[index]:>8}  {stats.test[index]:>8}  "
                f"{stats.num_labels[index]:>6}  {stats.top_share[index]:>15.2f}"
            )
    else:
        lines.append(
            f"{stats.num_clients} clients: more than {MAX_ROWS}, so their distribution "
            "instead of one row each"
        )
        lines.append(header.replace("  client", "quantile"))
        for name, q in (("min", 0.0), ("25%", 0.25), ("median", 0.5), ("75%", 0.75)):
            lines.append(_quantile_row(stats, name, q))
        lines.append(_quantile_row(stats, "max", 1.0))
    sizes = stats.sizes
    lines += [
        "",
        f"clients: {stats.num_clients}, labels held: {np.count_nonzero(stats.label_totals)} "
        f"of {len(stats.label_totals)}",
        f"samples: {int(stats.train.sum())} train + {int(stats.test.sum())} test = "
        f"{int(sizes.sum())} on clients; central test set: {stats.central_test}",
        f"client size (train + test): min {int(sizes.min())}, median "
        f"{_number(float(np.median(sizes)))}, max {int(sizes.max())}",
    ]
    return "\n".join(lines)


def _quantile_row(stats: PartitionStatistics, name: str, q: float) -> str:
    def at(values: NDArray[np.int64]) -> str:
        return _number(float(np.quantile(values, q)))

    share = float(np.quantile(stats.top_share, q))
    return (
        f"{name:>8}  {at(stats.train):>8}  {at(stats.test):>8}  "
        f"{at(stats.num_labels):>6}  {share:>15.2f}"
    )


def _number(value: float) -> str:
    """``12`` for a whole number, else one decimal (``12.5``)."""
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def partition_figure(stats: PartitionStatistics, title: str = "") -> Figure:
    """The heat map of label counts per client, with the client sizes as bars beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = len(stats.first_labels)
    labels = np.flatnonzero(stats.label_totals)
    held = len(labels)
    if held > MAX_LABELS:  # the most frequent, kept in label order
        by_count = np.argsort(-stats.label_totals[labels], kind="stable")
        labels = np.sort(labels[by_count[:MAX_LABELS]])
    column = np.full(len(stats.label_totals), -1)
    column[labels] = np.arange(len(labels))
    counts = np.zeros((shown, max(len(labels), 1)), dtype=np.int64)
    for row, client_labels in enumerate(stats.first_labels):
        kept = column[client_labels]
        np.add.at(counts[row], kept[kept >= 0], 1)
    height = min(4.0 + 0.12 * shown, 16.0)
    figure = Figure(figsize=(11.0, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    heat, bars = figure.subplots(1, 2, sharey=True, width_ratios=(4, 1))
    image = heat.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    figure.colorbar(image, ax=heat, label="samples", location="left", shrink=0.8, aspect=30)
    heat.set_xlabel(
        "label" if held <= MAX_LABELS else f"label ({MAX_LABELS} most frequent of {held})"
    )
    if len(labels) <= 30:
        heat.set_xticks(np.arange(len(labels)), [str(label) for label in labels])
    heat.set_ylabel("client" if shown == stats.num_clients else f"client (first {shown})")
    bars.barh(np.arange(shown), stats.sizes[:shown], color="tab:blue")
    bars.set_xlabel("samples (train + test)")
    suffix = "" if shown == stats.num_clients else f": first {shown} of {stats.num_clients} clients"
    figure.suptitle(f"{title or 'samples per label and client'}{suffix}")
    return figure


def draw_partition(stats: PartitionStatistics, output: str | Path, title: str = "") -> Path:
    """Write ``partition_figure`` to ``output`` (its suffix sets the format); return the path."""
    target = check_picture_path(output)
    return save_figure(partition_figure(stats, title), target, _DPI)


def partition_report(config: Config, output: str | Path) -> tuple[str, Path]:
    """Build ``config``'s dataset once; return the printed report and the picture written.

    ``output``'s suffix is checked before the dataset is built.
    """
    target = check_picture_path(output, name="--plot")
    stats = client_statistics(configured_dataset(config))
    data = config.data
    title = f"{data.dataset}, partition {data.partition}, seed {config.federation.seed}"
    return format_statistics(stats, title), draw_partition(stats, target, title)
