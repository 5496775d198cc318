"""Per-board configs (``<board>.yaml``) and their JSON Schema (``schema.json``), shipped as package data: read them
with ``importlib.resources.files("firmware_configs")`` (``edge_runtime.config`` does), never by a checkout path."""
