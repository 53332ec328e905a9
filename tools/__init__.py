"""Developer tooling: the dev broker launcher, the demo and the benchmarks.

Nothing in the service imports this package; it needs the ``dev`` extra.
"""
