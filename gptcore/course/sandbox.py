"""The sandbox that a grading kernel runs in: student code on the instructor's machine.

``gptcore class autograde`` starts every student's kernel through this module
(``python -m gptcore.course.sandbox SPEC CONNECTION_FILE ...``, the ``argv`` of a
kernelspec written by :func:`write_kernelspec`). The launcher runs as the
grader, prepares the sandbox, then ``exec``s into it:

- **bubblewrap** (``bwrap``) gives the kernel its own mount, PID, network, IPC
  and UTS namespaces. Its file system holds only what Python needs, read-only:
  ``/usr`` (and the ``/bin``, ``/lib*`` links), a handful of ``/etc`` files, the
  interpreter and the virtual environment, the ``gptcore`` package and the
  course data (``$GPTCORE_DATA_DIR`` and gptcore's download cache).
  ``solutions/``, every gradebook, the rest of the checkout, other students'
  files and the rest of the grader's home are simply not there. ``/tmp`` (with
  HOME in it), ``/dev/shm`` and the runtime folder are one tmpfs of the grading
  worker's own, capped in size and in number of files, never on the host's disk
  (:mod:`gptcore.course.classroom.scratch`; without root, a size-capped
  bubblewrap tmpfs); the student's working copy is copied into it, so whatever
  the notebook writes is discarded with the sandbox and nothing outside changes. There is no network (only an unconfigured loopback): the kernel talks
  to the grader over ZeroMQ IPC sockets in a directory bound into the sandbox.
- **A dedicated user** (with root): the kernel runs as an unprivileged uid of
  its own (one per worker, via ``setpriv``, no capabilities, ``no_new_privs``),
  so ``RLIMIT_NPROC`` caps its processes and threads and a fork bomb stops
  there.
- **Resource limits** (``setrlimit``, inherited): CPU seconds, address space
  (memory), processes and file size; no core dumps.
- **No leftovers**: ``--die-with-parent`` kills the sandbox with its grader, and
  the PID namespace takes every process the notebook started with it.
- **No inherited descriptors**: stdin is /dev/null, stdout and stderr a file in
  the runtime folder, every other descriptor is closed (never the grader's logs).
- **A clean environment**: only ``PATH``, ``HOME``, locale, thread counts,
  Matplotlib's settings and the ``GPTCORE_*`` variables reach the kernel, never
  the grader's tokens or credentials.

Without bubblewrap (``--sandbox off``, or none can run here) the kernel still
gets the limits, the clean environment and, as root, the dedicated user, but it
can read anything that user may read and write where it may write; the grading
report then says the sandbox was off.

Limits of this sandbox: it is not a defence against kernel exploits; total
memory is bounded per process (address space) times processes, not by a
cgroup; the kernel can spend its whole time budget on CPU; and code running
there can tamper with the watchers that run beside it (see
``gptcore.course.classroom``), which only ever fails rules about its own code.
"""

# Over ~600 lines on purpose: the launcher (which runs as the grader, then execs into the
# sandbox), the bubblewrap command line and the probe that checks it must be read together,
# since a claim of the README's sandbox section rests on each line; the kernel's scratch space
# already lives in classroom/scratch.py.

from __future__ import annotations

import ctypes
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Limits",
    "Sandbox",
    "kill_user_processes",
    "probe",
    "runtime_dir",
    "sandbox_uid",
    "write_kernelspec",
]

KERNEL_NAME = "gptcore-sandbox"
MiB = 1 << 20
GiB = 1 << 30
# Kernels run as uid/gid UID_BASE + 64 * (the grader's pid) + worker: far above the
# ranges that /etc/passwd, systemd's dynamic users and container mappings use, and
# below 2**31 even for the largest pid Linux allows (4,194,304).
UID_BASE = int(os.environ.get("GPTCORE_SANDBOX_UID_BASE", "1800000000"))
# Where the working copy and the private /tmp live inside the sandbox.
SCRATCH = "/tmp"
HOME = "/tmp/home"
_SEED = "/.gptcore-seed"  # a read-only Matplotlib cache, copied into HOME at start
_SUBMISSION = "/.gptcore-submission"  # the working copy, read-only, copied into SCRATCH
RUNTIME_MARKER = ".gptcore-kernel-runtime"
# /etc files Python, the C library and Matplotlib may read; nothing secret.
_ETC = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/mime.types",
    "/etc/os-release",
    "/etc/alternatives",
    "/etc/fonts",
]
# Environment variables passed through to the kernel as they are.
_PASS_ENV = ("LANG", "LC_ALL", "TZ")
_PASS_PREFIX = ("GPTCORE_",)


