"""The one way out for a stage that may reach the network (configure, and algorithms of an
environment with `network: true`): a network namespace of its own, joined to the host by a veth
pair whose traffic nftables filters in the host's namespace.

From inside, the stage has its own loopback (the host's and its abstract sockets are another
namespace's), an IPv4 address in 100.100.0.0/16 and a default route through the host. The host
drops every packet from a stage addressed to itself (`input`), forwards the rest unless it is
addressed to loopback, private, carrier-grade NAT, link-local, multicast or reserved networks
(those the environment's allowNetworks lists excepted, and DNS to the resolvers of
/etc/resolv.conf), and masquerades what it forwards; nothing reaches a stage unless it answers
the stage. No IPv6 leaves: a stage's namespace has no IPv6 route, and the host drops it. So a
bug in configure's own address check is not an escape: the packet still stops here.

It needs root, `ip` and `nft`, and turns on IPv4 forwarding (net.ipv4.ip_forward = 1, as any
container engine does). One engine per host owns the table `inet operator_engine` and the
namespaces named `oe-*`; it removes what an earlier one left when it starts.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from engine import inside

TABLE = "operator_engine"
PREFIX = "oe-"  # of namespaces and of the host's ends of veth pairs
POOL = ipaddress.ip_network("100.100.0.0/16")  # a /30 per stage
SLOTS = POOL.num_addresses // 4
BLOCKED = tuple(net for net, _ in inside.BLOCKED if ":" not in net)  # IPv6 never leaves
CALL_SECONDS = 30

RULESET = f"""
table inet {TABLE} {{
    set blocked {{ type ipv4_addr; flags interval; elements = {{ {", ".join(BLOCKED)} }} }}
    map stages {{ type ifname : verdict; }}
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{PREFIX}*" drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        oifname "{PREFIX}*" ct state established,related accept
        oifname "{PREFIX}*" drop
        iifname "{PREFIX}*" iifname vmap @stages
        iifname "{PREFIX}*" ip daddr @blocked drop
        iifname "{PREFIX}*" meta nfproto ipv6 drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {POOL} oifname != "{PREFIX}*" masquerade
    }}
}}
"""


class EgressUnavailable(Exception):
    """No filtered route can be built here."""


@dataclass(frozen=True)
class Route:
    name: str  # of the namespace, its chain and the host's end of its veth pair

    @property
    def namespace(self) -> Path:
        return Path("/run/netns") / self.name


class Egress:
    def __init__(self, resolvers: tuple[str, ...]) -> None:
        self.resolvers = resolvers
        self._slots = itertools.cycle(range(SLOTS))
        self._lock = threading.Lock()

    @classmethod
    def find(cls) -> Egress:
        missing = [tool for tool in ("ip", "nft", "nsenter") if shutil.which(tool) is None]
        if os.geteuid() != 0 or missing:
            why = f"{', '.join(missing)} not installed" if missing else "the engine is not root"
            raise EgressUnavailable(why)
        egress = cls(_resolvers())
        egress._reset()
        return egress

    def describe(self) -> str:
        return "its own network namespace, filtered egress (IPv4, no private networks)"

    def open(self, allowed: tuple[str, ...]) -> Route:
        """A namespace with its filtered route out; `allowed` networks it may reach though
        they are private."""
        with self._lock:
            slot = next(self._slots)
        route = Route(f"{PREFIX}{slot}")
        base = POOL.network_address + 4 * slot
        host, inside = f"{base + 1}/30", f"{base + 2}/30"
        if route.namespace.exists():  # this slot's last use is still being taken down
            self.close(route)
        try:
            _ip(
                f"netns add {route.name}",
                f"link add {route.name} type veth peer name eth0 netns {route.name}",
                f"addr add {host} dev {route.name}",
                f"link set {route.name} up",
            )
            _ip(
                f"addr add {inside} dev eth0",
                "link set eth0 up",
                "link set lo up",
                f"route add default via {base + 1}",
                namespace=route.name,
            )
            # The namespace has IPv4 only: an IPv6 network it may reach leads nowhere from it.
            ipv4 = [net for net in allowed if ipaddress.ip_network(net).version == 4]
            accepted = [f"ip daddr {{ {', '.join(ipv4)} }} accept"] if ipv4 else []
            accepted += [
                f"ip daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept"
                for resolver in self.resolvers
            ]
            rules = "".join(f"add rule inet {TABLE} {route.name} {rule}\n" for rule in accepted)
            _nft(
                f"add chain inet {TABLE} {route.name}\n{rules}"
                f'add element inet {TABLE} stages {{ "{route.name}" : jump {route.name} }}\n'
            )
        except EgressUnavailable:
            self.close(route)
            raise
        return route

    def close(self, route: Route) -> None:
        """The namespace, its veth pair (gone with it) and its chain gone; each may be gone
        already."""
        subprocess.run(["ip", "netns", "del", route.name], capture_output=True, check=False)
        commands = [
            f'delete element inet {TABLE} stages {{ "{route.name}" }}',
            f"delete chain inet {TABLE} {route.name}",
        ]
        if _nft_quiet("\n".join(commands)) != 0:  # one of them was gone: each on its own
            for command in commands:
                _nft_quiet(command)

    def _reset(self) -> None:
        """The table anew, and no namespace of an earlier engine's left."""
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        )
        for line in listed.stdout.splitlines():
            name = line.split(" ", 1)[0]
            if name.startswith(PREFIX):
                self.close(Route(name))
        subprocess.run(["nft", f"delete table inet {TABLE}"], capture_output=True, check=False)
        _nft(RULESET)
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        except OSError as exc:
            raise EgressUnavailable(f"IPv4 forwarding cannot be turned on: {exc}") from None


def _resolvers() -> tuple[str, ...]:
    """The IPv4 name servers of /etc/resolv.conf that a stage can reach (not loopback)."""
    found = []
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback:
                found.append(str(address))
    return tuple(found)


def _nft_quiet(script: str) -> int:
    return subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
    ).returncode


def _nft(script: str) -> None:
    done = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=CALL_SECONDS
    )
    if done.returncode != 0:
        raise EgressUnavailable(f"nft: {done.stderr.strip()}")


def _ip(*commands: str, namespace: str | None = None) -> None:
    """Several `ip` commands in one process (in `namespace`, when given)."""
    argv = ["ip", *(("-n", namespace) if namespace else ()), "-batch", "-"]
    try:
        done = subprocess.run(
            argv, input="\n".join(commands), capture_output=True, text=True, timeout=CALL_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressUnavailable(f"ip: {exc}") from None
    if done.returncode != 0:
        raise EgressUnavailable(f"ip: {done.stderr.strip()}")
