"""The names differential privacy adds to the standard flow's requests and replies."""

from __future__ import annotations

from typing import Final

__all__ = ["CLIPPING_NORM", "NOISE_STD", "UNCLIPPED"]

#: Request config key: the norm a client clips its update to (client_clip and local modes).
CLIPPING_NORM: Final = "clipping_norm"
#: Request config key: the standard deviation of the noise a client adds (local mode).
NOISE_STD: Final = "noise_std"
#: Reply metric: 1 if the client's update was within the clipping norm before clipping.
UNCLIPPED: Final = "unclipped"
