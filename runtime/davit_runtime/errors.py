"""Errors that carry the protocol status they map to, so HTTP and gRPC answer alike."""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Why a request failed; each transport maps it to its own code."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


HTTP_STATUS: dict[Status, int] = {
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.PAYLOAD_TOO_LARGE: 413,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.UNAVAILABLE: 503,
    Status.DEADLINE_EXCEEDED: 504,
    Status.INTERNAL: 500,
}


class InferenceError(Exception):
    """A request-level failure with a client-facing message."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.status]


def invalid(message: str) -> InferenceError:
    return InferenceError(Status.INVALID_ARGUMENT, message)


def not_found(message: str) -> InferenceError:
    return InferenceError(Status.NOT_FOUND, message)


class ModelLoadError(Exception):
    """A model could not be fetched, verified or loaded; the server refuses to start."""
