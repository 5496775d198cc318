"""Tooling around the two roles: broker and PKI management, the end-to-end demo, the simulator, ONNX export, link
models, controller training and the in-process loop. Nothing here runs on a board or in the verifier service."""
