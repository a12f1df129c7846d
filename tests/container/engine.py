"""A private Docker engine for the container tests, where no registry is reachable.

Started in the background with its own data root, exec root and socket, no
bridge and no iptables (host networking everywhere); stopped at the end,
with the ``netns/default`` mount it leaves in its exec root unmounted. The
data root is cached between runs on the same machine (base image and build
layers), guarded by a lock so that two runs never share it at once. The
base image is imported from a Debian root filesystem that
``scripts/base-rootfs`` makes (cached too).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SUSEE_CI_CACHE", "/var/cache/susee-ci"))
BASE_IMAGE = "localhost/susee-base"
VENV_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_WITHIN_S = 60.0
LOCK_WITHIN_S = 600.0  # another run's container tests take a few minutes
STOP_WITHIN_S = 30.0
COMMAND_TIMEOUT_S = 900.0  # a first build downloads the Python dependencies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def engine_problem() -> str | None:
    """Why no container engine can run here, or None."""
    if os.geteuid() != 0:
        return "the container tests start their own dockerd: they need root"
    missing = [tool for tool in ("dockerd", "docker-compose") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: docker.io, docker-compose; .ci/run installs them)"
    if cli() is None:
        return "no docker command line"
    if not (CACHE / "rootfs-bookworm.done").exists() and shutil.which("debootstrap") is None:
        return "no cached base root filesystem and no debootstrap to make one"
    return None


def cli() -> str | None:
    """Debian's docker CLI, made for its dockerd; another one on PATH otherwise."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")


class Engine:
    """One dockerd of our own; ``docker()`` and ``compose()`` talk only to it."""

    def __init__(self) -> None:
        self.cli = cli()
        self.data_root = CACHE / "docker"
        self.exec_root = Path(tempfile.mkdtemp(prefix="sdk", dir="/tmp"))  # short: socket paths are limited
        self.host = f"unix://{self.exec_root}/docker.sock"
        self.base_image = BASE_IMAGE
        self._lock = None
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.data_root.mkdir(exist_ok=True)
        log = open(self.exec_root / "dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        self._process = subprocess.Popen(
            ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root / "exec"),
             "-H", self.host, "--pidfile", str(self.exec_root / "docker.pid"),
             "--storage-driver", "overlay2", "--bridge", "none", "--iptables=false", "--ip6tables=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_WITHIN_S
        while self.docker("info", check=False).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{self.daemon_log()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # only the dockerd this run started
            try:
                self._process.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        netns = self.exec_root / "exec" / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], check=False, capture_output=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()

    def ensure_base_image(self) -> None:
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        rootfs = CACHE / "rootfs-bookworm"
        subprocess.run([str(ROOT / "scripts" / "base-rootfs"), str(rootfs)], check=True, timeout=COMMAND_TIMEOUT_S)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([self.cli, "-H", self.host, "import", "--change", f"ENV PATH={VENV_PATH}", "-", BASE_IMAGE],
                       stdin=tar.stdout, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)
        tar.stdout.close()
        assert tar.wait() == 0

    def build(self, tag: str) -> None:
        self.ensure_base_image()
        self.docker("build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}", "-t", tag, str(ROOT))

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([self.cli, "-H", self.host, *args], check)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(["docker-compose", *args], check, env=os.environ | {"DOCKER_HOST": self.host})

    def logs(self, container: str) -> str:
        result = self.docker("logs", container, check=False)
        return result.stdout + result.stderr

    def daemon_log(self) -> str:
        path = self.exec_root / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _run(self, command: list[str], check: bool, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def _take_lock(self) -> None:
        self._lock = open(CACHE / "docker.lock", "w")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + LOCK_WITHIN_S
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{CACHE / 'docker'} stayed in use by another run for {LOCK_WITHIN_S} s")
                time.sleep(1)
