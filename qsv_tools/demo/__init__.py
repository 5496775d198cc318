"""The end-to-end demo (``bash scripts/demo.sh``, ``qsv demo``): broker + verifier worker + edge runtime over MQTT on
real models and BBC News prompts, against the target decoding alone in the same run."""
