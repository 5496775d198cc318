"""QSV edge runtime: SLM drafting with quantize-then-sample, the C core binding, transport and board tooling."""

__version__ = "0.1.0"
