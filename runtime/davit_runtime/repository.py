"""The model repository: `<root>/<model>/config.json` and `<root>/<model>/<version>/model.*`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from davit_runtime.config import MODEL_FILENAMES, ConfigError, ModelConfig, parse_model_config
from davit_runtime.errors import ModelLoadError
from davit_runtime.fetch import fetch_model

CONFIG_FILENAME = "config.json"


@dataclass(frozen=True)
class ModelSource:
    """A validated model ready to load: its config, version and local file."""

    config: ModelConfig
    version: str
    path: Path
    format: str


def latest_version(model_dir: Path) -> str | None:
    """The highest numeric version directory under `model_dir`, or None."""
    versions = [p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=int) if versions else None


def format_of_directory(version_dir: Path) -> tuple[str, Path]:
    """Find the single model file in a version directory and its format."""
    found = [(fmt, version_dir / name) for fmt, name in MODEL_FILENAMES.items()]
    present = [(fmt, path) for fmt, path in found if path.is_file()]
    if not present:
        names = ", ".join(MODEL_FILENAMES.values())
        raise ModelLoadError(f"{version_dir}: no model file (expected one of {names})")
    if len(present) > 1:
        raise ModelLoadError(
            f"{version_dir}: more than one model file {[p.name for _, p in present]}"
        )
    return present[0]


def read_config(model_dir: Path) -> ModelConfig:
    config_path = model_dir / CONFIG_FILENAME
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{config_path}: missing") from None
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config_path}: not valid JSON: {error}") from None
    try:
        return parse_model_config(raw, default_name=model_dir.name, where=str(config_path))
    except ConfigError as error:
        raise ModelLoadError(str(error)) from None


def resolve_model(model_dir: Path, cache_dir: Path) -> ModelSource:
    """Read the config and locate (fetching if needed, verifying the pin) the model file."""
    config = read_config(model_dir)
    if config.uri is not None:
        assert config.format is not None  # enforced by parse_model_config
        path = fetch_model(
            config.uri,
            filename=MODEL_FILENAMES[config.format],
            cache_dir=cache_dir,
            sha256=config.sha256,
        )
        return ModelSource(config, latest_version(model_dir) or "1", path, config.format)
    version = latest_version(model_dir)
    if version is None:
        raise ModelLoadError(f"{model_dir}: no numeric version directory and no 'uri' in config")
    fmt, path = format_of_directory(model_dir / version)
    if config.format is not None and config.format != fmt:
        raise ModelLoadError(f"{path}: config says format {config.format!r}, file is {fmt!r}")
    fetch_model(str(path), filename=path.name, cache_dir=cache_dir, sha256=config.sha256)
    return ModelSource(config, version, path, fmt)


def scan_repository(root: Path, cache_dir: Path) -> list[ModelSource]:
    """Every model under `root` (directories holding a config.json), sorted by name."""
    if not root.is_dir():
        raise ModelLoadError(f"model repository {root} is not a directory")
    model_dirs = sorted(p for p in root.iterdir() if (p / CONFIG_FILENAME).is_file())
    if not model_dirs:
        raise ModelLoadError(f"model repository {root} holds no <model>/{CONFIG_FILENAME}")
    sources = [resolve_model(d, cache_dir) for d in model_dirs]
    names = [s.config.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelLoadError(f"model repository {root}: duplicate model names {duplicates}")
    return sources
