"""External programs the tests start: redis-server, cedar-agent, the
`kest` CLI, the Rust relay, the reference's Python. Each is found through
its environment variable (set by scripts/test-python) or the usual
places; a missing one is a test failure, never a skip."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _executable(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def binary(env, name, *candidates, hint):
    """The program named by `$env`, else a candidate, else `name` on PATH; fails when absent."""
    value = os.environ.get(env)
    if value:
        assert _executable(value), f"{env}={value} is not an executable file ({hint})"
        return value
    for c in candidates:
        if _executable(c):
            return str(c)
    found = shutil.which(name)
    assert found, f"{name} is missing: set {env} ({hint})"
    return found


def target_dirs():
    dirs = [os.environ.get("CARGO_TARGET_DIR"), "/root/.cache/kest-rs/target-py", "/root/.cache/kest-rs/target"]
    return [Path(d) for d in dirs if d]


def kest_cli():
    return binary(
        "KEST_CLI",
        "kest",
        *[d / p / "kest" for d in target_dirs() for p in ("debug", "release")],
        hint="scripts/test-python builds it",
    )


def kest_relay():
    return binary(
        "KEST_RELAY",
        "kest-relay",
        *[d / p / "kest-relay" for d in target_dirs() for p in ("debug", "release")],
        hint="cargo build -p kest-multi-hop --bin kest-relay; scripts/test-python builds it",
    )


def redis_server():
    return binary("KEST_REDIS_SERVER", "redis-server", hint="./scripts/test installs redis-server")


def cedar_agent():
    return binary(
        "KEST_CEDAR_AGENT",
        "cedar-agent",
        Path.home() / ".cache/kest-rs/cedar-agent/bin/cedar-agent",
        hint="source scripts/lib/cedar-agent.sh && ensure_cedar_agent",
    )


def reference_python():
    return binary(
        "KEST_REF_PYTHON",
        "python-kest-ref",
        Path.home() / ".cache/kest-rs/venv-ref/bin/python",
        hint="a venv with kest==0.3.0.post1",
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, seconds=30.0, proc=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start in {seconds} s")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def resp(port, *args):
    """One Redis command over a raw socket (RESP), independent of kest_rs."""
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(out)
        f = s.makefile("rb")
        line = f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind == b"-":
            raise AssertionError(rest.decode())
        if kind == b":":
            return int(rest)
        return rest.decode()
