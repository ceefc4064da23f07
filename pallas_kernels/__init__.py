"""Pallas (Triton-path) kernels for ZAYA MoE routing and expert matmuls, each beside a pure-JAX reference."""

from pallas_kernels._common import interpret_mode

__all__ = ["interpret_mode"]
