"""Mosquitto management for QSV: dev CA and per-device certificates, fleet credentials and ACLs, broker config
generation and a process wrapper used by the tests, the benchmark and the demo."""
