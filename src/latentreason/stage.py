"""Stages with contracts: each artifact directory is built by one stage that never mixes, never loses.

A stage declares its ``kind``, the ``config`` that determines it and its ``inputs`` (digests of the
artifacts it reads, model fingerprints, seed). :func:`open_stage` locks the directory and compares
with what is there:

- nothing there → a new stage: the manifest is written at once with status ``running``;
- the same kind, config and inputs → ``reuse`` (complete) or ``resume`` (running);
- different → refused with the differing keys (dotted paths, old → new) and the fix (``--force``,
  or another ``--out``); with ``force=True`` only the files that artifact's stage wrote are removed;
- another kind of artifact, or files that are no artifact → refused, never touched.

The stage ends with :meth:`Stage.complete`, which lists the files it wrote with their hashes.
Readers refuse an artifact whose manifest is still ``running`` (``Manifest.read``).

Every output directory is locked while written (:func:`locked`): a second writer fails at once and
is told who holds the lock (pid, command, since when); a lock whose process died is taken over.

Example:
    >>> with open_stage(tmp / "rollouts", "rollouts", {"n": 8}, {"seed": 0}, owns=["rollouts.jsonl"]) as st:  # doctest: +SKIP
    ...     if st.state != "reuse":
    ...         write_jsonl(st.path("rollouts.jsonl"), rows)
    ...         st.complete(["rollouts.jsonl"])
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentreason.io import sha256_bytes, sha256_file
from latentreason.manifest import COMPLETE, MANIFEST_NAME, RUNNING, Manifest
from latentreason.rundir import RunDir

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
RUN_KIND = "run"
NEW, RESUME, REUSE = "new", "resume", "reuse"
_ABSENT = "(absent)"


class StageMismatch(ValueError):
    """An artifact of the same kind is there, made with another config or from other inputs."""


class WrongArtifact(ValueError):
    """The directory holds another kind of artifact (never replaced, not even with --force)."""


class ForeignDirectory(ValueError):
    """The directory holds files that are no artifact of this project (never touched)."""


class DirectoryLocked(ValueError):
    """Another live process is writing into the directory."""


# ------------------------------------------------------------------ differences


def canonical(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples become lists, paths strings), so configs compare as stored."""
    return json.loads(json.dumps(obj, default=str))


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted.path, old, new)`` for every leaf where two JSON-like values differ; absent keys show as ``(absent)``.

    Example:
        >>> differences({"config": {"site": "resid_post.1", "k": 3}}, {"config": {"site": "resid_post.0", "k": 3}})
        [('config.site', 'resid_post.1', 'resid_post.0')]
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append((path, _ABSENT, new[k]))
            elif k not in new:
                out.append((path, old[k], _ABSENT))
            else:
                out += differences(old[k], new[k], path)
        return out
    return [] if old == new else [(prefix, old, new)]


def _show(v: Any) -> str:
    if v == _ABSENT:
        return v
    if isinstance(v, str) and len(v) >= 32 and all(c in "0123456789abcdef" for c in v):
        return repr(v[:12] + "…")  # a digest: its head is enough to tell two apart
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    """``config.site: 'resid_post.1' → 'resid_post.0'; …`` for an error message."""
    shown = [f"{p}: {_show(a)} → {_show(b)}" for p, a, b in diffs[:limit]]
    if len(diffs) > limit:
        shown.append(f"and {len(diffs) - limit} more")
    return "; ".join(shown)


# ------------------------------------------------------------------ locks

_held: dict[str, list[Any]] = {}  # realpath -> [fd, depth]: a process re-entering its own lock does not block itself


