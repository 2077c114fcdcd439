"""What both transports share: the served models, readiness and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from davit_runtime import __version__
from davit_runtime.errors import InferenceError, Status, not_found
from davit_runtime.inference import ServedModel
from davit_runtime.metrics import Metrics

SERVER_NAME = "davit-runtime"
EXTENSIONS = ("binary_tensor_data", "model_configuration")


@dataclass
class RuntimeState:
    metrics: Metrics
    models: dict[str, ServedModel] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False
    max_body_bytes: int = 64 << 20

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The named model; NOT_FOUND for an unknown name or version."""
        served = self.models.get(name)
        if served is None:
            raise not_found(f"unknown model {name!r}; serving {sorted(self.models)}")
        if version and version != served.version:
            raise not_found(f"model {name!r} has no version {version!r} (serving {served.version})")
        return served

    def ready_model(self, name: str, version: str | None = None) -> ServedModel:
        served = self.model(name, version)
        if not served.ready or self.draining:
            raise InferenceError(Status.UNAVAILABLE, f"model {name!r} is not ready")
        return served

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
