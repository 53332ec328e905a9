"""Operator commands: ``bridge serving status|label`` and ``bridge routes show|set``.

    commands.py       argparse wiring (``add_commands``), settings + flags, exit codes
    status.py         bridge serving status: GetModelStatus + the labels of models.config
    labels.py         bridge serving label: the documented two-step label move
    routes.py         bridge routes show|set
    models_config.py  pure edits of a text-format ModelServerConfig (no I/O)
    disk.py           version directories under a base_path; atomic file writes
    model_service.py  the ModelService gRPC calls (GetModelStatus, HandleReloadConfigRequest)
    control.py        the control topic: latest routes per model (pure) and its Kafka I/O
    output.py         aligned text tables
    errors.py         CommandError (exit 1) and UsageError (exit 2)

TF Serving has no API that lists version labels, so the models.config file the
server was started with is the source of truth for them: ``serving label``
changes the server first and then rewrites the file.
"""
