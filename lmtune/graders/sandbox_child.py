"""The program a python grader runs in: `python -I -c <this file's text>`, started by sandbox.py.

It is trusted code until it calls the grader: it reads the request from stdin, closes itself in
(below), then compiles the grader's source and calls `grade(sample, item)` for each pair, writing one
JSON line per result to a private copy of stdout. Whatever the grader prints goes to /dev/null.

Closing in, in this order (each layer reported to the parent in the first line):
  1. as root: drop every capability (and the bounding set): root's uid stays, none of its powers
  2. rlimits: address space (memory), CPU seconds, processes of the user, file size, open files, no core
  3. no_new_privs, then Landlock (Linux >= 5.13): files readable only under the Python installation and
     the system libraries, writable nowhere; with ABI >= 4 no TCP bind/connect; with ABI >= 6 no
     signal to a process outside, no abstract unix socket
  4. seccomp (x86_64, aarch64): no socket, no new process (threads only), no exec, no signal to
     another process, no ptrace or process_vm_*, no namespaces, mounts, bpf, io_uring or keyrings
In strict mode a layer that cannot be set up stops the program before the grader's code runs.
Only the standard library is imported here: this file must run with nothing of lmtune installed.
"""

import ctypes
import json
import math
import os
import platform
import resource
import struct
import sys
import traceback

PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
CAPSET = {"x86_64": 126, "aarch64": 91}
LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
READ_ONLY_DIR = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
READ_ONLY_FILE = FS_EXECUTE | FS_READ_FILE
EPERM, ENOSYS = 1, 38
CLONE_THREAD = 0x10000
# syscalls denied with EPERM (clone only without CLONE_THREAD; clone3 with ENOSYS: glibc then uses clone)
DENIED = (
    "socket socketpair connect fork vfork execve execveat kill tkill tgkill ptrace process_vm_readv "
    "process_vm_writev pidfd_open pidfd_send_signal pidfd_getfd io_uring_setup unshare setns mount bpf "
    "perf_event_open keyctl add_key request_key userfaultfd"
).split()
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "socket": 41, "socketpair": 53, "connect": 42, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
        "execve": 59, "execveat": 322, "kill": 62, "tkill": 200, "tgkill": 234, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "io_uring_setup": 425, "unshare": 272, "setns": 308, "mount": 165, "bpf": 321,
        "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323,
    }),
    "aarch64": (0xC00000B7, {
        "socket": 198, "socketpair": 199, "connect": 203, "clone": 220, "clone3": 435, "execve": 221,
        "execveat": 281, "kill": 129, "tkill": 130, "tgkill": 131, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
        "io_uring_setup": 425, "unshare": 97, "setns": 268, "mount": 40, "bpf": 280, "perf_event_open": 241,
        "keyctl": 219, "add_key": 217, "request_key": 218, "userfaultfd": 282,
    }),
}  # fmt: skip

libc = ctypes.CDLL(None, use_errno=True)


class Refused(Exception):
    pass


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(quiet, fd)
    layers, missing = close_in(request)
    if missing and request["strict"]:
        protocol.write(json.dumps({"refused": "; ".join(missing)}) + "\n")
        return
    os.dup2(quiet, 2)
    protocol.write(json.dumps({"ready": layers, "missing": missing}) + "\n")
    try:
        scope: dict = {"__name__": "grader"}
        exec(compile(request["source"], "grader.py", "exec"), scope)  # the grader's own code, closed in above
        grade = scope.get("grade")
        if not callable(grade):
            raise NameError("the source defines no function grade(sample, item)")
    except BaseException:
        protocol.write(json.dumps({"setup_error": last_lines()}) + "\n")
        return
    for index, (sample, item) in request["pairs"]:
        protocol.write(json.dumps(call(grade, index, sample, item)) + "\n")