@dataclass(frozen=True)
class Limits:
    """Per-kernel resource limits (``setrlimit``)."""

    cpu_seconds: int = 1800  # RLIMIT_CPU of the kernel process (all its threads)
    memory_bytes: int = 4 * GiB  # RLIMIT_AS: address space of each process
    processes: int = 64  # RLIMIT_NPROC: processes and threads of the sandbox user
    file_bytes: int = 256 * MiB  # RLIMIT_FSIZE: the largest file it may write
    scratch_bytes: int = 1 * GiB  # all its writable space: /tmp, HOME, /dev/shm, runtime
    files: int = 50_000  # files and folders in that space (a tmpfs's nr_inodes)

    def describe(self) -> str:
        return (
            f"{self.cpu_seconds} CPU s, {self.memory_bytes // MiB} MiB address space, "
            f"{self.processes} processes/threads, files up to {self.file_bytes // MiB} MiB, "
            f"{self.scratch_bytes // MiB} MiB scratch"
        )


@dataclass(frozen=True)
class Sandbox:
    """How kernels are isolated in this run (see :func:`probe`)."""

    mode: str  # "bwrap" or "off"
    reason: str = ""  # why the sandbox is off, or how it is weakened
    user: bool = False  # kernels run as a dedicated unprivileged uid (needs root)

    @property
    def on(self) -> bool:
        return self.mode == "bwrap"

    def describe(self) -> str:
        if self.on:
            who = "a dedicated unprivileged user" if self.user else "the grader's own user"
            return (
                f"sandbox on (bubblewrap: no network, no access to solutions/, gradebooks "
                f"or other students' files, writes discarded; kernel runs as {who})"
                + (f"; note: {self.reason}" if self.reason else "")
            )
        return (
            f"SANDBOX OFF: {self.reason}. Student code ran with the grader's file access "
            "(resource limits only); it could read solutions/ and the gradebook, write files "
            "and use the network."
        )


def _bwrap() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None
    )


def _setpriv() -> str | None:
    return shutil.which("setpriv") or (
        "/usr/bin/setpriv" if os.access("/usr/bin/setpriv", os.X_OK) else None
    )


def probe(request: str = "auto", *, kernel: bool = False) -> Sandbox:
    """What sandbox this machine can give: ``request`` is ``auto``, ``on`` or ``off``.

    ``on`` raises ``ValueError`` when no sandbox can run; ``auto`` falls back
    to ``off`` and says why. ``GPTCORE_SANDBOX=off`` forces the fallback.
    With ``kernel=True``, also start Python with ipykernel and gptcore in the
    sandbox once (a second or two), so that a sandbox that cannot run a kernel
    here is found before any student is graded.
    """
    if request not in ("auto", "on", "off"):
        raise ValueError(f"--sandbox must be auto, on or off, not {request!r}")
    root = os.geteuid() == 0
    user = root and _setpriv() is not None
    if request == "off":
        return Sandbox("off", "turned off with --sandbox off", user)
    if os.environ.get("GPTCORE_SANDBOX", "").lower() == "off" and request == "auto":
        return Sandbox("off", "turned off with GPTCORE_SANDBOX=off", user)
    reason = _bwrap_problem()
    note = "" if root else "not root: no dedicated user, so the process limit is not enforced"
    box = Sandbox("bwrap", note, user)
    if not reason and kernel:
        reason = _kernel_problem(box)
    if reason:
        if request == "on":
            raise ValueError(f"--sandbox on, but {reason}")
        return Sandbox("off", reason, user)
    return box


