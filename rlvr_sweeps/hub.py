"""The Hugging Face Hub: is it reachable, and what of it is already on this machine.

Loading code keeps using the Hub ids; these checks only turn a minute of retries against an
unreachable Hub into one immediate, clear error, and let cached snapshots load offline.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request


def _offline_by_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 5.0) -> bool:
    """One request to the Hub endpoint; any HTTP answer (even an error status) means reachable."""
    if _offline_by_env():
        return False
    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def local_snapshot(repo_id: str, repo_type: str = "model", revision: str | None = None) -> str | None:
    """The folder of a complete cached snapshot of `repo_id`, or None when it is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means: not usable offline
        return None
