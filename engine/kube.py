"""The Kubernetes runner: each stage a `batch/v1` Job in the job's namespace.

The Job is built so that Kubernetes itself enforces what the sandbox runner enforces locally:
one pod and no retry (`backoffLimit: 0`, `restartPolicy: Never`; a non-zero exit fails the Job
at once through its pod failure policy, a disruption does not count), the deadline
(`activeDeadlineSeconds`), the resources (requests = limits), and no privilege: non-root, read-only
root, every capability dropped, the runtime's seccomp profile, no service account token. A
NetworkPolicy of the deployment denies egress to pods labelled `egress: denied`.

A stage's files live on volumes the engine mounts too (one claim for the jobs' folders, one for
the published results): a pod mounts only its own job's folder (`subPath`), so the stage machine
reads and writes the same paths it does locally. Outcomes are read from the Job's conditions;
a pod that stays Pending past `pending_seconds` (unschedulable, image not pulled) ends the stage
with the reason. The Job's name is the jobId and the stage, so a second engine, or this one
restarted, finds a running stage's Job instead of making another. Every Job is owned by its
job's WorkFlow: deleting the WorkFlow deletes its Jobs and their pods.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from common.cluster import GROUP, PLURAL, REQUEST_TIMEOUT, VERSION
from common.errors import Unavailable
from engine.logpipe import kept_text
from engine.results import remove_tree
from engine.runner import Ending, ImageRequest, Outcome, PreparedImage, Stage, StageSpec

log = logging.getLogger(__name__)

CONTAINER = "stage"
LOOK_SECONDS = 1.0  # the least time between two reads of a stage's Job: the API is shared
STOP_WAIT_SECONDS = 30
EGRESS_LABEL = "egress"
# What the client raises when the API server is out of reach (urllib3's own errors are not
# OSErrors): a stage's Job is looked at again, never given up on at once.
UNREACHABLE = (OSError, urllib3.exceptions.HTTPError)


@dataclass
class KubeHandle:
    spec: StageSpec
    namespace: str
    name: str
    started: float  # time.time() the Job was made (or found)
    created: bool = False  # False until the API server accepted the Job
    looked: float = 0.0
    outcome: Outcome | None = None  # decided before any look (it could not be made at all)
    log_written: bool = field(default=False)


class KubeRunner:
    def __init__(
        self,
        api: Any,
        *,
        namespaces: list[str],
        image: str,
        volumes: Mapping[Path, str],
        pending_seconds: float = 300,
        ttl_seconds: int = 3600,
        uid: int = 65534,
    ) -> None:
        """`api` is a kubernetes.client.ApiClient; `image` runs configure and publish (the
        project's own); `volumes` maps each folder of the engine's that stages use (the work
        root, the results root) to the PersistentVolumeClaim mounted there."""
        from kubernetes import client

        # Typed as Any: the bodies are plain dicts, which the client takes as they are.
        self.batch: Any = client.BatchV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.objects: Any = client.CustomObjectsApi(api)
        self.namespaces = namespaces
        self.image = image
        self.volumes = {folder.resolve(): claim for folder, claim in volumes.items()}
        self.pending_seconds = pending_seconds
        self.ttl_seconds = ttl_seconds
        self.uid = uid

    # The Runner interface.

    def provide(self, folder: Path) -> None:
        folder.chmod(0o770)  # the stages run as the engine's own uid: nobody else needs it

    def make_folder(self, folder: Path, *, disk_bytes: int, files: int) -> None:
        """A folder of the shared claim: each stage pod's ephemeral-storage limit bounds it."""
        remove_tree(folder)
        folder.mkdir(parents=True)
        self.provide(folder)

    def remove_folder(self, folder: Path) -> None:
        remove_tree(folder)

    def describe(self, spec: StageSpec) -> str:
        network = "with network" if spec.network else "no egress"
        return (
            f"Kubernetes Job {job_name(spec)} in {self._namespace(spec)}, image "
            f"{self._image(spec)}, uid {self.uid}, {network}, read-only root, every "
            f"capability dropped, {spec.limits.cpus} CPU, {spec.limits.memory_bytes} bytes"
        )

    def prepare_image(self, request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
        """Nothing to pull here: the node running the algorithm's pod pulls its image."""
        if request.runtime == "host":
            return PreparedImage(
                runtime="host",
                reference=None,
                digest=None,
                detail=f"runtime host (the environment's runtime): image {request.ref} not "
                f"used, the algorithm runs in the engine's image {self.image}",
            )
        return PreparedImage(
            runtime="kubernetes",
            reference=str(request.ref),
            digest=request.ref.digest,
            detail=f"runtime kubernetes: the node pulls image {request.ref} "
            f"(imagePullPolicy {request.pull_policy})",
        )

    def start(self, spec: StageSpec) -> KubeHandle:
        handle = self._handle(spec)
        self._create(handle)
        return handle

    def resume(self, spec: StageSpec) -> KubeHandle | None:
        """The stage's Job, made by an engine that died: running or ended, it is this stage."""
        from kubernetes.client.exceptions import ApiException

        handle = self._handle(spec)
        try:
            job = self.batch.read_namespaced_job(
                handle.name, handle.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise Unavailable("Kubernetes API unavailable") from None  # a takeover retries
        except UNREACHABLE:
            raise Unavailable("Kubernetes API unavailable") from None
        _adopt(handle, job)
        return handle

    def poll(self, handle: KubeHandle) -> Outcome | None:
        if handle.outcome is not None:
            return handle.outcome
        now = time.time()
        if now - handle.looked < LOOK_SECONDS:
            return None
        handle.looked = now
        if not handle.created:
            self._create(handle)
            return handle.outcome
        from kubernetes.client.exceptions import ApiException

        try:
            job = self.batch.read_namespaced_job(
                handle.name, handle.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            return self._decide(handle, job)
        except ApiException as exc:
            if exc.status == 404:
                return self._end(handle, Ending.FAILED, detail="its Job was deleted")
            # Looked at again in a second: an API server away for a while costs no job.
            log.warning("stage %s: reading its Job failed: %s", handle.name, exc.status)
        except UNREACHABLE as exc:
            log.warning("stage %s: Kubernetes API unreachable: %s", handle.name, type(exc).__name__)
        return None

    def release(self, handle: KubeHandle) -> None:
        """Leave the Job running: the engine that takes the job over resumes it."""

    def stop(self, handle: KubeHandle) -> Outcome:
        self._save_log(handle)
        self._delete(handle.namespace, handle.name)
        return self._end(handle, Ending.STOPPED)

    def cleanup(self, job_id: str) -> None:
        for namespace in self.namespaces:
            try:
                self.batch.delete_collection_namespaced_job(
                    namespace,
                    label_selector=f"workflow={job_id}",
                    propagation_policy="Background",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except Exception as exc:  # best effort: the TTL and the WorkFlow's deletion follow
                log.warning("job %s: its Jobs in %s not deleted: %s", job_id, namespace, exc)

    # Making the Job.

    def _create(self, handle: KubeHandle) -> None:
        """Make the stage's Job; an API server out of reach is retried by `poll` until
        `pending_seconds` have passed, as a pod that cannot start would be."""
        from kubernetes.client.exceptions import ApiException

        try:
            owner = self._owner(handle.spec.job_id, handle.namespace)
            body = self.manifest(handle.spec, owner)
            self.batch.create_namespaced_job(
                handle.namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
            handle.created = True
            return
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                detail = f"Kubernetes refused its Job ({exc.status} {exc.reason})"
                handle.outcome = self._end(handle, Ending.FAILED, detail=detail)
                return
            if exc.status != 409:
                self._give_up_after_pending(handle, f"Kubernetes answered {exc.status}")
                return
        except UNREACHABLE as exc:
            # The stage's log reaches the consumer: the error's kind, never the API's address.
            self._give_up_after_pending(
                handle, f"Kubernetes API unreachable ({type(exc).__name__})"
            )
            return
        try:
            self._attach(handle)
        except (ApiException, *UNREACHABLE) as exc:
            why = getattr(exc, "status", None) or type(exc).__name__
            self._give_up_after_pending(handle, f"Kubernetes API unreachable ({why})")

    def _attach(self, handle: KubeHandle) -> None:
        """A Job of this name exists: a running one is this stage, left by an engine that
        died (re-attach); a finished one is a past attempt, replaced by a fresh run."""
        job = self.batch.read_namespaced_job(
            handle.name, handle.namespace, _request_timeout=REQUEST_TIMEOUT
        )
        if _finished(job) or job.metadata.deletion_timestamp:
            self._delete(handle.namespace, handle.name)  # made anew at the next look
            return
        _adopt(handle, job)
        log.info("stage %s: re-attached to its running Job", handle.name)

    def _give_up_after_pending(self, handle: KubeHandle, why: str) -> None:
        log.warning("stage %s: %s", handle.name, why)
        if time.time() - handle.started > self.pending_seconds:
            handle.outcome = self._end(handle, Ending.FAILED, detail=why)

    def _owner(self, job_id: str, namespace: str) -> dict[str, Any] | None:
        """The job's WorkFlow, as the owner of its Jobs; None when it is not registered."""
        from kubernetes.client.exceptions import ApiException

        try:
            workflow = self.objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, job_id, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkFlow",
            "name": job_id,
            "uid": workflow["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }

    def manifest(self, spec: StageSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
        labels = {
            "workflow": spec.job_id,
            "component": str(spec.stage),
            EGRESS_LABEL: "allowed" if spec.network else "denied",
            "app.kubernetes.io/managed-by": "operator-engine",
        }
        mounts, volumes = self._mounts(spec)
        cpu = str(spec.limits.cpus)
        memory = str(spec.limits.memory_bytes)
        # Ephemeral storage (the container's own writes, its logs, /tmp) within the job's disk.
        storage = str(spec.limits.disk_bytes)
        resources = {"cpu": cpu, "memory": memory, "ephemeral-storage": storage}
        metadata: dict[str, Any] = {"name": job_name(spec), "labels": labels}
        if owner:
            metadata["ownerReferences"] = [owner]
        container: dict[str, Any] = {"name": CONTAINER, "image": self._image(spec)}
        pod: dict[str, Any] = {}
        if self._image(spec) != self.image:  # the algorithm's own image
            container["imagePullPolicy"] = spec.pull_policy
            if spec.pull_secrets:
                pod["imagePullSecrets"] = [{"name": name} for name in spec.pull_secrets]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": max(1, math.ceil(spec.limits.seconds)),
                "ttlSecondsAfterFinished": self.ttl_seconds,
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": CONTAINER,
                                "operator": "NotIn",
                                "values": [0],
                            },
                        },
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    ]
                },
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": self.uid,
                            "runAsGroup": self.uid,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        **pod,
                        "containers": [
                            {
                                **container,
                                "command": list(spec.argv),
                                "workingDir": "/data",
                                "env": [{"name": k, "value": v} for k, v in spec.env.items()],
                                "resources": {"requests": resources, "limits": resources},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": mounts,
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
        }

    def _mounts(self, spec: StageSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The job's folder at /data and the stage's binds, each as a subPath of the claim
        holding it; /tmp a small emptyDir. A bind outside every claim is not mounted."""
        mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
        volumes: list[dict[str, Any]] = [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ]
        claims: dict[str, str] = {}
        for host, inside, writable in ((spec.data, "/data", True), *spec.extra_binds):
            found = self._claim_of(host)
            if found is None:
                continue
            claim, sub_path = found
            if claim not in claims:
                claims[claim] = f"claim-{len(claims)}"
                volumes.append(
                    {"name": claims[claim], "persistentVolumeClaim": {"claimName": claim}}
                )
            mounts.append(
                {
                    "name": claims[claim],
                    "mountPath": inside,
                    "subPath": sub_path,
                    "readOnly": not writable,
                }
            )
        return mounts, volumes

    def _claim_of(self, path: Path) -> tuple[str, str] | None:
        resolved = path.resolve()
        for folder, claim in self.volumes.items():
            if resolved.is_relative_to(folder):
                return claim, str(resolved.relative_to(folder))
        return None

    def _image(self, spec: StageSpec) -> str:
        return spec.image if spec.stage is Stage.ALGORITHM and spec.image else self.image

    def _handle(self, spec: StageSpec) -> KubeHandle:
        return KubeHandle(spec, self._namespace(spec), job_name(spec), started=time.time())

    def _namespace(self, spec: StageSpec) -> str:
        return spec.namespace or self.namespaces[0]

    # Reading the outcome.

    def _decide(self, handle: KubeHandle, job: Any) -> Outcome | None:
        conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
        if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
            self._save_log(handle)
            return self._end(handle, Ending.EXITED, code=0)
        failed = conditions.get("FailureTarget") or conditions.get("Failed")
        if failed is not None:
            self._save_log(handle)
            if failed.reason == "DeadlineExceeded":
                # Its pod may still be in its grace period: gone before anything else runs.
                self._delete(handle.namespace, handle.name)
                return self._end(handle, Ending.TIMEOUT)
            code = self._exit_code(handle)
            if code is not None and code != 0:
                return self._end(handle, Ending.EXITED, code=code)
            return self._end(handle, Ending.FAILED, detail=f"{failed.reason}: {failed.message}")
        if time.time() - handle.started > self.pending_seconds:
            waiting = self._pending_reason(handle)
            if waiting is not None:
                self._delete(handle.namespace, handle.name)
                detail = f"its pod stayed Pending for {self.pending_seconds:g} s: {waiting}"
                return self._end(handle, Ending.FAILED, detail=detail)
        return None

    def _pods(self, handle: KubeHandle) -> list[Any]:
        pods = self.core.list_namespaced_pod(
            handle.namespace,
            label_selector=f"batch.kubernetes.io/job-name={handle.name}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(pods.items)

    def _exit_code(self, handle: KubeHandle) -> int | None:
        for pod in self._pods(handle):
            for status in pod.status.container_statuses or []:
                if status.name == CONTAINER and status.state and status.state.terminated:
                    return int(status.state.terminated.exit_code)
        return None

    def _pending_reason(self, handle: KubeHandle) -> str | None:
        """Why the stage's pod is not running yet, or None when it runs (or has no pod)."""
        pods = self._pods(handle)
        if not pods or any(pod.status.phase != "Pending" for pod in pods):
            return None if pods else "no pod was created"
        pod = pods[0]
        for status in pod.status.container_statuses or []:
            if status.state and status.state.waiting:
                waiting = status.state.waiting
                return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status != "True":
                return f"{condition.reason}: {condition.message or ''}".rstrip(": ")
        return "Pending"

    def _save_log(self, handle: KubeHandle) -> None:
        """The pod's output, into the stage's log (once)."""
        if handle.log_written:
            return
        handle.log_written = True
        text = ""
        try:
            for pod in self._pods(handle):
                text += (
                    self.core.read_namespaced_pod_log(
                        pod.metadata.name,
                        handle.namespace,
                        container=CONTAINER,
                        limit_bytes=16 * 1024 * 1024,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                    or ""
                )
        except Exception as exc:  # no node to ask (kwok), or the pod is gone
            why = getattr(exc, "status", None) or type(exc).__name__
            text += f"(the pod's log could not be read: {why})\n"
        with handle.spec.log.open("a") as out:
            out.write(kept_text(text, handle.spec.limits.log_bytes))

    def _delete(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods (foreground: the Job goes last), and wait until it is
        gone, so a stopped stage has nothing left running."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Foreground",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("stage %s: delete answered %s", name, exc.status)
            return
        except UNREACHABLE as exc:  # its deadline and TTL still end it
            log.warning(
                "stage %s: not deleted, Kubernetes API unreachable: %s", name, type(exc).__name__
            )
            return
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                self.batch.read_namespaced_job(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    return
            except UNREACHABLE:
                pass
            time.sleep(0.2)
        log.warning(
            "stage %s: its Job was still there %d s after its deletion", name, STOP_WAIT_SECONDS
        )

    def _end(
        self, handle: KubeHandle, ending: Ending, *, code: int | None = None, detail: str = ""
    ) -> Outcome:
        """What the kubelet measured is not the engine's to read: the pod's requests (equal to
        its limits) times its wall time stand for its usage, and the receipt says so."""
        finished = time.time()
        limits = handle.spec.limits
        return Outcome(
            ending,
            code,
            handle.started,
            finished,
            detail,
            cpu_seconds=limits.cpus * max(0.0, finished - handle.started),
            peak_memory_bytes=limits.memory_bytes,
            usage_basis=USAGE_BASIS,
        )


USAGE_BASIS = "requests x wall time"


def job_name(spec: StageSpec) -> str:
    return f"{spec.job_id}-{spec.stage}"


def _adopt(handle: KubeHandle, job: Any) -> None:
    """The handle stands for `job`, an existing Job: its time counts from the Job's making."""
    handle.created = True
    if job.metadata.creation_timestamp:
        handle.started = job.metadata.creation_timestamp.timestamp()


def _finished(job: Any) -> bool:
    return any(
        c.type in ("Complete", "Failed") and c.status == "True"
        for c in (job.status.conditions or [])
    )
