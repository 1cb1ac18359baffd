"""The seccomp filter every sandbox runs under: system calls no algorithm needs, and that have
been the way out of sandboxes, fail with EPERM.

Refused: debugging other processes (`ptrace`, `process_vm_*`), io_uring, the kernel keyring,
eBPF, userfaultfd, perf events, loading kernels and modules, mounting and pivoting, entering or
making namespaces (`unshare`, `setns`, and `clone` with any CLONE_NEW* flag), and the clock,
swap, reboot, accounting and handle-based opens. `clone3` answers ENOSYS, since its flags lie
in memory a filter cannot read: the C library then falls back to `clone`, which is checked.
Calls of another architecture's ABI (i386 on x86-64, x32) kill the process.

The filter is a classic BPF program built here, byte for byte, for x86-64 and aarch64: no
library is needed, and bubblewrap loads it from a descriptor (`--seccomp FD`); the unshare
sandbox loads it with a few lines of Python just before the stage runs (`LOADER`).
"""

from __future__ import annotations

import copy
import errno
import os
import platform
import struct
from typing import Any

# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the low word first).
NR, ARCH, ARG0 = 0, 4, 16
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
ERRNO = 0x00050000
X32_BIT = 0x40000000
CLONE_NEW = 0x7E020080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
# BPF opcodes: load a word of seccomp_data, jump if equal / greater or equal / any bit set.
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06

# The refused calls and `clone`, `clone3` (checked apart), as "name=number" per machine, with
# the machine's audit architecture.
X86_64 = """
ptrace=101 process_vm_readv=310 process_vm_writev=311 io_uring_setup=425 io_uring_enter=426
io_uring_register=427 keyctl=250 add_key=248 request_key=249 bpf=321 userfaultfd=323
perf_event_open=298 kexec_load=246 kexec_file_load=320 init_module=175 finit_module=313
delete_module=176 mount=165 umount2=166 pivot_root=155 chroot=161 open_tree=428 move_mount=429
fsopen=430 fsconfig=431 fsmount=432 fspick=433 mount_setattr=442 unshare=272 setns=308
swapon=167 swapoff=168 reboot=169 acct=163 settimeofday=164 clock_settime=227 adjtimex=159
clock_adjtime=305 quotactl=179 name_to_handle_at=303 open_by_handle_at=304 syslog=103
vhangup=153 fanotify_init=300 clone=56 clone3=435
"""
AARCH64 = """
ptrace=117 process_vm_readv=270 process_vm_writev=271 io_uring_setup=425 io_uring_enter=426
io_uring_register=427 keyctl=219 add_key=217 request_key=218 bpf=280 userfaultfd=282
perf_event_open=241 kexec_load=104 kexec_file_load=294 init_module=105 finit_module=273
delete_module=106 mount=40 umount2=39 pivot_root=41 chroot=51 open_tree=428 move_mount=429
fsopen=430 fsconfig=431 fsmount=432 fspick=433 mount_setattr=442 unshare=97 setns=268
swapon=224 swapoff=225 reboot=142 acct=89 settimeofday=170 clock_settime=112 adjtimex=171
clock_adjtime=266 quotactl=60 name_to_handle_at=264 open_by_handle_at=265 syslog=116
vhangup=58 fanotify_init=262 clone=220 clone3=435
"""
ABIS = {"x86_64": (0xC000003E, X86_64), "aarch64": (0xC00000B7, AARCH64)}

# Installs the filter read from descriptor argv[1], then runs argv[2:]: the unshare sandbox's
# last step (no_new_privs is already set by setpriv, as seccomp requires of an unprivileged
# process).
LOADER = """\
import ctypes, os, sys
fd = int(sys.argv[1])
code = b''
while chunk := os.read(fd, 65536):
    code += chunk
os.close(fd)
buffer = ctypes.create_string_buffer(code)
class Program(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
program = Program(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(program), 0, 0) != 0:
    sys.exit('sandbox: seccomp filter refused: ' + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


class SeccompUnavailable(Exception):
    """No filter is built for this machine's architecture."""


def program(machine: str | None = None) -> bytes:
    """The filter as the kernel takes it: an array of struct sock_filter."""
    machine = machine or platform.machine()
    if machine not in ABIS:
        raise SeccompUnavailable(f"no seccomp filter for {machine} (x86_64 and aarch64 only)")
    arch, table = ABIS[machine]
    numbers = {name: int(number) for name, number in (pair.split("=") for pair in table.split())}
    refused = sorted(n for name, n in numbers.items() if name not in ("clone", "clone3"))
    eperm, enosys = ERRNO | errno.EPERM, ERRNO | errno.ENOSYS
    code = [
        (LD_ABS, 0, 0, ARCH),
        (JEQ, 1, 0, arch),
        (RET, 0, 0, KILL_PROCESS),
        (LD_ABS, 0, 0, NR),
    ]
    if machine == "x86_64":
        code += [(JGE, 0, 1, X32_BIT), (RET, 0, 0, KILL_PROCESS)]
    for number in refused:
        code += [(JEQ, 0, 1, number), (RET, 0, 0, eperm)]
    code += [
        (JEQ, 0, 1, numbers["clone3"]),
        (RET, 0, 0, enosys),
        (JEQ, 0, 3, numbers["clone"]),
        (LD_ABS, 0, 0, ARG0),
        (JSET, 0, 1, CLONE_NEW),
        (RET, 0, 0, eperm),
        (RET, 0, 0, ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in code)


def oci_profile(base: dict[str, Any], machine: str | None = None) -> dict[str, Any]:
    """The same refusals as an OCI seccomp profile, for podman: its default profile (`base`,
    an allowlist), less the refused calls and the other ABIs, plus EPERM for the refused
    calls, ENOSYS for clone3, and clone allowed only without a CLONE_NEW* flag."""
    machine = machine or platform.machine()
    if machine not in ABIS:
        raise SeccompUnavailable(f"no seccomp filter for {machine} (x86_64 and aarch64 only)")
    names = {pair.split("=")[0] for pair in ABIS[machine][1].split()}
    refused = sorted(names - {"clone", "clone3"})
    profile = copy.deepcopy(base)
    for abi in profile.get("archMap") or []:
        abi["subArchitectures"] = []  # i386 and x32 calls: not this filter's numbers
    kept = []
    for rule in profile.get("syscalls") or []:
        rule["names"] = [name for name in rule.get("names", []) if name not in names]
        if rule["names"]:
            kept.append(rule)
    profile["syscalls"] = [
        *kept,
        {"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NEW, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
    ]
    return profile


def descriptor(code: bytes) -> int:
    """A descriptor to read `code` from once (a pipe: the program is far below its size)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, code)
    finally:
        os.close(write_end)
    return read_end
