"""fsspec URL inputs (``s3://``, ``gs://``, ``hf://``, ``memory://``, ...): the file (or directory) is fetched to
``$CURATOR_HOME/inputs/<key>/<name>`` and read by the local readers (``curator.io``), whatever its format.

The cache key covers the URL and what the store says identifies the object's version (size, ETag, mtime,
commit), so a changed object is fetched again; the manifest records the URL, those fields and the file's
sha256. Rows a local file would quarantine (a broken JSON line) stop a URL input with an error instead: the
source protocol returns a table, not bad rows (see ``curator.sources``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import fsspec

from curator.errors import InputError, RecipeError
from curator.hashing import sha256_text
from curator.io import read_table, sha256_path

VERSION_KEYS = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "created", "last_commit",
                "blob_id", "VersionId", "version_id", "generation")


def cache_root() -> Path:
    return Path(os.environ.get("CURATOR_HOME") or Path.home() / ".cache" / "curator") / "inputs"


class URLInputs:
    """The resolver of one fsspec URL scheme (``curator.sources``)."""

    def __init__(self, scheme: str):
        self.scheme = scheme

    def url(self, name: str) -> str:
        return f"{self.scheme}://{name}"

    def check(self, name: str, where: str) -> None:
        try:
            fsspec.get_filesystem_class(self.scheme)
        except (ImportError, ValueError) as exc:
            raise RecipeError(f"{where}: cannot read {self.url(name)}: {exc}") from None

    def _version(self, name: str) -> dict:
        url = self.url(name)
        try:
            fs, path = fsspec.core.url_to_fs(url)
            info = fs.info(path)
        except FileNotFoundError:
            raise InputError(f"{url}: input not found") from None
        except (ImportError, OSError, ValueError) as exc:
            raise InputError(f"{url}: cannot read this input: {exc}") from None
        return {k: str(info[k]) for k in VERSION_KEYS if info.get(k) is not None} | {"type": info.get("type", "file")}

    @cache  # noqa: B019 - one fetch per URL and version per process; resolvers live as long as the process
    def _local(self, name: str, version: tuple) -> Path:
        url = self.url(name)
        dest = cache_root() / sha256_text(url, *version)[:24] / (Path(name.rstrip("/")).name or "input")
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch.", dir=dest.parent))
        try:
            fs, path = fsspec.core.url_to_fs(url)
            fs.get(path, str(tmp / dest.name), recursive=dict(version).get("type") == "directory")
            os.replace(tmp / dest.name, dest)
        except (OSError, ValueError) as exc:
            raise InputError(f"{url}: could not fetch it to {dest.parent}: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def fetch(self, name: str) -> Path:
        """The local copy of ``name``'s current version (fetched once)."""
        return self._local(name, tuple(sorted(self._version(name).items())))

    def load(self, name: str):
        table, bad = read_table(self.fetch(name))
        if bad:
            raise InputError(f"{self.url(name)}: {len(bad)} row(s) cannot be read (row {bad[0].row}: {bad[0].reason}); "
                             "fix the file, or copy it to a local path and name that (local inputs quarantine bad rows)")
        return table

    def sha256(self, name: str) -> str:
        return sha256_path(self.fetch(name))

    def describe(self, name: str) -> dict:
        return {"url": self.url(name), **self._version(name)}
