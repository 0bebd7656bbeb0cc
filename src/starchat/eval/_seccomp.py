"""The sandbox's seccomp filter: a classic BPF program built here and loaded with prctl, no library needed.

``_child.py`` loads it last, after every set-up step that needs these calls, in every mode. Refused with EPERM: namespaces (unshare, setns, clone with any CLONE_NEW* flag; clone3, whose flags
live in memory a filter cannot read, gets ENOSYS so libc falls back to clone), ptrace and
process_vm_readv/writev, bpf, perf_event_open, userfaultfd, the keyring (keyctl, add_key,
request_key), io_uring, every mount call (mount, umount2, pivot_root, chroot, the new mount API,
mount_setattr), modules, kexec, reboot, swap, quotactl, syslog, acct, host/domain names, file
handles (open_by_handle_at), prctl(PR_SET_PDEATHSIG) (so the program cannot undo its death
signal), and socket() for AF_UNIX (filesystem and abstract unix sockets: nothing outside can be
reached; socketpair still works), AF_NETLINK and AF_VSOCK. Syscalls of another ABI (32-bit
int 0x80, x32) kill the process. Architectures: x86_64 and aarch64; elsewhere no filter is loaded.
Not covered: anything the kernel allows to the remaining calls (kernel bugs), ioctl.

The sandbox launcher runs this file's source and ``_child.py`` as one script; keep it self-contained.
"""

import os

_SECCOMP_TABLES = {
    "x86_64": (
        0xC000003E,
        dict(
            deny=(
                272,
                308,
                101,
                310,
                311,
                321,
                298,
                323,
                250,
                248,
                249,
                425,
                426,
                427,
                165,
                166,
                155,
                161,
                442,
                428,
                429,
                430,
                431,
                432,
                433,
                175,
                313,
                176,
                246,
                320,
                169,
                167,
                168,
                179,
                103,
                163,
                170,
                171,
                303,
                304,
                134,
                156,
                172,
                173,
            ),
            clone=56,
            clone3=435,
            socket=41,
            prctl=157,
        ),
    ),
    "aarch64": (
        0xC00000B7,
        dict(
            deny=(
                97,
                268,
                117,
                270,
                271,
                280,
                241,
                282,
                219,
                217,
                218,
                425,
                426,
                427,
                40,
                39,
                41,
                51,
                442,
                428,
                429,
                430,
                431,
                432,
                433,
                105,
                273,
                106,
                104,
                294,
                142,
                224,
                225,
                60,
                116,
                89,
                161,
                162,
                264,
                265,
            ),
            clone=220,
            clone3=435,
            socket=198,
            prctl=167,
        ),
    ),
}
CLONE_NEW_ANY = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
DENIED_FAMILIES = (1, 16, 40)  # AF_UNIX, AF_NETLINK, AF_VSOCK


def seccomp_program(machine):
    """The filter as (code, jt, jf, k) instructions, or None for an architecture we have no table for."""
    if machine not in _SECCOMP_TABLES:
        return None
    arch, t = _SECCOMP_TABLES[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    arg0 = 16  # offsetof(struct seccomp_data, args[0]), its low 32 bits (little endian)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]  # x32 ABI
    for nr in t["deny"]:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    prog += [(jeq, 0, 1, t["clone3"]), (ret, 0, 0, enosys)]
    prog += [
        (jeq, 0, 4, t["clone"]),
        (ld, 0, 0, arg0),
        (jset, 0, 1, CLONE_NEW_ANY),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    prog += [(jeq, 0, 4, t["prctl"]), (ld, 0, 0, arg0), (jeq, 0, 1, 1), (ret, 0, 0, eperm), (ret, 0, 0, allow)]
    fams = [i for f in DENIED_FAMILIES for i in ((jeq, 0, 1, f), (ret, 0, 0, eperm))]
    prog += [(jeq, 0, len(fams) + 2, t["socket"]), (ld, 0, 0, arg0), *fams, (ret, 0, 0, allow)]
    return prog + [(ret, 0, 0, allow)]


_PREPARED = []  # (libc, sock_fprog, buffer): built once in the fork server, so each fork only calls prctl


def prepare_seccomp():
    """Build the filter for this machine once; None where there is no table for it."""
    if not _PREPARED:
        prog = seccomp_program(os.uname().machine)
        if prog is None:
            _PREPARED.append(None)
        else:
            import ctypes
            import struct

            buf = ctypes.create_string_buffer(b"".join(struct.pack("<HBBI", *i) for i in prog))

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            fprog = SockFprog(len(prog), ctypes.addressof(buf))
            _PREPARED.append((ctypes, ctypes.CDLL(None, use_errno=True), fprog, buf))
    return _PREPARED[0]


def install_seccomp():
    """Load the filter into this process (after PR_SET_NO_NEW_PRIVS); returns False where none exists."""
    prepared = prepare_seccomp()
    if prepared is None:
        return False
    ctypes, libc, fprog, _ = prepared
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {os.strerror(err)}")
    return True
