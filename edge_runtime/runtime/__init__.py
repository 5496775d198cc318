"""The board runtime (``qsv edge``): a board config in, generations served on a local socket, tokens out."""
