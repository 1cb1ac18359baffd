"""A full run at LOG_LEVEL=DEBUG, every route and every kind of failure, then a scan of its log
and of every response for the secrets it was given and the signatures it was sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.db import Database
from tests import storage
from tests.local.test_run import launch
from tests.provider import OWNER, PROVIDER, STRANGER, start_body

SECRETS = {
    "POSTGRES_PASSWORD": "marker-db-password-7f3a",
    "ALLOWED_ADMINS": "marker-admin-secret-91bc",
    "X-API-KEY": "marker-ipfs-key-44d0",
    "CLIENT-ID": "marker-client-id-c2e8",
}
WRONG_ADMIN = "marker-wrong-admin-5e61"


def test_no_secret_or_signature_in_logs_or_responses(
    pg_env: dict[str, str], schema_db: Database, tmp_path: Path
) -> None:
    schema_db.execute("TRUNCATE jobs, envs, provider_nonces")
    # The embedded server trusts local connections and ignores a password; a server named by
    # POSTGRES_* needs its own, and then that one is what must not leak.
    secrets = {
        **SECRETS,
        "POSTGRES_PASSWORD": pg_env.get("POSTGRES_PASSWORD") or SECRETS["POSTGRES_PASSWORD"],
    }
    env = {
        **pg_env,
        "POSTGRES_PASSWORD": secrets["POSTGRES_PASSWORD"],
        "ALLOWED_ADMINS": json.dumps([SECRETS["ALLOWED_ADMINS"]]),
        "ALLOWED_PROVIDERS": json.dumps([PROVIDER.address]),
        "X-API-KEY": SECRETS["X-API-KEY"],
        "CLIENT-ID": SECRETS["CLIENT-ID"],
        "LOG_LEVEL": "DEBUG",
    }
    seen: list[bytes] = []
    signatures: list[str] = []

    def signed(signer: Any = PROVIDER, **kwargs: Any) -> dict[str, Any]:
        fields: dict[str, Any] = signer.signed(**kwargs)
        signatures.append(fields["providerSignature"])
        return fields

    with (
        storage.serve({"out.csv": b"a,b\n"}) as store,
        launch(tmp_path / ".data", control_plane="off", env=env) as run,
    ):

        def call(method: str, path: str, **kwargs: Any) -> Any:
            status, body, raw = run.call(
                method, "/api/v1/operator" + path if path[0] != "!" else path[1:], **kwargs
            )
            seen.append(raw)
            return status, body

        admin = {"Admin": SECRETS["ALLOWED_ADMINS"]}
        call("GET", "!/")
        call("GET", "!/healthz")
        body = start_body("s1")
        signatures.append(body["providerSignature"])
        _, started = call("POST", "/compute", body=body)
        job = started[0]["jobId"]
        schema_db.execute(
            "UPDATE jobs SET outputsurl = :o WHERE workflowid = :j",
            j=job,
            o=json.dumps(
                [
                    {
                        "filename": "out.csv",
                        "filesize": 4,
                        "url": f"{store.url}/out.csv",
                        "type": "output",
                    }
                ]
            ),
        )
        call("GET", "/compute", query=signed(job_id=job))
        call("GET", "/getResult", query={**signed(owner=OWNER, job_id=job), "index": 0})
        call("PUT", "/compute", query=signed(job_id=job))
        call("DELETE", "/compute", query=signed(job_id=job))
        call("GET", "/runningjobs", headers=admin)
        call("GET", "/runningjobs", headers={"Admin": WRONG_ADMIN})
        call("POST", "/pgsqlinit", headers=admin)
        call("GET", "/list", headers=admin)
        call("GET", "/environments")
        call("GET", "/compute", query=signed(signer=STRANGER, job_id=job))  # 401
        replay = signed(job_id=job)
        call("GET", "/compute", query=replay)
        call("GET", "/compute", query=replay)  # 401 replay
        body = start_body("s2", workflow={"stages": []})
        signatures.append(body["providerSignature"])
        call("POST", "/compute", body=body)  # 400
        call(
            "GET",
            "/compute",
            query={"owner": OWNER, "nonce": "1", "providerSignature": "0x" + "ab" * 65},
        )
        signatures.append("0x" + "ab" * 65)
        assert store.seen_headers[-1]["X-API-KEY"] == SECRETS["X-API-KEY"]  # it was used
    log = run.log_path.read_bytes()

    assert b"DEBUG" in log or b"INFO" in log or b"WARNING" in log  # the log was really written
    everything = log + b"\n".join(seen)
    for name, secret in {**secrets, "wrong Admin header": WRONG_ADMIN}.items():
        assert secret.encode() not in everything, f"{name} leaked"
    for signature in signatures:
        assert signature.encode() not in everything and signature[2:].encode() not in everything
    assert b"Traceback" not in everything
    print(
        json.dumps(
            {
                "secrets_scan": {
                    "responses": len(seen),
                    "log_bytes": len(log),
                    "signatures": len(signatures),
                    "secrets": len(SECRETS) + 1,
                }
            }
        )
    )
