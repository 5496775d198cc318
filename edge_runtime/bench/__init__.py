"""On-device bench (``qsv bench``): C core, SLM, MQTT round trip and edge drafting throughput of a board."""
