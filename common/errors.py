"""The errors a request can end in, each carrying its HTTP status and client-facing message.

Helpers raise these; `common.http` renders them as `{"error": message}` in exactly one place.
Library errors (pg8000, kubernetes, urllib3) are translated into them where the library is called.
"""


class ServiceError(Exception):
    """An error whose message is safe to show to the caller."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class NotFound(ServiceError):
    status = 404


class MethodNotAllowed(ServiceError):
    status = 405

    def __init__(self, message: str, *, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(ServiceError):
    status = 409


class Gone(ServiceError):
    """The thing existed and was deleted on purpose (results past their storage expiry)."""

    status = 410


class RequestTimeout(ServiceError):
    """The client stopped sending its body, or left, before the end of it."""

    status = 408


class PayloadTooLarge(ServiceError):
    status = 413


class RangeNotSatisfiable(ServiceError):
    """`size`, when known, goes out as `Content-Range: bytes */size` (RFC 9110 15.5.17)."""

    status = 416

    def __init__(self, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class Unavailable(ServiceError):
    """PostgreSQL, Kubernetes or the result storage could not be reached: retrying may help."""

    status = 503


class ConfigError(Exception):
    """The environment does not describe a valid configuration; names every bad variable."""
