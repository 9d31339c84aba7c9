"""The W&B server: where it is, whether it answers, whether this machine has credentials for it, and the
public API after a quick probe. No torch & co.: training runs' tracking and the analysis both use it."""

from __future__ import annotations

import netrc
import os
import socket
from urllib.parse import urlparse


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_server_answers(timeout_s: float) -> bool:
    """A TCP connection to the W&B server: a cheap probe that spares a doomed online wandb.init."""
    url = urlparse(wandb_base_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(wandb_base_url()).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def public_api(probe_timeout_s: float = 10.0):
    """wandb.Api() after a quick probe of the server (instead of a minute of retries); ConnectionError when
    the server does not answer."""
    if not wandb_server_answers(probe_timeout_s):
        raise ConnectionError(f"no answer from {wandb_base_url()}")
    import wandb

    return wandb.Api(timeout=60)
