"""Board flashing over a serial line: framing (framing.py), host flasher (flasher.py, ``qsv flash``), board agent
(agent.py, ``qsv board-agent``) with crash-safe storage (store.py) and runtime supervision (supervisor.py)."""