def _kernel_problem(box: Sandbox) -> str:
    """Why a kernel cannot start in ``box``, or "": run the launcher on a tiny script."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gptcore-probe-") as tmp:
        base = Path(tmp)
        write_kernelspec(base / "spec", box, Limits(), uid=sandbox_uid(63))
        spec_path = base / "spec" / "kernels" / KERNEL_NAME / "sandbox.json"
        spec = json.loads(spec_path.read_text())
        spec["launch"] = ["-c", "import ipykernel.kernelapp, gptcore.course.checks; print('ok')"]
        spec_path.write_text(json.dumps(spec))
        rt = runtime_dir()
        (rt / "kernel.json").write_text("{}")
        work = base / "work"
        work.mkdir()
        try:
            out = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "gptcore.course.sandbox",
                    str(spec_path),
                    str(rt / "kernel.json"),
                ],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=120,
            )
            # (The kernel's stdout and stderr go to a file of its runtime folder.)
            log = rt / "kernel-output.log"
            printed = log.read_text(errors="replace") if log.is_file() else ""
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"a kernel cannot start in the sandbox ({e})"
        finally:
            shutil.rmtree(rt, ignore_errors=True)
            if box.user:
                kill_user_processes(sandbox_uid(63))
        if out.returncode != 0 or "ok" not in printed.splitlines():
            lines = (out.stderr + printed).strip().splitlines()
            return "a kernel cannot start in the sandbox" + (f" ({lines[-1]})" if lines else "")
    return ""


def _bwrap_problem() -> str:
    """Why bubblewrap cannot sandbox a kernel here, or ""."""
    exe = _bwrap()
    if not exe:
        return (
            "bubblewrap (bwrap) is not installed; install it with `apt-get install bubblewrap` "
            "(make setup does so when run as root)"
        )
    cmd = [exe, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "true"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap does not run here ({e})"
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        return "bubblewrap cannot create namespaces here" + (f" ({detail[-1]})" if detail else "")
    return ""


def sandbox_uid(worker: int) -> int:
    """The dedicated uid (and gid) of worker ``worker`` of this grading run."""
    # The grader's pid makes the range unique among runs grading at the same time
    # (killing one run's leftovers must never touch another's kernels).
    uid = UID_BASE + os.getpid() * 64 + worker
    assert 0 <= worker < 64 and uid < 2**32 - 2, (worker, uid)
    return uid


@dataclass
class KernelSpec:
    """What the launcher needs, written to JSON beside the kernelspec."""

    mode: str
    python: str
    uid: int | None
    limits: dict[str, int]
    env: dict[str, str]
    ro_binds: list[str] = field(default_factory=list)
    seed: str | None = None  # a Matplotlib cache to start from


def _ro_paths(private: list[str] | None = None) -> list[str]:
    """Host paths the kernel needs, read-only: the interpreter, the venv, gptcore, data.

    Raises ``ValueError`` if one of them holds a ``private`` path (the course).
    """
    paths: list[str] = []
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths += [p, os.path.realpath(p)]
    exe = Path(sys.executable)
    paths += [str(exe.parent), os.path.realpath(exe)]
    import gptcore

    paths += [str(Path(gptcore.__file__).resolve().parent)]
    # Site folders that .pth files add (site.addsitedir), never the checkout itself.
    paths += [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    paths += [p for p in _data_dirs() if p]
    keep = []
    for p in sorted(set(paths), key=len):
        if not os.path.exists(p) or p in ("/", "/usr"):
            continue
        if any(p == k or p.startswith(k.rstrip("/") + "/") for k in keep):
            continue  # already inside a bound folder
        keep.append(p)
    for p in keep:
        for secret in private or []:
            if os.path.realpath(secret).startswith(os.path.realpath(p).rstrip("/") + "/"):
                raise ValueError(
                    f"the sandbox would expose {secret} to student code through {p} "
                    "(the Python environment or the data folder contains the course)"
                )
    return keep


def _data_dirs() -> tuple[str, str]:
    """($GPTCORE_DATA_DIR, the grader's gptcore cache): corpora the kernel may read."""
    from ..data import DATA_DIR_ENV, cache_dir

    return os.environ.get(DATA_DIR_ENV, ""), str(cache_dir())


def _kernel_env(threads: int, extra: dict[str, str] | None) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    for k, v in os.environ.items():
        if k in _PASS_ENV or k.startswith(_PASS_PREFIX):
            env[k] = v
    for k in ("GPTCORE_SANDBOX", "GPTCORE_SANDBOX_UID_BASE", "GPTCORE_SANDBOX_DEBUG"):
        env.pop(k, None)
    # The kernel's cache is its own (under HOME, written and thrown away with the
    # sandbox); corpora come read-only from the data folder or the grader's cache.
    env.pop("GPTCORE_CACHE_DIR", None)
    data_dir, cache = _data_dirs()
    if not data_dir and os.path.isdir(cache):
        env["GPTCORE_DATA_DIR"] = cache
    env.update(extra or {})
    return env


def write_kernelspec(
    base: Path,
    sandbox: Sandbox,
    limits: Limits,
    *,
    uid: int | None,
    threads: int = 1,
    env: dict[str, str] | None = None,
    seed: Path | None = None,
    private: list[str] | None = None,
) -> str:
    """Write the ``gptcore-sandbox`` kernelspec under ``base/kernels``; return its name.

    Put ``base`` on ``JUPYTER_PATH`` and run notebooks with that kernel name.
    ``private`` paths (the course folder) must stay invisible to the kernel.
    """
    spec_dir = base / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = KernelSpec(
        mode=sandbox.mode,
        python=sys.executable,
        uid=uid if sandbox.user else None,
        limits=asdict(limits),
        env=_kernel_env(threads, env),
        ro_binds=_ro_paths(private if sandbox.on else None),
        seed=str(seed) if seed and seed.is_dir() else None,
    )
    (spec_dir / "sandbox.json").write_text(json.dumps(asdict(spec), indent=1))
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                # -I: the launcher starts in the student's folder, as root; without
                # it, a gptcore/ folder there would be imported instead of ours.
                "argv": [
                    sys.executable,
                    "-I",
                    "-m",
                    "gptcore.course.sandbox",
                    str(spec_dir / "sandbox.json"),
                    "{connection_file}",
                ],
                "display_name": "Python 3 (gptcore grading sandbox)",
                "language": "python",
                # Interrupt through the control channel: a signal to the launcher
                # would not reach a kernel in its own session and PID namespace.
                "interrupt_mode": "message",
            }
        )
    )
    return KERNEL_NAME


