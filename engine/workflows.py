"""The job's WorkFlow object, kept in step with its row by the engine that runs it.

Each status the engine persists is mirrored into the WorkFlow's status subresource, so that
`kubectl get workflows` shows where each job is; once a job's results expire, its WorkFlow is
deleted, and with it, by ownership, whatever of its Jobs is left. Best effort on both counts:
the row in PostgreSQL is the truth, and a WorkFlow that is missing (never registered, the
cluster configured later) or an API server out of reach never holds a job back.
"""

from __future__ import annotations

import logging
from typing import Any

import urllib3

from common.cluster import GROUP, PLURAL, REQUEST_TIMEOUT, VERSION

log = logging.getLogger(__name__)


class WorkflowMirror:
    def __init__(self, api: Any) -> None:
        """`api` is a kubernetes.client.ApiClient."""
        from kubernetes import client

        self.objects: Any = client.CustomObjectsApi(api)

    def status(self, job_id: str, namespace: str, *, status: int, text: str, stopreq: int) -> None:
        body = {"status": {"status": status, "statusText": text, "stopreq": stopreq}}
        self._call(
            "status",
            job_id,
            lambda: self.objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, job_id, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def delete(self, job_id: str, namespace: str) -> None:
        self._call(
            "deletion",
            job_id,
            lambda: self.objects.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                job_id,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def _call(self, what: str, job_id: str, call: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            call()
        except ApiException as exc:
            if exc.status != 404:  # a job without a WorkFlow has nothing to mirror
                log.warning("job %s: WorkFlow %s answered %s", job_id, what, exc.status)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            log.warning("job %s: WorkFlow %s failed: %s", job_id, what, type(exc).__name__)
