"""Fixtures for the integration tests: SmolLM2 behind a real llama.cpp server, and as an
HF directory (tests/support/llama_server.py)."""

from __future__ import annotations

from tests.support.llama_server import llama_server, smollm2_hf_dir

__all__ = ["llama_server", "smollm2_hf_dir"]
