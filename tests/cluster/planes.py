"""What the tests do to a control plane (local.controlplane) that the local run never does:
call as a service account, take the API server away and bring it back."""

from __future__ import annotations

from pathlib import Path

from local.controlplane import SERVICE_NAMESPACE, ControlPlane, spawn, wait_ready, write_kubeconfig


def service_account_kubeconfig(
    plane: ControlPlane, name: str, namespace: str = SERVICE_NAMESPACE
) -> Path:
    """A kubeconfig that calls as ServiceAccount `name`, with a token from TokenRequest."""
    token = plane.kubectl("create", "token", name, "-n", namespace, "--duration=2h").strip()
    path = plane.workdir / f"kubeconfig-{namespace}-{name}"
    write_kubeconfig(path, plane.url, plane.ca_file, user={"token": token})
    return path


def stop_apiserver(plane: ControlPlane) -> None:
    """Take the API server away (etcd stays), to test what callers do without it."""
    apiserver = plane.processes[-1]
    apiserver.terminate()
    apiserver.wait(timeout=15)


def restart_apiserver(plane: ControlPlane) -> None:
    """Bring it back on the same port, with the same keys: old tokens stay valid."""
    argv = [str(arg) for arg in plane.processes[-1].args]  # type: ignore[union-attr]
    plane.processes[-1] = spawn(plane.workdir, "kube-apiserver", argv)
    wait_ready(plane, plane.pki)
