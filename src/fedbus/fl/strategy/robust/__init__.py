"""Byzantine-robust aggregation: rules that bound what a minority of malicious clients can do.

Each rule is a small module filling ``RobustStrategy.combine``; ``collect`` keeps the round's
updates (client model minus global model) that every rule needs at once.

============  ====================  =============================================================
name          strategy              tolerates
============  ====================  =============================================================
krum          ``Krum(f)``           ``f`` malicious of ``n >= 2f + 3``; keeps one update
multikrum     ``MultiKrum(f, m)``   as Krum; averages the ``m`` best-scored updates
median        ``Median()``          fewer than half of the replies
trimmed_mean  ``TrimmedMean(b)``    up to ``floor(b * n)`` malicious replies per coordinate
bulyan        ``Bulyan(f)``         ``f`` malicious of ``n >= 4f + 3``
norm_bound    ``NormBound(c)``      bounds each update's norm; weighted like FedAvg
============  ====================  =============================================================
"""

from fedbus.fl.strategy.robust.bulyan import Bulyan
from fedbus.fl.strategy.robust.collect import ModelLayout, RobustStrategy, UpdateCollector
from fedbus.fl.strategy.robust.krum import Krum, MultiKrum
from fedbus.fl.strategy.robust.median import Median
from fedbus.fl.strategy.robust.norm_bound import NormBound
from fedbus.fl.strategy.robust.trimmed_mean import TrimmedMean

__all__ = [
    "Bulyan",
    "Krum",
    "Median",
    "ModelLayout",
    "MultiKrum",
    "NormBound",
    "RobustStrategy",
    "TrimmedMean",
    "UpdateCollector",
]
