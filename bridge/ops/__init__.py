"""Operator commands: ``bridge serving status|label``, ``bridge routes show|set`` and
``bridge failures replay``.

    commands.py       argparse wiring (``add_commands``), settings + flags, exit codes
    flags.py          the flags several commands share (--config, --timeout, servers)
    status.py         bridge serving status: GetModelStatus + the labels of models.config
    labels.py         bridge serving label: the documented two-step label move
    routes.py         bridge routes show|set|delete
    failures.py       bridge failures replay: flags, help, the run from settings + flags
    replay.py         its Kafka I/O: read the failures topic, write, then commit
    dead_letters.py   which dead letters to replay, and with which headers (no I/O)
    models_config.py  pure edits of a text-format ModelServerConfig (no I/O)
    disk.py           version directories under a base_path; atomic file writes
    control.py        the control topic's Kafka I/O (read, create, write), errors as CommandError
    output.py         aligned text tables
    errors.py         CommandError (exit 1) and UsageError (exit 2)

TF Serving has no API that lists version labels, so the models.config file the
server was started with is the source of truth for them: ``serving label``
changes the server first and then rewrites the file.

The commands reach Kafka and TF Serving the way the bridge does: clients from
``bridge.kafka.clients``, the control topic through ``bridge.kafka.control_topic``,
TF Serving through ``bridge.serving`` (one gRPC channel, one error translation).
"""
