"""ltx: a from-scratch, parity-tested PyTorch reimplementation of LTX-Video."""

__version__ = "0.1.0"
