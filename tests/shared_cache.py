"""The shared session fixtures (the trained runs and bundles of conftest.py) kept on disk between pytest sessions of
the same code: `make test` builds them and `make test-slow` (a second pytest process, as CI runs it) or a rerun finds
them built, instead of training and exporting them again.

A build is reused only by code that would build the same thing: the cache's key is a hash of the package's files, the
builders' files in tests/, every installed distribution's version, the Python, the CPU model and the environment that
changes numbers (thread count, the instruction sets oneDNN and ATen may use). Anything else builds afresh. A fixture
is built in place, in its own folder, and counts as built only once its marker is written after the build: an
interrupted build is removed and made again. `KVASIR_TEST_CACHE=off` builds every fixture in the session's own
temporary folder (tools/breakit.py sets it: a mutated package is never reused)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# the files that decide what a shared fixture holds, besides the package itself
BUILDER_FILES = ("conftest.py", "fitflags.py", "shared_cache.py")
# environment variables that change the numbers a training or an export gives
NUMERIC_ENVIRONMENT = ("OMP_NUM_THREADS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "KVASIR_TEST_GPU")
KEEP = 2  # builds of other code kept beside the current one (two checkouts of one folder in turn)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def cache_key(package: Path) -> str:
    """A hash of everything that decides what the shared fixtures hold (module docstring)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in BUILDER_FILES:
        digest.update((TESTS / name).read_bytes())
    versions = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    digest.update("\n".join(versions).encode())
    digest.update(f"{sys.version}\n{sys.executable}\n{platform.machine()}\n{cpu_model()}".encode())
    digest.update("\n".join(f"{k}={os.environ.get(k, '')}" for k in NUMERIC_ENVIRONMENT).encode())
    return digest.hexdigest()[:16]


def in_use(folder: Path) -> bool:
    """Whether a session holds one of the folder's locks (it is building or waiting for a fixture there)."""
    for path in folder.glob("*.lock"):
        with open(path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False


def drop(folder: Path) -> None:
    """Remove a build of other code unless a session is using it: renamed aside first, so that no marker can
    outlive a half-removed fixture."""
    if in_use(folder):
        return
    aside = folder.with_name(f".{folder.name}.removing")
    try:
        folder.rename(aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


class SharedCache:
    """Where the shared fixtures are built and found (configured once per session)."""

    folder: Path | None = None

    def configure(self, rootdir: Path, session_temp: Path) -> None:
        if os.environ.get("KVASIR_TEST_CACHE") == "off":
            self.folder = session_temp
        else:
            import kvasir_mobileone

            key = cache_key(Path(kvasir_mobileone.__file__).parent)
            self.folder = rootdir / ".pytest_cache" / "kvasir-shared" / key
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.folder != session_temp:
            os.utime(self.folder)  # last used now: the builds of other code are dropped oldest-used first
            for left in self.folder.parent.glob(".*.removing"):  # a removal that was interrupted
                shutil.rmtree(left, ignore_errors=True)
            others = [p for p in self.folder.parent.iterdir() if p != self.folder and not p.name.startswith(".")]
            for stale in sorted(others, key=lambda p: p.stat().st_mtime)[:-KEEP]:
                drop(stale)

    def get(self, name: str, build: Callable[[Path], Path]) -> Path:
        """The fixture `name`: built by `build(folder)` (which returns its path inside folder) unless already built."""
        assert self.folder is not None, "SharedCache.configure runs in pytest_configure"
        home, done = self.folder / name, self.folder / f"{name}.done"
        with open(self.folder / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same fixture: wait for it
            if done.is_file():
                return home / done.read_text()
            shutil.rmtree(home, ignore_errors=True)  # an interrupted build
            home.mkdir(parents=True)
            built = Path(build(home))
            marker = done.with_suffix(".partial")
            marker.write_text(str(built.relative_to(home)))
            marker.replace(done)  # the marker whole or not at all
        return built