RUNTIME_BASE = "/tmp" if os.path.isdir("/tmp") else None
# What the runtime marker says when the folder is a tmpfs of its own (made by
# gptcore.course.classroom.scratch): the kernel's whole writable space is in it.
BOUNDED_MARKER = "tmpfs"


def runtime_dir(tag: str = "") -> Path:
    """A fresh folder for one kernel's connection file and IPC sockets, bound into
    the sandbox: ``/tmp/gptk-<tag>-*``. Short (a Unix socket path has at most 107
    bytes) and reachable by the kernel's user even without a sandbox. (Class
    grading mounts a bounded tmpfs on it: :mod:`gptcore.course.classroom.scratch`.)"""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"gptk-{tag}-" if tag else "gptk-", dir=RUNTIME_BASE))
    (path / RUNTIME_MARKER).touch()
    return path


def kill_user_processes(uid: int) -> int:
    """SIGKILL every process that runs as ``uid`` (a sandbox user); return how many."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) == uid:
                    try:
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed += 1
                    except OSError:
                        pass
                break
    return killed


# ------------------------------------------------------------------ the launcher
def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs)]:
            os.lchown(name, uid, uid)
        for f in files:
            os.lchown(os.path.join(root, f), uid, uid)


def _make_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | (0o555 if p.is_dir() else 0o444))


def _set_limits(limits: dict[str, int], user: bool) -> None:
    def cap(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_CPU, limits["cpu_seconds"])
    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, limits["file_bytes"])
    if user:  # counts processes of the real uid: only meaningful for a dedicated user
        cap(resource.RLIMIT_NPROC, limits["processes"])


def _drop_privileges(uid: int | None) -> list[str]:
    if uid is None:
        return []
    setpriv = _setpriv() or "setpriv"
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--pdeathsig=KILL",
        "--",
    ]


def _parent_death_signal() -> None:
    """Die with the grader (a launcher that outlives it would be an orphan)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _bounded(runtime: str) -> bool:
    try:
        return Path(runtime, RUNTIME_MARKER).read_text() == BOUNDED_MARKER
    except OSError:
        return False


