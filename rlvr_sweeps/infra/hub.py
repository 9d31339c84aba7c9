"""The Hugging Face Hub: is it reachable, and what of it is already on this machine.

Loading code keeps using the Hub ids; these checks only turn a minute of retries against an
unreachable Hub into one immediate, clear error, and let cached snapshots load offline.

Before a sweep is submitted (hydra_plugins.rlvr_sweeps_launcher), `prepare` makes sure that every model,
dataset and benchmark its runs load from the Hub is in the cache the compute nodes read (HF_HOME on a
shared file system), because compute nodes often have no network: a job that waited hours in the queue
must not fail at its first line. Missing items are downloaded on the submitting node when it has network;
when it has none, the sweep is refused before any job is queued, with the command that fetches each.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class HubItem:
    """Something a run loads from the Hub: a model or a dataset, at a revision (None: the default branch)."""

    kind: str  # "model" or "dataset"
    repo_id: str
    revision: str | None
    needed_by: str  # the config key that asks for it, e.g. "model=instruct", "eval=aime24"

    def fetch_command(self) -> str:
        kind = " --repo-type dataset" if self.kind == "dataset" else ""
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo_id}{kind}{revision}"


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "org/name" or "name"


def _is_local(path) -> bool:
    """A local file or folder (existing or not: a missing one is the run's error to report), not a Hub id."""
    text = str(path)
    data_file = Path(text).suffix in {".jsonl", ".json", ".parquet", ".csv"}
    return data_file or Path(text).expanduser().exists() or not HUB_ID.match(text)


def _model_items(model_cfg) -> list[HubItem]:
    if model_cfg.get("path"):
        return []
    if model_cfg.source == "hub":
        return [HubItem("model", str(model_cfg.id), model_cfg.get("revision"), f"model={model_cfg.name}")]
    if model_cfg.source == "sft" and model_cfg.get("base") is not None:
        return _model_items(model_cfg.base)
    return []


def _dataset_item(data_cfg, needed_by: str) -> list[HubItem]:
    if data_cfg.get("source") != "hub" or not data_cfg.get("path") or _is_local(data_cfg.path):
        return []
    return [HubItem("dataset", str(data_cfg.path), data_cfg.get("revision"), needed_by)]


def required_items(cfg) -> list[HubItem]:
    """The Hub models and datasets one run loads: its model (and an SFT init's base), its training data,
    and its benchmarks; local paths and procedural data need nothing. It is about the whole run (model, data
    and evaluation at once), so it takes the root config, as the launcher holds it."""
    items = _model_items(cfg.model) + _dataset_item(cfg.data, f"data={cfg.data.name}")
    for name, benchmark in (cfg.eval.get("benchmarks") or {}).items():
        items += _dataset_item(benchmark, f"eval={name}")
    return items


def download_size(item: HubItem) -> int | None:
    """Bytes of the item's files on the Hub, or None when that cannot be asked."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        info = (api.model_info if item.kind == "model" else api.dataset_info)(
            item.repo_id, revision=item.revision, files_metadata=True
        )
        return sum(sibling.size or 0 for sibling in info.siblings or [])
    except Exception:  # noqa: BLE001 - network errors, missing repos: the size is simply unknown
        return None


def prepare(items: list[HubItem], dry_run: bool = False, log=print) -> list[HubItem]:
    """Make every item loadable offline on the compute nodes: check the local cache, download what is
    missing when the Hub answers (`dry_run`: only say what would be fetched, and its size); refuse with
    one message naming each missing item and its fetch command when the Hub cannot be reached. Returns
    the missing items (before any download)."""
    unique = list(dict.fromkeys(items))
    missing = [item for item in unique if local_snapshot(item.repo_id, item.kind, item.revision) is None]
    if not missing:
        if unique:
            log(f"Hub: all {len(unique)} models and datasets of the sweep are in the local cache.")
        return []
    reachable = hub_reachable()
    if dry_run:
        for item in missing:
            size = download_size(item) if reachable else None
            known = f"{size / 1e9:.2f} GB" if size is not None else "size unknown: the Hub cannot be reached"
            log(f"Hub: would fetch {item.kind} {item.repo_id} ({item.needed_by}; {known})")
        return missing
    if not reachable:
        from ..errors import UserError

        lines = "; ".join(f"{item.repo_id} ({item.needed_by}): {item.fetch_command()}" for item in missing)
        raise UserError(
            f"Not submitted: {len(missing)} of the sweep's Hub models and datasets are not in the local cache "
            f"and the Hugging Face Hub cannot be reached from here, so the jobs would fail on their nodes. "
            f"Fetch them on a machine with network into the cache the nodes share (HF_HOME), then relaunch: "
            f"{lines}."
        )
    from huggingface_hub import snapshot_download

    for item in missing:
        log(f"Hub: fetching {item.kind} {item.repo_id} ({item.needed_by}) into the local cache")
        snapshot_download(item.repo_id, repo_type=item.kind, revision=item.revision)
    return missing
