"""The operator's torch pods must start the Davit runtime: the config the operator projects into
the pod and the arguments it passes are checked against the runtime itself, and a real runtime
process serves a model from exactly that config."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from davit_operator import api
from davit_operator.planners import children
from davit_runtime.cli import build_parser
from davit_runtime.config import parse_model_config
from davit_runtime.testing import export_model, reference_outputs, sample_inputs, tensor_infos
from factories import CONFIG, md

OWNER = children.Owner("linear", "ml", "uid-1")


def linear_spec(uri: str, **runtime: Any) -> api.ModelDeploymentSpec:
    inputs, outputs = tensor_infos("linear")

    def tensors(infos: Any) -> list[dict[str, Any]]:
        return [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in infos]

    return md(
        name="linear",
        model={"uri": uri, "inputs": tensors(inputs), "outputs": tensors(outputs)},
        runtime={"batching": {"maxBatchSize": 8, "maxQueueDelayMs": 1}, **runtime},
    ).spec


def pod_of(spec: api.ModelDeploymentSpec) -> tuple[list[str], dict[str, Any]]:
    deployment = children.build_deployment(OWNER, spec, "abc123", 1, CONFIG)
    template = deployment["spec"]["template"]
    config = json.loads(template["metadata"]["annotations"][children.RUNTIME_CONFIG_ANNOTATION])
    return template["spec"]["containers"][0]["args"], config


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_projected_config_is_valid_for_the_runtime(precision: str) -> None:
    args, config = pod_of(linear_spec("s3://models/linear.pt", optimize={"precision": precision}))
    parsed = parse_model_config(config, default_name="linear")
    assert parsed.name == "linear"
    assert parsed.max_batch_size == 8
    assert parsed.uri == "s3://models/linear.pt"
    assert [t.name for t in parsed.inputs] == ["input"]
    assert parsed.precision == precision
    # The image's entrypoint is `davit-runtime serve`: the args must parse after it.
    options = build_parser().parse_args(["serve", *args])
    assert str(options.model_repository) == children.RUNTIME_REPOSITORY


@pytest.mark.component
def test_runtime_serves_a_model_from_the_operators_pod_config(tmp_path: Path) -> None:
    model_file = tmp_path / "store" / "model.pt"
    model_file.parent.mkdir()
    export_model("linear", "torchscript", model_file, max_batch_size=8)
    args, config = pod_of(linear_spec(f"file://{model_file}"))
    # The pod's layout, rebuilt in a temporary directory: the repository holds only the
    # projected config.json, the model comes from its URI.
    (tmp_path / "repo" / "linear").mkdir(parents=True)
    (tmp_path / "repo" / "linear" / "config.json").write_text(json.dumps(config))
    local = {
        "--model-repository": str(tmp_path / "repo"),
        "--cache-dir": str(tmp_path / "cache"),
        "--host": "127.0.0.1",
        "--http-port": "0",
        "--grpc-port": "0",
    }
    remapped = [
        f"{flag}={local.get(flag, value)}" for flag, value in (a.split("=", 1) for a in args)
    ]
    command = [sys.executable, "-m", "davit_runtime", "serve", *remapped, "--torch-threads=1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        ready = ""
        for line in server.stdout:
            if line.startswith("davit-runtime ready"):
                ready = line
                break
        assert ready, "the runtime exited before it was ready"
        http = dict(part.split("=", 1) for part in ready.split()[2:])["http"]
        [batch] = sample_inputs("linear", 1)
        request = {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 512],
                    "data": batch.ravel().tolist(),
                }
            ]
        }
        with urllib.request.urlopen(
            urllib.request.Request(
                f"http://{http}/v2/models/linear/infer",
                data=json.dumps(request).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=30,
        ) as response:
            answer = json.loads(response.read())
        [expected] = reference_outputs("linear", [batch])
        got = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)
