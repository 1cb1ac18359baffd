"""How an algorithm's image, tag and checksum become the reference that runs (engine/images.py):
Docker's naming, Ocean's two spellings of a checksum, and what is refused."""

from __future__ import annotations

import pytest

from engine.images import ImageRefused, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "tag", "checksum", "runs"),
    [
        ("python", "3.11", "", "docker.io/library/python:3.11"),
        ("python:3.11", "", "", "docker.io/library/python:3.11"),
        ("oceanprotocol/algo_dockers", "", "", "docker.io/oceanprotocol/algo_dockers:latest"),
        ("ghcr.io/org/algo", "v1", "", "ghcr.io/org/algo:v1"),
        ("localhost:5000/algo", "1", "", "localhost:5000/algo:1"),
        ("127.0.0.1:5000/a/b", "1", "", "127.0.0.1:5000/a/b:1"),
        ("python", "3.11", DIGEST, f"docker.io/library/python@{DIGEST}"),
        ("python", "3.11", DIGEST.removeprefix("sha256:"), f"docker.io/library/python@{DIGEST}"),
        (
            "python",
            "",
            DIGEST.upper().replace("SHA256", "sha256"),
            f"docker.io/library/python@{DIGEST}",
        ),
        (f"python@{DIGEST}", "", "", f"docker.io/library/python@{DIGEST}"),
    ],
)
def test_the_reference_that_runs(image: str, tag: str, checksum: str, runs: str) -> None:
    assert str(parse(image, tag, checksum)) == runs


@pytest.mark.parametrize(
    ("image", "tag", "checksum", "why"),
    [
        ("python", "3.11", "test", "is not an image digest"),
        ("python", "3.11", "md5:abc", "is not an image digest"),
        (f"python@{DIGEST}", "", "sha256:" + "cd" * 32, "but the checksum is"),
        ("python:3.11", "3.12", "", "names tag '3.11' but the tag is '3.12'"),
        ("Python", "", "", "is not an image name"),
        ("python", "bad tag", "", "is not an image tag"),
        ("a..b/c", "", "", "is not a registry"),
        ("https://evil.example/x", "", "", "is not a registry"),
    ],
)
def test_what_is_refused(image: str, tag: str, checksum: str, why: str) -> None:
    with pytest.raises(ImageRefused, match=why):
        parse(image, tag, checksum)


@pytest.mark.parametrize(
    ("image", "listed", "allowed"),
    [
        ("python", [], True),
        ("python", ["docker.io"], True),
        ("python", ["docker.io/library"], True),
        ("python", ["docker.io/oceanprotocol"], False),
        ("ghcr.io/oceanprotocol/algo", ["ghcr.io/oceanprotocol"], True),
        ("ghcr.io/oceanprotocol-evil/algo", ["ghcr.io/oceanprotocol"], False),
        ("ghcr.io.evil.example/algo", ["ghcr.io"], False),
    ],
)
def test_allowed_registries(image: str, listed: list[str], allowed: bool) -> None:
    assert parse(image).allowed_by(listed) is allowed