def _holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _acquire(path: Path) -> int:
    import fcntl

    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel drops it when its process dies: no stale locks
        except BlockingIOError:
            h = _holder(fd)
            os.close(fd)
            raise DirectoryLocked(
                f"{path.parent} is being written by another process (pid {h.get('pid', '?')}, command {h.get('command', '?')!r}, "
                f"since {h.get('since', '?')}). Wait for it to finish, or choose another --out."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # a releasing holder unlinks the file: lock the one on disk
        except FileNotFoundError:
            same = False
        if same:
            info = {"pid": os.getpid(), "command": " ".join(sys.argv) or sys.executable, "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "host": socket.gethostname()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            return fd
        os.close(fd)
    raise DirectoryLocked(f"Could not lock {path.parent}: its lock file keeps changing. Is another process starting there? Retry, or choose another --out.")


@contextmanager
def locked(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of ``directory`` (created if missing) for the ``with`` block.

    A second process fails at once with :class:`DirectoryLocked`, naming the holder; the same
    process may re-enter. The lock file (``.lock``) is removed on release.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"{d} is a file, not a directory; choose another --out.")
    d.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(d)
    if key in _held:
        _held[key][1] += 1
        try:
            yield d
        finally:
            _held[key][1] -= 1
        return
    path = d / LOCK_NAME
    fd = _acquire(path)
    _held[key] = [fd, 1]
    try:
        yield d
    finally:
        del _held[key]
        try:
            path.unlink(missing_ok=True)  # unlink while still holding it: a waiter re-checks the inode
        finally:
            os.close(fd)


# ------------------------------------------------------------------ stages


def _visible_files(d: Path) -> list[str]:
    """Names of the plain files in ``d`` a stage could collide with (hidden names are our locks and temp files)."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and not p.is_dir()) if d.is_dir() else []


def _owned(d: Path, man: Manifest) -> list[Path]:
    """The files the stage of ``man`` wrote: those listed; for an unfinished stage also those matching its ``owns`` patterns."""
    names = set(man.files)
    if man.status != COMPLETE:
        names |= {n for n in _visible_files(d) if any(fnmatch.fnmatchcase(n, pat) for pat in man.owns) and n != MANIFEST_NAME}
    out = [d / n for n in sorted(names) if "/" not in n and n != MANIFEST_NAME]
    out += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and any(p.name.startswith(f".{n}.") for n in [*names, MANIFEST_NAME])] if d.is_dir() else []
    return out


def _remove_own_files(d: Path, man: Manifest) -> None:
    for p in _owned(d, man):
        p.unlink(missing_ok=True)
    (d / MANIFEST_NAME).unlink(missing_ok=True)


@dataclass
class Stage:
    """One artifact directory being built. ``state`` is ``"new"``, ``"resume"`` or ``"reuse"``."""

    directory: Path
    kind: str
    config: dict[str, Any]
    inputs: dict[str, Any]
    owns: tuple[str, ...]
    state: str
    manifest: Manifest | None = None  # what was there (reuse / resume); the completed one after complete()

    def path(self, name: str) -> Path:
        return self.directory / name

    def _write_running(self) -> None:
        Manifest(kind=self.kind, config=self.config, inputs=self.inputs, status=RUNNING, owns=list(self.owns)).write(self.directory)

    def restart(self) -> None:
        """Drop what this stage wrote before (it is ours) and start it again: for writers handed new content."""
        if self.manifest is not None:
            _remove_own_files(self.directory, self.manifest)
        self.manifest, self.state = None, NEW
        self._write_running()

    def complete(self, files: Iterable[str] | Mapping[str, str], *, models: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Manifest:
        """Finish the stage: hash ``files`` (names in the directory, or ``{name: sha256}``) and write the complete manifest."""
        if isinstance(files, Mapping):
            hashes = dict(files)
        else:
            hashes = {}
            for n in files:
                p = self.directory / n
                if not p.is_file():
                    raise FileNotFoundError(f"Stage {self.kind} lists {p}, which it never wrote.")
                hashes[n] = sha256_file(p)
        self.manifest = Manifest(kind=self.kind, config=self.config, models=canonical(dict(models or {})), files=hashes, extra=canonical(dict(extra or {})), status=COMPLETE, inputs=self.inputs, owns=list(self.owns))
        self.manifest.write(self.directory)
        self.state = REUSE
        return self.manifest


def _inspect(d: Path, kind: str, config: dict[str, Any], inputs: dict[str, Any], force: bool) -> tuple[str, Manifest | None]:
    if (d / MANIFEST_NAME).exists():
        man = Manifest.read(d, allow_running=True)
        if man.kind != kind:
            raise WrongArtifact(f"{d} holds a {man.kind!r} artifact, not {kind!r}; it is never replaced by another kind. Choose another --out (e.g. {d.parent / kind}).")
        diffs = differences({"config": man.config, "inputs": man.inputs}, {"config": config, "inputs": inputs})
        if diffs:
            if not force:
                raise StageMismatch(
                    f"{d} already holds a {kind} artifact made with other settings: {describe(diffs)}. "
                    "Rebuild it with --force (force=True; removes only the files its stage wrote), or choose another --out."
                )
            log.info("replacing %s (%s)", d, describe(diffs))
            _remove_own_files(d, man)
            return NEW, None
        return (REUSE if man.status == COMPLETE else RESUME), man
    others = _visible_files(d)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ForeignDirectory(f"{d} is not empty and holds no latentreason artifact ({shown}); nothing there is touched. Choose an empty or new --out.")
    return NEW, None


@contextmanager
def open_stage(directory: str | os.PathLike, kind: str, config: Mapping[str, Any], inputs: Mapping[str, Any] | None = None, *, owns: Iterable[str], force: bool = False) -> Iterator[Stage]:
    """Lock ``directory`` and start, resume or reuse the ``kind`` stage there (see the module docstring).

    ``owns`` are glob patterns of the files the stage may write (what ``force`` removes of an
    unfinished run; a finished one removes exactly the files it listed).
    """
    d = Path(directory)
    cfg, inp = canonical(dict(config)), canonical(dict(inputs or {}))
    with locked(d):
        state, man = _inspect(d, kind, cfg, inp, force)
        st = Stage(d, kind, cfg, inp, tuple(owns), state, man)
        if state == NEW:
            st._write_running()
        yield st


def artifact_digest(directory: str | os.PathLike) -> str:
    """What an input artifact is: its manifest's :meth:`Manifest.digest` (finished artifacts only), else the hashes of its files."""
    d = Path(directory)
    if (d / MANIFEST_NAME).exists():
        return Manifest.read(d).digest()
    if not d.is_dir():
        raise FileNotFoundError(f"No artifact at {d}.")
    return sha256_bytes(json.dumps({n: sha256_file(d / n) for n in _visible_files(d)}, sort_keys=True).encode())


def copy_artifact(source: str | os.PathLike, dest: str | os.PathLike, kind: str, names: Iterable[str], *, force: bool = False) -> Path:
    """Copy a user's artifact (its files ``names``) into ``dest`` as a ``kind`` stage; never deletes or edits ``source``.

    The copy's config is the source's content hash: copying the same content again reuses it;
    another artifact already at ``dest`` is refused unless ``force``.
    """
    src, dst = Path(source), Path(dest)
    if src.resolve() == dst.resolve():
        return dst
    names = sorted(names)
    content = {n: sha256_file(src / n) for n in names}
    models: dict[str, Any] = {}
    if (src / MANIFEST_NAME).exists():
        models = Manifest.read(src).models
    with open_stage(dst, kind, {"copied": True, "content": sha256_bytes(json.dumps(content, sort_keys=True).encode())}, owns=names, force=force) as st:
        if st.state == REUSE:
            return dst
        if st.state == RESUME:
            st.restart()
        from latentreason.io import atomic_write

        for n in names:
            atomic_write(dst / n, lambda p, n=n: shutil.copyfile(src / n, p))
        st.complete(content, models=models, extra={"copied_from": str(src)})
    return dst


def remove_artifact(directory: str | os.PathLike, kind: str) -> bool:
    """Remove the ``kind`` artifact in ``directory`` (only the files its stage wrote, then the folder if left empty).

    Returns False, touching nothing, when the directory holds no manifest of that kind.
    """
    d = Path(directory)
    if not (d / MANIFEST_NAME).is_file():
        return False
    try:
        man = Manifest.read(d, allow_running=True)
    except ValueError:
        return False
    if man.kind != kind:
        log.warning("%s holds a %r artifact, not %r: left alone", d, man.kind, kind)
        return False
    with locked(d):
        _remove_own_files(d, man)
    try:
        d.rmdir()
    except OSError:  # something that is not ours is still there
        log.warning("%s kept: it holds files its stage did not write", d)
    return True


# ------------------------------------------------------------------ runs


@contextmanager
def open_run(root: str | os.PathLike, *, fresh: bool = False) -> Iterator[RunDir]:
    """Lock a run directory and check it is one (its manifest has kind ``"run"``); a new or empty folder becomes one.

    A folder without a run manifest is adopted only when it holds nothing but a run's children
    (``rollouts/``, ``vectors/``, ...). ``fresh=True`` removes every stage of the run (only the
    files each stage wrote, only where the manifest has the expected kind) before the block.
    """
    rd = RunDir(root)
    with locked(rd.root):
        if rd.manifest.exists():
            man = Manifest.read(rd.root, allow_running=True)
            if man.kind != RUN_KIND:
                raise WrongArtifact(f"{rd.root} holds a {man.kind!r} artifact, not a run directory. Give the run's folder (its parent?) or another --out.")
        else:
            foreign = sorted(p.name for p in rd.root.iterdir() if not p.name.startswith(".") and p.name not in rd.children())
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise ForeignDirectory(
                    f"{rd.root} is not a latentreason run: it holds {shown}. Nothing there is touched; choose a new or empty --out."
                )
            Manifest(kind=RUN_KIND, owns=[rd.report.name]).write(rd.root)
        if fresh:
            clear_run(rd)
        yield rd


def clear_run(rd: RunDir) -> None:
    """Remove every stage of a run: only directories whose manifest has the expected kind, only the files their stages wrote."""
    man = Manifest.read(rd.root, kind=RUN_KIND, allow_running=True)
    for d, kind in rd.stages().items():
        if remove_artifact(d, kind):
            log.info("removed %s", d)
    for name in man.files:
        (rd.root / name).unlink(missing_ok=True)
    for d in (rd.recovery / "points", rd.recovery, rd.figures):
        try:
            d.rmdir()
        except OSError:
            pass
    Manifest(kind=RUN_KIND, owns=man.owns).write(rd.root)


def claim_run_file(root: str | os.PathLike, name: str) -> Path:
    """Check the run may write ``name`` (absent, or written by the run before); returns its path."""
    rd = RunDir(root)
    p = rd.root / name
    if p.exists():
        files = Manifest.read(rd.root, kind=RUN_KIND).files if rd.manifest.exists() else {}
        if name not in files:
            raise ForeignDirectory(f"{p} exists and was not written by this run; it is never overwritten. Move it away, or choose another --out.")
    return p


def record_run_file(root: str | os.PathLike, name: str) -> None:
    """List a file the run wrote at its root (e.g. ``report.html``) in the run manifest, so ``--fresh`` may remove it."""
    rd = RunDir(root)
    with locked(rd.root):
        man = Manifest.read(rd.root, kind=RUN_KIND) if rd.manifest.exists() else Manifest(kind=RUN_KIND, owns=[rd.report.name])
        Manifest(kind=RUN_KIND, files={**man.files, name: sha256_file(rd.root / name)}, owns=man.owns).write(rd.root)
