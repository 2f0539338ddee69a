"""A plugin package for fedbus: one strategy and one dataset, found through entry points.

``tests/plugins/test_plugins.py`` builds it into a wheel, installs it and runs it from a
configuration. Its ``entry_points.txt`` (written by the test) reads::

    [fedbus.strategies]
    recording_fedavg = fedbus_example_plugin.strategy

    [fedbus.datasets]
    blobs = fedbus_example_plugin.dataset
"""
