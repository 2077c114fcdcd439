"""The MLServer runtime class for the benchmark model (loaded by MLServer's worker process)."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from bench.peers.common import TorchForward, parse_args


class TorchModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        argv = self.settings.parameters.extra["argv"]
        self._args = parse_args(argv)
        self._forward = TorchForward(self._args)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        result = self._forward(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(self._args.output_name, result)],
        )
