"""The ``qsv`` command: one console script with a subcommand per role (``qsv --help``); see qsv/cli.py."""
