"""The few Kubernetes calls the service makes, behind one small interface.

`KubeCluster` talks to a real API server through the official client with an explicit ApiClient;
`NoCluster` is the deployment without one (the local run, before a cluster is configured).
`ApiException` and transport errors are translated here: a missing object is `NotFound`, an
unreachable or refusing API server is `Unavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from common import metrics
from common.config import Settings
from common.errors import BadRequest, NotFound, Unavailable

log = logging.getLogger(__name__)

GROUP = "oceanprotocol.com"
VERSION = "v1alpha"
PLURAL = "workflows"
STOP_ANNOTATION = "oceanprotocol.com/stop-requested"
REQUEST_TIMEOUT = (3, 10)  # seconds to connect, seconds to read
T = TypeVar("T")


class Cluster(Protocol):
    mode: str

    def register(self, workflow: dict[str, Any]) -> None: ...

    def mark_stopped(self, name: str, namespace: str) -> None: ...

    def remove(self, name: str, namespace: str) -> None: ...

    def workflow_names(self, namespace: str) -> list[str]: ...

    def workflow(self, name: str, namespace: str) -> dict[str, Any]: ...

    def pod_log(self, job_id: str, component: str, namespace: str) -> str: ...


class NoCluster:
    """No Kubernetes configured: jobs are stored for an engine, nothing is registered."""

    mode: str = "off"

    def register(self, workflow: dict[str, Any]) -> None:
        pass

    def mark_stopped(self, name: str, namespace: str) -> None:
        pass

    def remove(self, name: str, namespace: str) -> None:
        pass

    def workflow_names(self, namespace: str) -> list[str]:
        raise Unavailable("no Kubernetes cluster is configured for this service")

    def workflow(self, name: str, namespace: str) -> dict[str, Any]:
        raise Unavailable("no Kubernetes cluster is configured for this service")

    def pod_log(self, job_id: str, component: str, namespace: str) -> str:
        raise Unavailable("no Kubernetes cluster is configured for this service")


def api_client(settings: Settings) -> Any:
    """A kubernetes.client.ApiClient of its own (never the module's global configuration),
    for the pod's ServiceAccount (CLUSTER=in-cluster) or a kubeconfig file."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if settings.cluster == "in-cluster":
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig), client_configuration=configuration
        )
    return client.ApiClient(configuration)


class KubeCluster:
    def __init__(self, settings: Settings) -> None:
        from kubernetes import client

        self.mode: str = settings.cluster
        api = api_client(settings)
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    def register(self, workflow: dict[str, Any]) -> None:
        namespace = workflow["metadata"]["namespace"]
        _call(
            lambda: self._objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, workflow, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def mark_stopped(self, name: str, namespace: str) -> None:
        patch = {"metadata": {"annotations": {STOP_ANNOTATION: "true"}}}
        try:
            _call(
                lambda: self._objects.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    patch,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
        except NotFound:
            pass  # never registered (cluster switched on later) or already removed

    def remove(self, name: str, namespace: str) -> None:
        try:
            _call(
                lambda: self._objects.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except NotFound:
            pass  # removing twice is removing once

    def workflow_names(self, namespace: str) -> list[str]:
        listing: Any = _call(
            lambda: self._objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
        )
        return [item["metadata"]["name"] for item in listing.get("items", [])]

    def workflow(self, name: str, namespace: str) -> dict[str, Any]:
        found: Any = _call(
            lambda: self._objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
            missing=f"The jobId {name} is not registered in namespace {namespace}.",
        )
        return dict(found)

    def pod_log(self, job_id: str, component: str, namespace: str) -> str:
        selector = f"workflow={job_id},component={component}"
        pods = _call(
            lambda: self._core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        )
        missing = f"Pod with workflow={job_id} and component={component} not found"
        if not pods.items:
            raise NotFound(missing)
        name = pods.items[0].metadata.name if pods.items[0].metadata else None
        if not name:
            raise NotFound(missing)
        # A pod not yet on a node has no log: the API answers 400, which for us is "not yet".
        text: str | None = _call(
            lambda: self._core.read_namespaced_pod_log(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
            missing=f"No log yet for workflow={job_id} and component={component}",
            missing_statuses=(400, 404),
        )
        return text or ""  # the client gives None for an empty log


def build_cluster(settings: Settings) -> Cluster:
    return NoCluster() if settings.cluster == "off" else KubeCluster(settings)


def _call(
    request: Callable[[], T],
    missing: str = "Kubernetes object not found",
    missing_statuses: tuple[int, ...] = (404,),
) -> T:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return request()
    except ApiException as exc:
        if exc.status in missing_statuses:
            raise NotFound(missing) from None
        if exc.status in (400, 422):  # the API server refused what the caller sent
            raise BadRequest("The cluster rejected this request as invalid") from None
        # 401/403 mean our RBAC or credentials are wrong: an operator's fault, not the caller's.
        log.error("Kubernetes API answered %s %s", exc.status, exc.reason)
        raise _unavailable() from None
    except (HTTPError, OSError) as exc:
        log.warning("Kubernetes API unreachable: %s", type(exc).__name__)
        raise _unavailable() from None


def _unavailable() -> Unavailable:
    metrics.dependency_failed("cluster")
    return Unavailable("Kubernetes API unavailable")
