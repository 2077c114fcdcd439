"""The gRPC front: the router for `tritonclient.grpc` and any other gRPC client of the models.

Every unary method (KServe v2's ModelInfer, ModelMetadata, ServerLive, …) is proxied as bytes,
never decoded, over one HTTP/2 channel per endpoint: the request goes through `Router.route`
like an HTTP one (revision, endpoint, retries, breaker, ejection), and the endpoint's answer or
status goes back as it came. `x-davit-revision` in the request metadata pins a revision; the
answer's initial metadata names the revision that served it. Streaming methods
(ModelStreamInfer) are not routed: a stream would pin a connection to one endpoint for its
life, past every weight change, so the router answers UNIMPLEMENTED and says so.

Statuses, as the endpoint's health reads them: UNAVAILABLE (nothing listens, or the runtime is
not ready) is a gateway failure and retried elsewhere; RESOURCE_EXHAUSTED is back-pressure;
INTERNAL, UNKNOWN and DATA_LOSS are the model's errors; DEADLINE_EXCEEDED a timeout; any other
is the client's (its request was wrong) and counts as a success of the endpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import grpc

from davit_router import balancer, criticality
from davit_router.criticality import CriticalityError
from davit_router.outlier import Outcome
from davit_router.router import REVISION_HEADER, SHED, Attempt, Failure, Router, Transport

logger = logging.getLogger(__name__)

_PINNED = REVISION_HEADER.decode()
_CRITICALITY = criticality.HEADER.decode()
_QUEUE_DEPTH = balancer.QUEUE_DEPTH_HEADER.decode()
_STREAMING = frozenset({"/inference.GRPCInferenceService/ModelStreamInfer"})
_INFER = "/inference.GRPCInferenceService/ModelInfer"
# Metadata that belongs to the client's own call, not to the one the router makes.
_OWN_METADATA = frozenset({_PINNED, "user-agent", "grpc-timeout", "grpc-accept-encoding"})

# A gRPC status as HTTP would say it (figures and metrics count both transports alike), and
# what it tells of the endpoint.
_AS_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}
CLIENT_DEADLINE_OFFSET_S = 0.01  # how long before the client's deadline an attempt ends
CLIENT_GAVE_UP = 499  # nginx's "client closed request": the figures' status for an abandoned call

_FAILURE_CODES = {
    Failure.NO_REVISION: grpc.StatusCode.UNAVAILABLE,
    Failure.NO_ENDPOINT: grpc.StatusCode.UNAVAILABLE,
    Failure.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Failure.UNANSWERED: grpc.StatusCode.UNAVAILABLE,
    # As the runtime sheds load: the client may try again later.
    Failure.SATURATED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Failure.CONCURRENCY: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def http_status(code: grpc.StatusCode) -> int:
    return _AS_HTTP.get(code, 400)


def outcome_of(code: grpc.StatusCode) -> tuple[Outcome, bool]:
    """The endpoint's outcome for an answer with `code`, and whether it may be retried."""
    if code is grpc.StatusCode.OK:
        return Outcome.SUCCESS, False
    if code is grpc.StatusCode.UNAVAILABLE:
        return Outcome.GATEWAY, True
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Outcome.BACKPRESSURE, False
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Outcome.GATEWAY, False  # it may still run there: never sent twice
    if http_status(code) >= 500:
        return Outcome.ERROR, False
    return Outcome.SUCCESS, False  # the client's request was wrong, not the endpoint


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode
    body: bytes = b""  # the serialized response, for OK
    details: str = ""
    abandoned: bool = False  # the client's own deadline passed first (Outcome.ABANDONED)

    @property
    def status(self) -> int:
        """As HTTP would say it, for the figures and metrics."""
        return CLIENT_GAVE_UP if self.abandoned else http_status(self.code)


