"""Operator credentials: the token Kopf gets, from a kubeconfig or the in-cluster account."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

from mendel.controller.runtime.operator import _login, bearer_token

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtZW5kZWwifQ.c2ln"


def _in_cluster(tmp_path: Path, token: str = JWT) -> client.Configuration:
    """A configuration loaded exactly as in a Pod, from a fake service-account mount."""
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_text("not checked here")
    cfg = client.Configuration()
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    InClusterConfigLoader(token_filename=str(tmp_path / "token"),
                          cert_filename=str(tmp_path / "ca.crt"),
                          environ=environ).load_and_set(cfg)
    return cfg


def test_in_cluster_token_reaches_kopf_without_its_lower_case_scheme(tmp_path: Path) -> None:
    cfg = _in_cluster(tmp_path)
    assert cfg.api_key["BearerToken"].lower().startswith("bearer ")  # what the loader stores
    info = asyncio.run(_login(cfg)())
    assert info.token == JWT
    assert info.server == "https://10.0.0.1:443"


def test_login_rereads_a_rotated_in_cluster_token(tmp_path: Path) -> None:
    cfg = _in_cluster(tmp_path)
    (tmp_path / "token").write_text("rotated")
    cfg.refresh_api_key_hook = _in_cluster(tmp_path, "rotated").refresh_api_key_hook
    assert asyncio.run(_login(cfg)()).token == "rotated"


@pytest.mark.parametrize(("keys", "token"), [
    pytest.param({"authorization": "Bearer abc"}, "abc", id="kubeconfig"),
    pytest.param({"BearerToken": "bearer abc"}, "abc", id="in-cluster"),
    pytest.param({"authorization": "BEARER  abc "}, "abc", id="any-case-and-blanks"),
    pytest.param({"authorization": "abc"}, "abc", id="bare"),
    pytest.param({}, None, id="none"),
])
def test_bearer_token_strips_the_scheme_in_any_case(keys: dict[str, str],
                                                    token: str | None) -> None:
    cfg = client.Configuration()
    cfg.api_key = keys
    assert bearer_token(cfg) == token
