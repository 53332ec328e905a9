"""What the tests, ``make demo``, ``make bench`` and ``make chaos`` share: the dev broker,
the model server and bridge processes, the synthetic inputs, and the reader of the
bridge's outputs. One copy, so a long run checks exactly what the short tests check.
"""