class GrpcFront(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    """Every unary method, routed by `router`; one channel per endpoint, kept while it is
    configured."""

    def __init__(self, router: Router, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._router = router
        self._clock = clock
        self._channels: dict[str, grpc.aio.Channel] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in _STREAMING:
            return grpc.stream_stream_rpc_method_handler(self._refuse_stream)
        # No (de)serializers: the request and the answer pass as bytes, never decoded.
        return grpc.unary_unary_rpc_method_handler(partial(self._unary, method))

    async def _refuse_stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "davit-router routes unary calls only: a stream would hold one endpoint past every "
            "weight change; use ModelInfer",
        )
        yield b""  # never reached: abort raises

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = grpc.aio.insecure_channel(endpoint)
        return channel

    async def prune(self) -> None:
        """Close the channels of endpoints no longer configured."""
        wanted = {e for r in self._router.config.revisions for e in r.grpc_endpoints}
        for endpoint in set(self._channels) - wanted:
            await self._channels.pop(endpoint).close(grace=None)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()

    async def _unary(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        started = self._clock()
        metadata = tuple(context.invocation_metadata() or ())
        pinned = next((str(v) for k, v in metadata if k == _PINNED), None)
        if pinned is not None and not self._router.knows(pinned):
            serving = ", ".join(self._router.revision_names)
            self._router.record(None, 400, started, inference=method == _INFER)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no revision {pinned!r} here (serving: {serving})",
            )
        try:
            level = criticality.parse(
                next((str(v) for k, v in metadata if k == _CRITICALITY), None)
            )
        except CriticalityError as error:
            self._router.record(None, 400, started, inference=method == _INFER)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        forwarded = tuple((k, v) for k, v in metadata if k not in _OWN_METADATA)
        client_left = context.time_remaining()

        async def send(endpoint: str, timeout_s: float) -> Attempt[GrpcAnswer]:
            # A little short of the client's own deadline, so that the router, not a
            # cancellation racing it, says how the call ended (Envoy offsets grpc-timeout
            # the same way).
            clients = (
                None
                if client_left is None
                else client_left - (self._clock() - started) - CLIENT_DEADLINE_OFFSET_S
            )
            clients_deadline = clients is not None and clients < timeout_s
            if clients is not None:
                timeout_s = min(timeout_s, clients)
            call = self._channel(endpoint).unary_unary(method)
            try:
                rpc = call(request, timeout=max(timeout_s, 0.001), metadata=forwarded)
                body = await rpc
                trailers = await rpc.trailing_metadata()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                details = error.details() or code.name
                if code is grpc.StatusCode.DEADLINE_EXCEEDED and clients_deadline:
                    # The client's deadline, not the model's, was the one that passed.
                    answer = GrpcAnswer(code, details=details, abandoned=True)
                    return Attempt(answer, Outcome.ABANDONED, False, answer.status)
                outcome, may_retry = outcome_of(code)
                answer = GrpcAnswer(code, details=details)
                return Attempt(answer, outcome, may_retry, answer.status)
            # The runtime's load signal rides in the trailers (HTTP: a header).
            depth = next((v for k, v in trailers or () if k == _QUEUE_DEPTH), None)
            return Attempt(
                GrpcAnswer(grpc.StatusCode.OK, body), Outcome.SUCCESS, False, 200,
                balancer.parse_queue_depth(depth) if depth is not None else None,
            )  # fmt: skip

        routed = await self._router.route(pinned, Transport.GRPC, send, started, level=level)
        if routed.revision is not None:
            await context.send_initial_metadata(((_PINNED, routed.revision),))
        if routed.answer is None:
            assert routed.failure is not None
            # A request refused by criticality was never sent: not in the revision's figures.
            counted = None if routed.failure in SHED else routed.revision
            self._router.record(counted, routed.failure.status, started, inference=method == _INFER)
            where = f"revision {routed.revision}: " if routed.revision else ""
            await context.abort(_FAILURE_CODES[routed.failure], where + routed.failure.text)
        answer = routed.answer
        assert answer is not None
        self._router.record(routed.revision, answer.status, started, inference=method == _INFER)
        if answer.code is not grpc.StatusCode.OK:
            await context.abort(answer.code, answer.details)
        return answer.body
