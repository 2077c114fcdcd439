"""Fetching model files from a URI into a cache directory, with an optional sha256 pin.

Supported URIs: a local path or file://, http(s):// (stdlib urllib), s3://bucket/key (boto3,
imported only when used; credentials come from boto3's usual chain: environment, shared config,
instance role; `AWS_ENDPOINT_URL` selects an S3-compatible endpoint).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from davit_runtime.errors import ModelLoadError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raise ModelLoadError when `path` does not hash to the pinned digest."""
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise ModelLoadError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}; refusing to load"
        )


def cache_name(uri: str, filename: str) -> str:
    """A stable cache file name for `uri` (the URI's hash plus the model file name)."""
    return f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{filename}"


def local_path_of(uri: str) -> Path | None:
    """The filesystem path for a local path or file:// URI, else None."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


def _download_http(uri: str, target: Path, timeout_s: float) -> None:
    with urllib.request.urlopen(uri, timeout=timeout_s) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def _download_s3(uri: str, target: Path) -> None:
    parsed = urllib.parse.urlparse(uri)
    try:
        boto3: Any = importlib.import_module("boto3")
    except ImportError:
        raise ModelLoadError(f"{uri}: s3:// URIs need boto3 (pip install boto3)") from None
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))


def fetch_model(
    uri: str, *, filename: str, cache_dir: Path, sha256: str | None, timeout_s: float = 300.0
) -> Path:
    """Return a local, verified path for the model at `uri`.

    Remote files are downloaded to a temporary name and renamed only once complete; a cached copy
    is reused when it still matches the pin (or when no pin is set).
    """
    local = local_path_of(uri)
    if local is not None:
        if not local.is_file():
            raise ModelLoadError(f"model file {local} does not exist")
        verify_sha256(local, sha256)
        return local

    scheme = urllib.parse.urlparse(uri).scheme
    if scheme not in ("http", "https", "s3"):
        raise ModelLoadError(f"{uri}: unsupported URI scheme {scheme!r} (file, http, https, s3)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / cache_name(uri, filename)
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        return target
    fd, partial_name = tempfile.mkstemp(dir=cache_dir, prefix=".partial-")
    os.close(fd)
    partial = Path(partial_name)
    try:
        if scheme == "s3":
            _download_s3(uri, partial)
        else:
            _download_http(uri, partial, timeout_s)
        verify_sha256(partial, sha256)
        partial.replace(target)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"could not fetch {uri}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
    return target
