"""The algorithm's container image: which reference runs, and from where it may come.

Ocean names an image as `image` and `tag`, and may give `checksum`: the image's digest, as
`sha256:<hex>` (what the Provider checks against the registry) or bare hex. With a checksum the
image is pulled and run by digest, so what runs is what the algorithm's publisher pinned: a
registry serving other content under that digest fails the pull (content addressing), and a tag
moved since is not followed.

`parse` writes a reference the way Docker does (`python` is `docker.io/library/python`), so an
operator's `allowedRegistries` and the reference that runs agree on what a name means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PULL_POLICIES = ("IfNotPresent", "Always", "Never")
RUNTIMES = ("podman", "host")
DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_HEX = re.compile(r"[0-9a-f]{64}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REGISTRY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+(?::[0-9]{1,5})?")
_IPV6_REGISTRY = re.compile(r"\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


class ImageRefused(Exception):
    """Why the algorithm's image will not run: the job ends at 32 with this reason."""


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]
    repository: str  # path components, e.g. library/python
    tag: str
    digest: str | None = None  # sha256:<hex>, when the algorithm pinned one

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        """What runs: by digest when there is one, else by tag."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    @property
    def host(self) -> str:
        """The registry's host name or address, without its port."""
        if self.registry.startswith("["):
            return self.registry[1 : self.registry.index("]")]
        return self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry

    @property
    def port(self) -> int:
        tail = self.registry.rsplit("]", 1)[-1]
        return int(tail.rsplit(":", 1)[1]) if ":" in tail else 443

    def allowed_by(self, registries: Iterable[str]) -> bool:
        """Whether a list of registries (`ghcr.io`, `localhost:5000`, or a registry and a path
        such as `ghcr.io/oceanprotocol`) names this image's; an empty list allows any."""
        listed = [entry.strip().rstrip("/") for entry in registries]
        if not listed:
            return True
        return any(self.name == entry or self.name.startswith(entry + "/") for entry in listed)

    def listed_in(self, registries: Iterable[str]) -> bool:
        """Whether the operator named this image's registry (an empty list names none)."""
        return any(list(registries)) and self.allowed_by(registries)


def from_container(container: Mapping[str, Any]) -> ImageRef | None:
    """The image a workflow's `algorithm.container` names, or None when it names none."""
    image = str(container.get("image") or "").strip()
    if not image:
        return None
    return parse(image, str(container.get("tag") or ""), str(container.get("checksum") or ""))


def parse(image: str, tag: str = "", checksum: str = "") -> ImageRef:
    """The reference `image`, `tag` and `checksum` name; ImageRefused saying what is wrong."""
    digest = normalise_checksum(checksum)
    if "@" in image:
        image, pinned = image.split("@", 1)
        pinned_digest = normalise_checksum(pinned)
        if digest is not None and digest != pinned_digest:
            raise ImageRefused(f"the image names digest {pinned} but the checksum is {checksum}")
        digest = pinned_digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:  # a tag in the image itself, as in python:3.11
        image, named_tag = image.rsplit(":", 1)
        if tag and tag != named_tag:
            raise ImageRefused(f"the image names tag {named_tag!r} but the tag is {tag!r}")
        tag = named_tag
    tag = tag or DEFAULT_TAG
    if not _TAG.fullmatch(tag):
        raise ImageRefused(f"{tag!r} is not an image tag")
    parts = image.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
        if not (_REGISTRY.fullmatch(registry) or _IPV6_REGISTRY.fullmatch(registry)):
            raise ImageRefused(f"{registry!r} is not a registry")
    else:
        registry, path = DEFAULT_REGISTRY, parts
        if len(path) == 1:
            path = ["library", *path]
    if not path or not all(_COMPONENT.fullmatch(part) for part in path):
        raise ImageRefused(f"{image!r} is not an image name (lowercase letters, digits, . _ -)")
    return ImageRef(registry=registry.lower(), repository="/".join(path), tag=tag, digest=digest)


def normalise_checksum(checksum: str) -> str | None:
    """`sha256:<hex>` for a checksum given either way; None for none."""
    text = checksum.strip()
    if not text:
        return None
    hexdigits = text.lower().removeprefix("sha256:")
    if not _HEX.fullmatch(hexdigits):
        raise ImageRefused(
            f"the algorithm's checksum {text[:80]!r} is not an image digest "
            "(sha256:<64 hex digits>): the image cannot be pinned to it"
        )
    return f"sha256:{hexdigits}"
