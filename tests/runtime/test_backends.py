"""Loading TorchScript and torch.export models and running batches through them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from davit_runtime.backends import RuntimeOptions, build_runner, warm_up, warmup_batch_sizes
from davit_runtime.config import ModelConfig, parse_model_config
from davit_runtime.errors import ModelLoadError
from davit_runtime.testing import reference_outputs, sample_inputs, write_model_repository


def config_of(spec: Any, **changes: Any) -> ModelConfig:
    document = dict(spec.config)
    document.update(changes)
    return parse_model_config(document, default_name=spec.name)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
@pytest.mark.parametrize("kind", ["cnn", "typed"])
def test_runner_matches_torch_for_every_batch_size(tmp_path: Path, fmt: Any, kind: str) -> None:
    spec = write_model_repository(
        tmp_path, "m", kind, max_batch_size=4, max_queue_delay_ms=0.0, fmt=fmt
    )
    config = config_of(spec)
    runner = build_runner(spec.model_file, fmt, config, RuntimeOptions(torch_threads=1))
    assert warm_up(runner, config) == 4
    for batch in (1, 3, 4):
        inputs = sample_inputs(kind, batch, seed=batch)
        outputs = runner(inputs)
        for got, want in zip(outputs, reference_outputs(kind, inputs), strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_precision_keeps_declared_output_dtype(tmp_path: Path) -> None:
    spec = write_model_repository(tmp_path, "m", "linear", max_batch_size=2, max_queue_delay_ms=0.0)
    config = config_of(spec, precision="bf16")
    runner = build_runner(spec.model_file, "torchscript", config, RuntimeOptions())
    inputs = sample_inputs("linear", 2)
    (got,) = runner(inputs)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference_outputs("linear", inputs)[0], rtol=0.05, atol=0.05)


def test_non_batching_model_runs_whole_tensors(tmp_path: Path) -> None:
    spec = write_model_repository(tmp_path, "m", "linear", max_batch_size=0, max_queue_delay_ms=0.0)
    config = config_of(spec)
    assert warmup_batch_sizes(config) == []
    runner = build_runner(spec.model_file, "torchscript", config, RuntimeOptions())
    assert warm_up(runner, config) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"compile": True}, "'compile' needs a torch.export"),
        ({"cuda_graphs": True}, "'cuda_graphs' needs device cuda"),
    ],
)
def test_option_errors(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    spec = write_model_repository(tmp_path, "m", "linear", max_batch_size=2, max_queue_delay_ms=0.0)
    with pytest.raises(ModelLoadError, match=message):
        build_runner(spec.model_file, "torchscript", config_of(spec, **changes), RuntimeOptions())


def test_corrupt_model_file_is_a_load_error(tmp_path: Path) -> None:
    spec = write_model_repository(tmp_path, "m", "linear", max_batch_size=2, max_queue_delay_ms=0.0)
    spec.model_file.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not load torchscript model"):
        build_runner(spec.model_file, "torchscript", config_of(spec), RuntimeOptions())


def test_onnx_without_onnxruntime_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_model_repository(tmp_path, "m", "linear", max_batch_size=2, max_queue_delay_ms=0.0)
    real_import = importlib.import_module

    def without_onnxruntime(name: str, package: str | None = None) -> Any:
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", without_onnxruntime)
    with pytest.raises(ModelLoadError, match="need onnxruntime installed"):
        build_runner(tmp_path / "model.onnx", "onnx", config_of(spec), RuntimeOptions())
