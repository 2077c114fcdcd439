"""Unit tests for config.json validation and the model repository layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from davit_runtime.config import ConfigError, parse_model_config
from davit_runtime.errors import ModelLoadError
from davit_runtime.repository import resolve_model, scan_repository

MINIMAL: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
}


def with_changes(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(MINIMAL))
    document.update(changes)
    return document


def test_defaults() -> None:
    config = parse_model_config(MINIMAL, default_name="m")
    assert config.name == "m"
    assert config.max_batch_size == 0
    assert not config.batches
    assert config.batching.adaptive_delay
    assert config.shedding.max_queue == 512
    assert config.precision == "fp32"


def test_full_config() -> None:
    config = parse_model_config(
        with_changes(
            name="mlp",
            format="pt2",
            max_batch_size=64,
            dynamic_batching={"max_queue_delay_ms": 2, "preferred_batch_sizes": [32, 8],
                              "adaptive_delay": False},
            load_shedding={"max_in_flight": 100, "max_queue": 50, "queue_timeout_ms": 250},
            instance_count=2, precision="bf16", device="auto", compile=True, warmup=False,
            request_timeout_ms=1000,
        ),
        default_name="ignored",
    )  # fmt: skip
    assert config.name == "mlp"
    assert config.batching.preferred_batch_sizes == (8, 32)
    assert config.batching.max_queue_delay_ms == 2.0
    assert config.shedding.queue_timeout_ms == 250.0
    assert config.instance_count == 2
    assert config.compile


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (with_changes(maxBatchSize=4), r"unknown key\(s\) \['maxBatchSize'\]"),
        ({"inputs": MINIMAL["inputs"]}, "'inputs' and 'outputs' are required"),
        (with_changes(max_batch_size=-1), "max_batch_size: must be >= 0"),
        (with_changes(max_batch_size=True), "max_batch_size: must be an integer"),
        (with_changes(inputs=[]), "inputs: must be a non-empty list"),
        (
            with_changes(inputs=[{"name": "x", "datatype": "FP8", "shape": [1]}]),
            r"inputs\[0\].datatype: must be one of",
        ),
        (
            with_changes(inputs=[{"name": "x", "datatype": "FP32", "shape": [0]}]),
            "positive or -1",
        ),
        (
            with_changes(inputs=[{"name": "x y", "datatype": "FP32", "shape": [1]}]),
            r"inputs\[0\].name",
        ),
        (
            with_changes(outputs=[{"name": "y", "datatype": "FP32", "shape": [1]}] * 2),
            "names must be unique",
        ),
        (
            with_changes(max_batch_size=8, dynamic_batching={"preferred_batch_sizes": [16]}),
            "exceed max_batch_size 8",
        ),
        (with_changes(dynamic_batching={"max_queue_delay_ms": -1}), "must be >= 0"),
        (with_changes(load_shedding={"max_queue": 0}), "max_queue: must be >= 1"),
        (with_changes(precision="int4"), "precision: must be one of"),
        (with_changes(format="savedmodel"), "format: must be one of"),
        (with_changes(uri="https://x/model.pt"), "format: required when 'uri' is set"),
        (with_changes(sha256="abc"), "64 lowercase hex digits"),
        (with_changes(compile="yes"), "compile: must be true or false"),
        ("not a mapping", "must be an object"),
    ],
)
def test_invalid_configs(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config(document, default_name="m")


def write(root: Path, model: str, config: Any, files: dict[str, bytes]) -> Path:
    model_dir = root / model
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(
        config if isinstance(config, str) else json.dumps(config)
    )
    for relative, data in files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_bytes(data)
    return model_dir


def test_repository_picks_latest_version_and_format(tmp_path: Path) -> None:
    write(tmp_path, "m", MINIMAL, {"1/model.pt": b"old", "10/model.pt2": b"new", "2/model.pt": b""})
    source = resolve_model(tmp_path / "m", tmp_path / "cache")
    assert source.version == "10"
    assert source.format == "pt2"
    assert source.path.read_bytes() == b"new"


@pytest.mark.parametrize(
    ("config", "files", "message"),
    [
        ("{oops", {"1/model.pt": b""}, "not valid JSON"),
        (with_changes(bogus=1), {"1/model.pt": b""}, "unknown key"),
        (MINIMAL, {}, "no numeric version directory"),
        (MINIMAL, {"1/weights.bin": b""}, "no model file"),
        (MINIMAL, {"1/model.pt": b"", "1/model.pt2": b""}, "more than one model file"),
        (with_changes(format="onnx"), {"1/model.pt": b""}, "config says format 'onnx'"),
        (with_changes(sha256="0" * 64), {"1/model.pt": b"x"}, "sha256 mismatch"),
    ],
)
def test_repository_errors(
    tmp_path: Path, config: Any, files: dict[str, bytes], message: str
) -> None:
    write(tmp_path, "m", config, files)
    with pytest.raises(ModelLoadError, match=message):
        scan_repository(tmp_path, tmp_path / "cache")


def test_empty_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds no"):
        scan_repository(tmp_path, tmp_path / "cache")
