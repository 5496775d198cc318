"""Edge-side MQTT 5 transport to the cloud verifier (wire format: ``edge_runtime.protocol``)."""
