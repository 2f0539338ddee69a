"""Mods of the FL layer: what changes messages without changing the algorithm.

The mechanism is the worker's (``fedbus.worker.mods``); these are the mods fedbus brings, each
registered by name for configuration files (``federation.client_mods``,
``federation.server_mods``) in ``MODS``:

- ``fedprox`` (``FedProxMod``): FedProx's pull toward the received model, for the trainer.
- ``privacy`` (``ClientPrivacy``): differential privacy's clipping and noise of the update
  (client_clip and local modes).
- ``log`` (``LogMessages``): logs what a node handles and sends (clients and servers).
- ``compression`` (``fedbus.fl.compression.CompressionMod``): compresses models on the way out
  and restores them on the way in (clients and servers; ``[compression]`` installs it).

A configured run installs the mods its algorithm and privacy mode need on every client; a
program that builds its clients installs them itself::

    client = Client(trainer).use(FedProxMod(), ClientPrivacy(noise_seed=7))
"""

from fedbus.fl.mods import compression as compression  # registers "compression"
from fedbus.fl.mods.fedprox import PROXIMAL_MU, FedProxMod
from fedbus.fl.mods.log import LogMessages
from fedbus.fl.mods.privacy import ClientPrivacy, privatize
from fedbus.fl.mods.registry import MODS, ModBuilder, RegisteredMod, build_mods, register_mod

__all__ = [
    "MODS",
    "PROXIMAL_MU",
    "ClientPrivacy",
    "FedProxMod",
    "LogMessages",
    "ModBuilder",
    "RegisteredMod",
    "build_mods",
    "privatize",
    "register_mod",
]