def call(grade, index: int, sample, item) -> dict:
    try:
        score = grade(sample, item)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise TypeError(f"grade() returned {str(score)[:100]!r}, not a finite number")
        return {"index": index, "score": float(score)}
    except BaseException:
        return {"index": index, "error": last_lines()}


def last_lines() -> str:
    return "".join(traceback.format_exc().splitlines(keepends=True)[-6:])[-2000:]


def close_in(request: dict) -> tuple[list, list]:
    layers, missing = [], []
    if os.geteuid() == 0:
        try:
            layers.append(drop_capabilities())
        except Refused as refusal:
            missing.append(f"capabilities: {refusal}")
    limits = request["limits"]
    for name, value in (
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_FSIZE", limits["file_bytes"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    layers.append("rlimits")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        missing.append(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    for name, layer in (("landlock", lambda: landlock(request["readable"])), ("seccomp", seccomp)):
        try:
            layers.append(f"{name} {layer()}")
        except Refused as refusal:
            missing.append(f"{name}: {refusal}")
    return layers, missing


def drop_capabilities() -> str:
    """Root without capabilities: no module loading, no raw I/O, no reading others' files (DAC)."""
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such
            raise Refused(f"dropping capability {capability} failed: {os.strerror(ctypes.get_errno())}")
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # effective, permitted, inheritable: all empty, in two 32-bit halves
    number = CAPSET.get(platform.machine())
    if number is None or libc.syscall(number, ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0:
        raise Refused(f"capset failed: {os.strerror(ctypes.get_errno())}")
    return "capabilities dropped"


def landlock(readable: list[str]) -> str:
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        raise Refused(f"Landlock is not available ({os.strerror(ctypes.get_errno())}; Linux >= 5.13 with it enabled)")
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    net = 0b11 if abi >= 4 else 0  # bind and connect TCP
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets and signals
    attr = struct.pack("QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, ctypes.c_char_p(attr), len(attr), 0)
    if ruleset < 0:
        raise Refused(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    for path in readable:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a library folder this system does not have
        access = READ_ONLY_DIR if os.path.isdir(path) else READ_ONLY_FILE
        rule = struct.pack("=Qi", access, fd)
        done = libc.syscall(LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.c_char_p(rule), 0)
        os.close(fd)
        if done != 0:
            raise Refused(f"landlock_add_rule({path}) failed: {os.strerror(ctypes.get_errno())}")
    if libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
        raise Refused(f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)
    return f"ABI {abi}"


def seccomp() -> str:
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise Refused(f"no syscall table for {machine}")
    arch, numbers = SYSCALLS[machine]
    program = [
        (0x20, 0, 0, 4),  # load the architecture
        (0x15, 1, 0, arch),  # ours: skip the kill
        (0x06, 0, 0, 0x80000000),  # kill the process
        (0x20, 0, 0, 0),  # load the syscall number
    ]
    if machine == "x86_64":  # the x32 ABI's numbers have bit 30 set: kill
        program += [(0x35, 0, 1, 0x40000000), (0x06, 0, 0, 0x80000000)]
    for name in DENIED:
        if name in numbers:
            program += [(0x15, 0, 1, numbers[name]), (0x06, 0, 0, 0x00050000 | EPERM)]
    program += [(0x15, 0, 1, numbers["clone3"]), (0x06, 0, 0, 0x00050000 | ENOSYS)]
    program += [
        (0x15, 0, 3, numbers["clone"]),  # clone: a thread is allowed, a process is not
        (0x20, 0, 0, 16),  # the low half of its flags (args[0])
        (0x45, 1, 0, CLONE_THREAD),
        (0x06, 0, 0, 0x00050000 | EPERM),
        (0x06, 0, 0, 0x7FFF0000),  # allow
    ]
    filters = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(program), ctypes.addressof(buffer))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise Refused(f"installing the filter failed: {os.strerror(ctypes.get_errno())}")
    return machine


if __name__ == "__main__":
    main()
