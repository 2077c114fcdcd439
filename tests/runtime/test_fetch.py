"""Unit tests for model URI fetching and sha256 pinning (http served from 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit_runtime.errors import ModelLoadError
from davit_runtime.fetch import fetch_model, local_path_of

PAYLOAD = b"model bytes " * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def http_origin() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server serving PAYLOAD at /model.pt; yields its URL and request log."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path != "/model.pt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/models/m.pt", Path("/models/m.pt")),
        ("file:///models/a%20b.pt", Path("/models/a b.pt")),
        ("relative/m.pt", Path("relative/m.pt")),
        ("https://host/m.pt", None),
        ("s3://bucket/m.pt", None),
    ],
)
def test_local_path_of(uri: str, expected: Path | None) -> None:
    assert local_path_of(uri) == expected


def test_local_file_with_matching_pin(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(PAYLOAD)
    assert (
        fetch_model(model.as_uri(), filename="model.pt", cache_dir=tmp_path / "c", sha256=DIGEST)
        == model
    )


def test_local_file_with_wrong_pin_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(PAYLOAD)
    with pytest.raises(ModelLoadError, match=r"sha256 mismatch.*refusing to load"):
        fetch_model(str(model), filename="model.pt", cache_dir=tmp_path / "c", sha256="0" * 64)


def test_http_download_is_cached_and_verified(
    tmp_path: Path, http_origin: tuple[str, list[str]]
) -> None:
    base, requests = http_origin
    cache = tmp_path / "cache"
    first = fetch_model(f"{base}/model.pt", filename="model.pt", cache_dir=cache, sha256=DIGEST)
    assert first.read_bytes() == PAYLOAD
    second = fetch_model(f"{base}/model.pt", filename="model.pt", cache_dir=cache, sha256=DIGEST)
    assert second == first
    assert requests == ["/model.pt"]  # the verified cached copy is reused
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no partial files left


def test_http_download_with_wrong_pin_leaves_nothing(
    tmp_path: Path, http_origin: tuple[str, list[str]]
) -> None:
    base, _ = http_origin
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        fetch_model(f"{base}/model.pt", filename="model.pt", cache_dir=cache, sha256="1" * 64)
    assert list(cache.iterdir()) == []


def test_http_errors_and_unknown_schemes(
    tmp_path: Path, http_origin: tuple[str, list[str]]
) -> None:
    base, _ = http_origin
    with pytest.raises(ModelLoadError, match="could not fetch"):
        fetch_model(f"{base}/missing.pt", filename="m.pt", cache_dir=tmp_path, sha256=None)
    with pytest.raises(ModelLoadError, match="unsupported URI scheme 'gs'"):
        fetch_model("gs://bucket/m.pt", filename="m.pt", cache_dir=tmp_path, sha256=None)
    with pytest.raises(ModelLoadError, match="does not exist"):
        fetch_model(str(tmp_path / "nope.pt"), filename="m.pt", cache_dir=tmp_path, sha256=None)
