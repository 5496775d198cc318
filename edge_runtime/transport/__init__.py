"""Edge-side MQTT 5 transport to the cloud verifier (wire format: ``qsv_wire.protocol``)."""
