"""KServe's Python ModelServer (Open Inference Protocol v2, REST and gRPC; it does not batch)."""

from __future__ import annotations

from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from bench.peers.common import PeerArgs, TorchForward, parse_args


class TorchModel(Model):  # type: ignore[misc]
    def __init__(self, args: PeerArgs) -> None:
        super().__init__(args.model_name)
        self._args = args
        self._forward = TorchForward(args)
        self.ready = True

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        result = self._forward(payload.inputs[0].as_numpy())
        output = InferOutput(name=self._args.output_name, shape=list(result.shape), datatype="FP32")
        output.set_data_from_numpy(result, binary_data=payload.use_binary_outputs)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    args = parse_args()
    # KServe binds every interface with no option to change it: the bench runs it inside a
    # private network namespace where only loopback exists.
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start(
        [TorchModel(args)]
    )


if __name__ == "__main__":
    main()
