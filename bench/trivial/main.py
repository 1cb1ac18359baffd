"""The reference handler: the same server stack as the service, doing nothing."""

from flask import Request


def trivial(request: Request) -> str:
    return "ok"
