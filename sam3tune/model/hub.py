"""Hugging Face hub ids -> local model folders, with errors a person can act on.

``load_model`` accepts a named architecture, a local folder or a hub id (``facebook/sam3``). A hub id is
fetched into the hub cache with only the files loading needs (config, safetensors weights, tokenizer and
processor files; never pickles such as ``sam3.pt``), then loaded from that folder like any local one.
Each way this can fail gets one :class:`ModelSpecError` that says which it is and what to do: a name
that is no architecture, folder or hub id; the hub unreachable with nothing cached; a repository that
does not exist; a gated repository without a token or without accepted access.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sam3tune.errors import UserError
from sam3tune.run_dir import RunDir

#: what ``load_model`` reads from a hub repository
HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "processor_config.json",
    "preprocessor_config.json",
    "sam3tune_tokenizer.json",
]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]")


class ModelSpecError(UserError, ValueError):
    """A model spec that cannot be loaded, with what to do about it."""


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` has the shape of a hub repository id (``namespace/name``)."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec and not spec.endswith(".git")


def check_spec(spec: str, names: list[str]) -> None:
    """Refuse a spec that is neither one of ``names``, an existing path nor a plausible hub id."""
    if spec in names or Path(spec).exists() or is_hub_id(spec):
        return
    raise ModelSpecError(
        f"no such architecture, folder or hub id: {spec!r}. Named architectures: {', '.join(names)}; "
        f"or give a local folder written by save_pretrained, or a hub id such as facebook/sam3"
    )


def hub_folder(repo_id: str) -> Path:
    """The local snapshot of ``repo_id`` with the files in :data:`HUB_FILES` (downloaded if needed).

    Raises :class:`ModelSpecError` for the hub unreachable with nothing cached, an unknown repository,
    and a gated repository the current token (or the lack of one) cannot open.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{repo_id}"
    local = "or pass a local folder that holds the model (config.json, model.safetensors, tokenizer files)"
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except GatedRepoError as err:
        if huggingface_hub.get_token() is None:
            raise ModelSpecError(
                f"{repo_id} is gated and you are not logged in: accept its licence on {page} with your "
                f"Hugging Face account, then log in (`hf auth login`, or set HF_TOKEN), {local}."
            ) from err
        raise ModelSpecError(
            f"{repo_id} is gated and your token has no access to it: accept the licence on {page} (while "
            f"logged in as the token's user) and wait for access to be granted, {local}."
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelSpecError(
            f"no repository {repo_id!r} on the Hugging Face hub: check the id for a typo (SAM 3 is "
            f"facebook/sam3); a private repository also needs `hf auth login`; {local}."
        ) from err
    except RevisionNotFoundError as err:
        raise ModelSpecError(f"{repo_id}: the requested revision does not exist on the hub ({err})") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        cause = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise ModelSpecError(
            f"{cause} and {repo_id} is not in the local hub cache ({constants.HF_HUB_CACHE}). "
            f"Download it once on a connected machine (`hf download {repo_id}`) and copy the cache or "
            f"the folder here, then set HF_HUB_OFFLINE=1 to use the cache without network, {local}."
        ) from err


def model_label(spec: str | Path) -> str:
    """A short name for model ``spec`` in reports and model cards: a hub id or a named architecture as
    given; a local folder by its name (``RUN/model`` for a run's exported model, ``sam3tune/demo/base``
    for a folder shipped inside the package), never the absolute path it was loaded from."""
    text = str(spec)
    path = Path(text)
    if not path.exists():
        return text
    path = path.resolve()
    package = Path(__file__).resolve().parents[1]
    if path.is_relative_to(package):
        return str(path.relative_to(package.parent))
    if RunDir.of_model(path) is not None:
        return f"{path.parent.name}/{path.name}"
    return path.name
