"""Runtimes deliver messages to workers and carry what they send.

``simulation`` runs a whole federation on one thread in simulated time (the default); ``grpc``
runs each node in its own process or machine, over gRPC streams (docs/deployment.md); ``ray``
adds a backend to the simulation; ``ids`` makes every runtime's message ids. A runtime
knows workers only through ``Worker.attach/deliver/on_start`` and the ``CommManager`` it gives
them; it never knows what federated learning is.
"""
