"""The API and the runtime agree on every runtime setting: what one accepts, so does the other.

Each case puts one edge value into a ModelDeployment field and into the runtime config key the
operator translates it to. The API side is judged by the real API server (`kubectl apply
--dry-run=server`: the CRD's schema and CEL rules), the runtime side by the runtime's own config
parser, fed the config the operator projects into the pod. A spec the API accepts but the
runtime refuses would crash-loop; this test is what keeps that from coming back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from davit_operator import api
from davit_operator.planners import children
from davit_runtime.config import ConfigError, parse_model_config
from e2e_support import kubectl

pytestmark = pytest.mark.e2e

BASE: dict[str, Any] = {
    "model": {
        "uri": "s3://models/resnet/v1",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 224, 224]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1000]}],
    },
    "runtime": {
        "batching": {"maxBatchSize": 8, "maxQueueDelayMs": 5},
        "limits": {"maxInFlight": 64, "maxQueue": 256, "queueTimeoutMs": 1000},
    },
}


@dataclass(frozen=True)
class Edge:
    reason: str
    api_path: tuple[str | int, ...]  # into the ModelDeployment spec
    runtime_path: tuple[str | int, ...]  # into the runtime's config.json
    value: Any


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


INPUT_NAME = (("model", "inputs", 0, "name"), ("inputs", 0, "name"))
INPUT_DIM = (("model", "inputs", 0, "shape", 0), ("inputs", 0, "shape", 0))
OUTPUT_NAME = (("model", "outputs", 0, "name"), ("outputs", 0, "name"))
BATCH = (("runtime", "batching", "maxBatchSize"), ("max_batch_size",))
DELAY = (("runtime", "batching", "maxQueueDelayMs"), ("dynamic_batching", "max_queue_delay_ms"))
IN_FLIGHT = (("runtime", "limits", "maxInFlight"), ("load_shedding", "max_in_flight"))
QUEUE = (("runtime", "limits", "maxQueue"), ("load_shedding", "max_queue"))
TIMEOUT = (("runtime", "limits", "queueTimeoutMs"), ("load_shedding", "queue_timeout_ms"))
SHA = (("model", "sha256"), ("sha256",))

EDGES = [
    Edge("tensor name with a colon (ONNX style)", *INPUT_NAME, "input:0"),
    Edge("tensor name with a dot and a dash", *INPUT_NAME, "enc.input-ids"),
    Edge("tensor name starting with a digit", *INPUT_NAME, "0input"),
    Edge("tensor name with a space", *INPUT_NAME, "an input"),
    Edge("tensor name with a slash", *OUTPUT_NAME, "out/logits"),
    Edge("tensor name starting with a dash", *OUTPUT_NAME, "-logits"),
    Edge("dimension of any size", *INPUT_DIM, -1),
    Edge("dimension of 0", *INPUT_DIM, 0),
    Edge("dimension below -1", *INPUT_DIM, -2),
    Edge("dimension of 1", *INPUT_DIM, 1),
    Edge("batch of 1", *BATCH, 1),
    Edge("batch of 0", *BATCH, 0),
    Edge("no queue delay", *DELAY, 0),
    Edge("negative queue delay", *DELAY, -1),
    Edge("one request in flight", *IN_FLIGHT, 1),
    Edge("no request in flight", *IN_FLIGHT, 0),
    Edge("queue of 1", *QUEUE, 1),
    Edge("queue of 0", *QUEUE, 0),
    Edge("queue timeout of 1 ms", *TIMEOUT, 1),
    Edge("queue timeout of 0", *TIMEOUT, 0),
    Edge("sha256 pin", *SHA, "a" * 64),
    Edge("sha256 pin in capitals", *SHA, "A" * 64),
    Edge("sha256 pin too short", *SHA, "a" * 63),
]


def runtime_accepts(edge: Edge) -> tuple[bool, str]:
    spec = api.ModelDeploymentSpec.model_validate(BASE)
    config = children.runtime_config("resnet", spec, spec.model.uri)
    _set(config, edge.runtime_path, edge.value)
    try:
        parse_model_config(config, default_name="resnet")
    except ConfigError as error:
        return False, str(error)
    return True, ""


def api_accepts(env: dict[str, str], namespace: str, edge: Edge) -> tuple[bool, str]:
    spec = json.loads(json.dumps(BASE))
    _set(spec, edge.api_path, edge.value)
    manifest = {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "metadata": {"name": "contract", "namespace": namespace},
        "spec": spec,
    }
    result = kubectl(
        env, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    return result.returncode == 0, result.stderr.strip()


@pytest.mark.parametrize("edge", EDGES, ids=[e.reason for e in EDGES])
def test_the_api_and_the_runtime_agree(
    crd: None, kube_env: dict[str, str], namespace: str, edge: Edge
) -> None:
    by_api, api_says = api_accepts(kube_env, namespace, edge)
    by_runtime, runtime_says = runtime_accepts(edge)
    assert by_api == by_runtime, (
        f"API {'accepts' if by_api else 'refuses'} ({api_says or 'ok'}), runtime "
        f"{'accepts' if by_runtime else 'refuses'} ({runtime_says or 'ok'})"
    )
