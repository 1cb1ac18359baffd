"""Every request of the operator API (contract section 1), signed like the Provider's.

Errors come back as `ServiceError` with the service's own message and status, or as
`Unreachable` when no answer came; nothing here raises a library's exception to its caller.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from opclient.signing import Signer

PREFIX = "/api/v1/operator"
TIMEOUT_SECONDS = 60


class ServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No HTTP answer: the service is down, or the URL is wrong."""


@dataclass(frozen=True)
class Download:
    """A result being received: its name and size as the service said, and its bytes."""

    filename: str
    size: int | None
    body: BinaryIO

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        while chunk := self.body.read(size):
            yield chunk


@dataclass(frozen=True)
class Client:
    url: str
    signer: Signer | None = None
    admin: str | None = None

    # Provider calls ---------------------------------------------------------------------------

    def start(
        self,
        *,
        workflow: dict[str, Any],
        environment: str,
        agreement_id: str,
        owner: str | None = None,
        chain_id: int | None = None,
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "workflow": workflow,
            "agreementId": agreement_id,
            "environment": environment,
            **self._signed(owner),
        }
        if chain_id is not None:
            body["chainId"] = chain_id
        answer: list[dict[str, Any]] = self._json("POST", "/compute", body=body)
        return answer

    def status(
        self,
        *,
        job_id: str | None = None,
        agreement_id: str | None = None,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._jobs("GET", job_id, agreement_id, owner)

    def stop(
        self,
        *,
        job_id: str | None = None,
        agreement_id: str | None = None,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._jobs("PUT", job_id, agreement_id, owner)

    def delete(
        self,
        *,
        job_id: str | None = None,
        agreement_id: str | None = None,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._jobs("DELETE", job_id, agreement_id, owner)

    def result(self, *, job_id: str, index: int, owner: str | None = None) -> Download:
        query = {**self._signed(owner, job_id), "index": index}
        response = self._open("GET", "/getResult", query=query)
        disposition = response.headers.get("Content-Disposition", "")
        name = disposition.partition("filename=")[2] or f"{job_id}-{index}"
        length = response.headers.get("Content-Length")
        return Download(filename=name, size=int(length) if length else None, body=response)

    # Unsigned and admin calls ----------------------------------------------------------------

    def environments(self, chain_id: int | None = None) -> list[dict[str, Any]]:
        query = {"chainId": chain_id} if chain_id is not None else None
        answer: list[dict[str, Any]] = self._json("GET", "/environments", query=query)
        return answer

    def about(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("GET", "/", prefix="")
        return answer

    def init(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("POST", "/pgsqlinit", admin=True)
        return answer

    def running(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._json("GET", "/runningjobs", admin=True)
        return answer

    def workflows(self) -> list[str]:
        answer: list[str] = self._json("GET", "/list", admin=True)
        return answer

    def info(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("GET", "/info", query={"jobId": job_id}, admin=True)
        return answer

    def logs(self, job_id: str, component: str) -> str:
        query = {"jobId": job_id, "component": component}
        with self._open("GET", "/logs", query=query, admin=True) as response:
            text: str = response.read().decode("utf-8", errors="replace")
        return text

    # Plumbing ---------------------------------------------------------------------------------

    def _jobs(
        self, method: str, job_id: str | None, agreement_id: str | None, owner: str | None
    ) -> list[dict[str, Any]]:
        # The Provider sends these as query parameters, and so do we.
        query = self._signed(owner, job_id)
        if agreement_id:
            query["agreementId"] = agreement_id
        answer: list[dict[str, Any]] = self._json(method, "/compute", query=query)
        return answer

    def _signed(self, owner: str | None, job_id: str | None = None) -> dict[str, Any]:
        if self.signer is None:
            raise ValueError(
                "a Provider key is needed to sign this call: give --key-file, or set "
                "$OPCTL_KEY_FILE (or $OPCTL_PROVIDER_KEY to the key itself); `make run` keeps "
                "one in .data/provider.key"
            )
        return self.signer.signed(owner or self.signer.address, job_id)

    def _json(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        admin: bool = False,
        prefix: str = PREFIX,
    ) -> Any:
        with self._open(method, path, query=query, body=body, admin=admin, prefix=prefix) as r:
            return json.loads(r.read())

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        admin: bool = False,
        prefix: str = PREFIX,
    ) -> Any:
        url = self.url.rstrip("/") + prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {self.url}")
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if admin:
            if not self.admin:
                raise ValueError("an admin secret is needed for this call")
            request.add_header("Admin", self.admin)
        try:  # the scheme was checked above: http(s) only
            return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)  # noqa: S310
        except urllib.error.HTTPError as error:
            raise _service_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise Unreachable(
                f"cannot reach {self.url}: {getattr(error, 'reason', error)}"
            ) from None


def _service_error(error: urllib.error.HTTPError) -> ServiceError:
    raw = error.read()
    error.close()
    try:
        message = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", errors="replace").strip() or error.reason
    return ServiceError(error.code, str(message))
