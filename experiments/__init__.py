"""Experiment commands (controller comparisons); ``qsv experiment`` is experiments.compare:main."""