def _only_std_fds(runtime: str, debug: bool) -> None:
    """The kernel inherits stdin from /dev/null, stdout and stderr into a file of its
    runtime folder, and no other descriptor: never the grader's logs."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    if not debug:
        out = os.open(os.path.join(runtime, "kernel-output.log"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(3, soft if soft != resource.RLIM_INFINITY else 65536)


def _bwrap_command(spec: dict[str, Any], workdir: str, runtime: str) -> list[str]:
    exe = _bwrap() or "bwrap"
    cmd = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    cmd += ["--hostname", "sandbox"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    if _bounded(runtime):
        # The runtime folder's own tmpfs (size and file count capped, off the
        # host's disk): all the kernel may write, runtime folder included.
        cmd += ["--bind", os.path.join(runtime, "shm"), "/dev/shm"]
        cmd += ["--bind", os.path.join(runtime, "scratch"), SCRATCH]
    else:  # (size-capped, but no cap on the number of files: see remove_runtime_dir)
        cmd += ["--size", str(64 * MiB), "--perms", "1777", "--tmpfs", "/dev/shm"]
        cmd += ["--size", str(spec["limits"]["scratch_bytes"]), "--perms", "1777"]
        cmd += ["--tmpfs", SCRATCH]
    made: set[str] = {"/", "/usr", "/proc", "/dev", SCRATCH}

    def bind(option: str, src: str, dest: str) -> None:
        # bwrap makes missing parent folders 0700: make them traversable first.
        for parent in reversed(Path(dest).parents):
            if str(parent) not in made:
                made.add(str(parent))
                cmd.extend(["--perms", "0755", "--dir", str(parent)])
        cmd.extend([option, src, dest])

    for p in [*_ETC, *spec["ro_binds"]]:
        if os.path.exists(p):
            bind("--ro-bind", p, p)
    bind("--bind", runtime, runtime)  # the connection file and the IPC sockets
    bind("--ro-bind", workdir, _SUBMISSION)
    if spec.get("seed"):
        bind("--ro-bind", spec["seed"], _SEED)
    cmd += ["--chdir", "/", "--clearenv"]
    for k, v in spec["env"].items():
        cmd += ["--setenv", k, v]
    return cmd


# Run inside the sandbox as the kernel's user: make HOME, copy in the working
# copy, then become the kernel. $0 is the working copy's path in the sandbox.
_START = (
    'mkdir -p "$HOME" "$MPLCONFIGDIR" "$0" && '
    f'{{ [ ! -d {_SEED} ] || cp -R {_SEED}/. "$MPLCONFIGDIR"; }} && '
    f'cp -R {_SUBMISSION}/. "$0" && cd "$0" && exec "$@"'
)


def main(argv: list[str] | None = None) -> None:
    """``python -m gptcore.course.sandbox SPEC CONNECTION_FILE [KERNEL ARGS...]``: become the kernel."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.exit("usage: python -m gptcore.course.sandbox SPEC CONNECTION_FILE [KERNEL ARGS...]")
    spec = json.loads(Path(args[0]).read_text())
    connection_file, extra = os.path.abspath(args[1]), args[2:]
    runtime = os.path.dirname(connection_file)
    if not os.path.exists(os.path.join(runtime, RUNTIME_MARKER)):
        sys.exit(
            f"gptcore.course.sandbox: {runtime} is not a kernel runtime folder made by "
            "gptcore.course.sandbox.runtime_dir(); set KernelManager.connection_file inside one"
        )
    workdir = os.getcwd()
    uid = spec.get("uid")
    debug = bool(os.environ.get("GPTCORE_SANDBOX_DEBUG"))
    kernel = [
        spec["python"],
        # Isolated (-I): neither the working copy nor PYTHON* variables can put a
        # student's own "gptcore" or "torch" ahead of the real ones. (-B: no .pyc.)
        "-I",
        "-B",
        # ("launch" replaces ipykernel in the self-test of probe(kernel=True).)
        *spec.get("launch", ["-m", "ipykernel_launcher"]),
        "-f",
        connection_file,
        *extra,
    ]
    if uid is not None:
        # The kernel's user reads the connection file and creates its IPC sockets.
        os.chown(runtime, uid, uid)
        os.chown(connection_file, uid, uid)
    _parent_death_signal()
    if spec["mode"] == "bwrap":
        _make_readable(Path(workdir))  # the kernel's user copies it in
        inside = f"{SCRATCH}/{os.path.basename(workdir) or 'work'}"
        cmd = _bwrap_command(spec, workdir, runtime)
        cmd += ["--", *_drop_privileges(uid), "/bin/sh", "-c", _START, inside, *kernel]
    else:
        env = dict(spec["env"])
        home = os.path.join(runtime, "home")
        env["HOME"], env["MPLCONFIGDIR"] = home, os.path.join(home, ".config", "matplotlib")
        os.makedirs(env["MPLCONFIGDIR"], exist_ok=True)
        if spec.get("seed"):
            shutil.copytree(spec["seed"], env["MPLCONFIGDIR"], dirs_exist_ok=True)
        if uid is not None:
            _chown_tree(Path(home), uid)
            _chown_tree(Path(workdir), uid)
        os.environ.clear()
        os.environ.update(env)
        cmd = [*_drop_privileges(uid), *kernel]
    _set_limits(spec["limits"], uid is not None)
    if debug:
        print(shlex.join(cmd), file=sys.stderr)
    _only_std_fds(runtime, debug)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
