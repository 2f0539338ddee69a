"""Differential privacy: clipping, noise, accounting, and the strategy that applies them.

- ``clipping``: clipping an update to a norm and adding Gaussian noise (clients and server).
- ``accounting``: epsilon with ``dp-accounting``'s RDP accountant.
- ``dp``: ``DifferentialPrivacy``, which wraps a sum-based strategy (central, client_clip and
  local modes, adaptive clipping, a budget that ends the run).
"""

from fedbus.fl.privacy.accounting import PrivacyAccountant
from fedbus.fl.privacy.clipping import add_noise, clip_update, update_norm
from fedbus.fl.privacy.dp import MODES, DifferentialPrivacy
from fedbus.fl.privacy.names import CLIPPING_NORM, NOISE_STD, UNCLIPPED

__all__ = [
    "CLIPPING_NORM",
    "MODES",
    "NOISE_STD",
    "UNCLIPPED",
    "DifferentialPrivacy",
    "PrivacyAccountant",
    "add_noise",
    "clip_update",
    "update_norm",
]
