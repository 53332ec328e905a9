"""Developer tooling: the demo, the bench, the chaos runs, and the harness they share
with the tests (``tools.harness``).

Run from the repository root (``python -m tools.demo``); it is not part of the
installed package, and nothing in ``bridge`` or ``serving`` imports it. It needs the
``dev`` extra.
"""
