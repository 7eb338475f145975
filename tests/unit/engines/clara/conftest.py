"""Fixtures for the CLaRa engine tests: one CPU thread, both tiny architectures, and the
SmolLM2 HF directory (tests/support/llama_server.py) for the real-checkpoint tests."""

from __future__ import annotations

import pytest
import torch
from tests.support.llama_server import smollm2_hf_dir
from tests.unit.engines.clara.tiny import ARCHITECTURES

__all__ = ["smollm2_hf_dir"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=ARCHITECTURES)
def architecture(request) -> str:
    return str(request.param)
