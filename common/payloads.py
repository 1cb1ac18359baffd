"""Each request shape, parsed once into a frozen dataclass with the contract's messages.

Query values arrive as strings and JSON values keep their types, so `nonce`, `index` and
`chainId` are read from either form. A value the database could not store (too long, wrong
type) is refused here with a 400, before anything is authenticated or written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common.auth import Nonce, SignedCall
from common.errors import BadRequest
from common.store import JobFilter

Data = Mapping[str, Any]
MAX_TEXT = 255  # the varchar(255) columns of the engine's schema
# Control characters (NUL included) and lone UTF-16 surrogates: never part of an id or address.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# [0-9], not \d: \d also matches fullwidth, Arabic and other digits, which int() accepts.
NONCE_PATTERN = re.compile(r"[0-9]{1,40}(\.[0-9]{1,20})?")
INTEGER_PATTERN = re.compile(r"-?[0-9]{1,18}")
COMPONENTS = ("configure", "algorithm", "filter", "publish")
# A jobId names a Kubernetes object and labels its pods: a DNS label, as uuid4().hex always is.
JOB_ID_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
NO_FILTER = "You have to specify one of agreementId, jobId or owner"
MAX_INPUTS = 1000  # a job's datasets; the engine provisions each, so a bound keeps jobs sane


def require(data: Data, names: tuple[str, ...], call: str) -> None:
    if not data:
        raise BadRequest("payload seems empty.")
    for name in names:
        if name not in data:
            raise BadRequest(f'"{name}" is required in the call to {call}')


def text(data: Data, name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f'"{name}" is required')
        return None
    if not isinstance(value, str):
        raise BadRequest(f'"{name}" must be a string')
    if len(value) > MAX_TEXT:
        raise BadRequest(f'"{name}" is too long (at most {MAX_TEXT} characters)')
    if UNPRINTABLE.search(value):
        # NUL cannot be stored in PostgreSQL text, a lone surrogate cannot be encoded at all.
        raise BadRequest(f'"{name}" must be printable text (no control characters)')
    return value


def nonce(data: Data, call: str) -> Nonce:
    if data.get("nonce") is None:
        raise BadRequest(f'"nonce" is required in the call to {call}')
    value = data["nonce"]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Nonce(str(value), Decimal(value))
    if isinstance(value, str) and NONCE_PATTERN.fullmatch(value):
        return Nonce(value, Decimal(value))
    raise BadRequest("Invalid nonce: expected a non-negative number such as time.time_ns()")


def integer(data: Data, name: str) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and INTEGER_PATTERN.fullmatch(value):
        return int(value)
    raise BadRequest(f"Invalid {name}: expected an integer")


def _filter_value(data: Data, name: str) -> str | None:
    value = text(data, name, required=False)
    return value if value and len(value) >= 2 else None  # the original ignored shorter ones


@dataclass(frozen=True)
class StartRequest:
    workflow: dict[str, Any]
    agreement_id: str
    owner: str
    signature: str
    environment: str
    nonce: Nonce
    chain_id: int | None
    provider_address: str | None = None

    @classmethod
    def parse(cls, data: Data) -> StartRequest:
        call = "POST:/compute"
        require(
            data,
            ("workflow", "agreementId", "owner", "providerSignature", "environment", "nonce"),
            call,
        )
        workflow = data["workflow"]
        if isinstance(workflow, str) and workflow:
            try:  # a query string can only carry the workflow as JSON text
                workflow = json.loads(workflow)
            except ValueError:
                raise BadRequest("`workflow` must be a JSON object") from None
        if not workflow:
            raise BadRequest(
                "`workflow` is required in the payload and must include workflow stages"
            )
        if not isinstance(workflow, dict):
            raise BadRequest("`workflow` must be a JSON object")
        return cls(
            workflow=workflow,
            agreement_id=_required_text(data, "agreementId"),
            owner=_required_text(data, "owner"),
            signature=text(data, "providerSignature") or "",
            environment=_required_text(data, "environment"),
            nonce=nonce(data, call),
            chain_id=integer(data, "chainId"),
            provider_address=text(data, "providerAddress", required=False),
        )

    @property
    def call(self) -> SignedCall:
        return SignedCall(
            self.owner, None, self.signature, self.nonce, "start", self.provider_address
        )

    def stage(self) -> dict[str, Any]:
        """Stage 0, checked the way the engine needs it (contract section 3, step 5)."""
        stages = self.workflow.get("stages")
        if not stages:
            raise BadRequest("Missing stages")
        if not isinstance(stages, list):
            raise BadRequest("`stages` must be a list")
        if len(stages) > 1:
            raise BadRequest("Multiple stages are not supported yet")
        stage = stages[0]
        if not isinstance(stage, dict):
            raise BadRequest("Stage 0 must be a JSON object")
        for attr in ("algorithm", "compute", "input", "output"):
            if attr not in stage:
                raise BadRequest(f"Missing {attr} in stage 0")
        if not isinstance(stage["algorithm"], dict):
            raise BadRequest("`algorithm` of stage 0 must be a JSON object")
        inputs = stage["input"]
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise BadRequest("`input` of stage 0 must be a list of JSON objects")
        if len(inputs) > MAX_INPUTS:
            raise BadRequest(f"At most {MAX_INPUTS} inputs are allowed in stage 0")
        _check_stage_types(stage)
        return stage


def _check_stage_types(stage: dict[str, Any]) -> None:
    """The types the document gives stage 0's parts: what the engine reads must be what it
    expects, or the start is a 400 that stores nothing. Text the Provider may leave out can be
    null."""
    for attr in ("compute", "output"):
        if not isinstance(stage[attr], dict):
            raise BadRequest(f"`{attr}` of stage 0 must be a JSON object")
    _integer_if_present(stage, "index", "stage 0")
    algorithm = stage["algorithm"]
    _text_or_null(algorithm, ("id", "url", "rawcode"), "algorithm")
    container = algorithm.get("container")
    if container is not None:
        if not isinstance(container, dict):
            raise BadRequest("`algorithm.container` of stage 0 must be a JSON object")
        _text_or_null(container, ("image", "tag", "entrypoint", "checksum"), "algorithm.container")
    for position, item in enumerate(stage["input"]):
        where = f"input {position} of stage 0"
        urls = item.get("url")
        if urls is not None and not (
            isinstance(urls, list) and all(isinstance(url, str) for url in urls)
        ):
            raise BadRequest(f"`url` of {where} must be a list of strings")
        _integer_if_present(item, "index", where)


def _text_or_null(part: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if part.get(name) is not None and not isinstance(part[name], str):
            raise BadRequest(f"`{where}.{name}` of stage 0 must be a string")


def _integer_if_present(part: dict[str, Any], name: str, where: str) -> None:
    if name in part and type(part[name]) is not int:  # JSON true is not an index
        raise BadRequest(f"`{name}` of {where} must be an integer")


@dataclass(frozen=True)
class JobQuery:
    """GET, PUT and DELETE /compute: which jobs, and the signature over them."""

    jobs: JobFilter
    owner: str
    job_id: str | None  # as sent, which is what the Provider signed, even when too short to filter
    signature: str | None
    nonce: Nonce
    kind: str = "status"  # stop (PUT), delete (DELETE) or status (GET)
    provider_address: str | None = None

    @classmethod
    def parse(cls, data: Data, method: str) -> JobQuery:
        call = f"{method}:/compute"
        if method == "PUT":
            require(data, ("owner", "providerSignature", "nonce"), call)
        elif not data:
            raise BadRequest(NO_FILTER)
        jobs = JobFilter(
            agreement_id=_filter_value(data, "agreementId"),
            job_id=_filter_value(data, "jobId"),
            owner=_filter_value(data, "owner"),
        )
        if jobs == JobFilter():
            raise BadRequest(NO_FILTER)
        return cls(
            jobs=jobs,
            owner=text(data, "owner", required=False) or "",
            job_id=text(data, "jobId", required=False),
            signature=text(data, "providerSignature", required=False),
            nonce=nonce(data, call),
            kind={"PUT": "stop", "DELETE": "delete"}.get(method, "status"),
            provider_address=text(data, "providerAddress", required=False),
        )

    @property
    def call(self) -> SignedCall:
        return SignedCall(
            self.owner, self.job_id, self.signature, self.nonce, self.kind, self.provider_address
        )

    def signed_jobs(self, signature_required: bool) -> JobFilter:
        """A signed caller only ever sees jobs of the owner it signed for, never all of them."""
        if not signature_required:
            return self.jobs
        return JobFilter(self.jobs.agreement_id, self.jobs.job_id, self.owner)


@dataclass(frozen=True)
class ResultRequest:
    job_id: str
    owner: str
    signature: str
    nonce: Nonce
    index: int
    provider_address: str | None = None

    @property
    def call(self) -> SignedCall:
        return SignedCall(
            self.owner, self.job_id, self.signature, self.nonce, "result", self.provider_address
        )

    @classmethod
    def parse(cls, data: Data) -> ResultRequest:
        call = "GET:/getResult"
        if not data:
            raise BadRequest("Both index & job_id are required")
        require(data, ("owner", "providerSignature", "nonce", "index", "jobId"), call)
        index = integer(data, "index")
        if index is None:
            raise BadRequest("Invalid index: expected an integer")
        return cls(
            job_id=_required_text(data, "jobId"),
            owner=_required_text(data, "owner"),
            signature=text(data, "providerSignature") or "",
            nonce=nonce(data, call),
            index=index,
            provider_address=text(data, "providerAddress", required=False),
        )


@dataclass(frozen=True)
class JobRef:
    """GET /info and /logs: one job by id, and for logs one stage of it."""

    job_id: str
    component: str | None

    @classmethod
    def parse(cls, data: Data, call: str, *, with_component: bool) -> JobRef:
        names = ("jobId", "component") if with_component else ("jobId",)
        require(data, names, call)
        component = _required_text(data, "component") if with_component else None
        if component is not None and component not in COMPONENTS:
            raise BadRequest(f"component must be one of {', '.join(COMPONENTS)}")
        job_id = _required_text(data, "jobId")
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise BadRequest("Invalid jobId: expected a job id as start returned it")
        return cls(job_id=job_id, component=component)


def _required_text(data: Data, name: str) -> str:
    value = text(data, name)
    if not value:
        raise BadRequest(f'"{name}" must not be empty')
    return value
