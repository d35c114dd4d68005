"""Where finished turns live: ``<output_dir>/<id>/``, random ids, a time to live, nothing half-written.

A full or read-only disk is named (``StorageFullError``, 503 ``storage_full``) rather than a 500, and
below a free-space floor the oldest results are removed first, as past the disk quota.

A turn renders into ``<output_dir>/.staging/<replica>/<id>/`` and is renamed into place only when it
succeeded, so a result folder is always complete and a failed or cancelled turn leaves nothing a client
can see. While it runs, its video segments are served from there (from any replica sharing the
folder). Each replica stages in its own folder and removes its own leftovers at start-up; a crashed
replica's are swept once they are older than the time to live. Ids come from users, so they are
matched against the shape ``new_turn_id`` makes before they touch the file system.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from avatar.errors import NotFoundError, StorageFullError, storage_faults
from avatar.pipeline.files import AUDIO_NAME, SEGMENTS_DIR, SUMMARY_NAME, VIDEO_NAME, segment_name
from avatar.pipeline.pipeline import new_turn_id

log = structlog.stdlib.get_logger(__name__)

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
STAGING = ".staging"
OWNER_FILE = ".owner"
MAX_SEGMENTS = 10_000

DOWNLOADS: dict[str, tuple[str, str]] = {
    "video.mp4": (VIDEO_NAME, "video/mp4"),
    "audio.wav": (AUDIO_NAME, "audio/wav"),
}
"""Public file name → (file in the result folder, media type)."""


class ResultStore:
    """Result folders under ``root``, each removed ``ttl_seconds`` after it was written, and the oldest
    removed first while all of them together hold more than ``max_bytes`` (when given)."""

    def __init__(
        self,
        root: Path,
        ttl_seconds: float,
        *,
        replica: str = "local",
        clock: Callable[[], float] = time.time,
        max_bytes: int | None = None,
        min_free_bytes: int = 0,
    ) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.ttl = ttl_seconds
        self.clock = clock
        self.staging = root / STAGING / replica
        self.max_bytes = max_bytes
        self.used_bytes = 0  # the results' size at the last sweep, plus what was published since
        self.wake_sweeper: Callable[[], None] = lambda: None  # set by the app: sweep now, not at the next tick

    def open(self) -> None:
        """Create the folders and drop what this replica left half-written when it last stopped."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def reserve(self, result_id: str | None = None, owner: str | None = None) -> Iterator[Path]:
        """A fresh folder to render a result into. It is published under its id (the folder's name)
        when the block succeeds and removed when it raises or is cancelled. ``owner``: the id of the
        API key whose result it is (its summary is shown to that key only)."""
        work = self.staging / (result_id or new_turn_id())
        try:
            with storage_faults("the output folder (AVATAR_OUTPUT_DIR)"):
                work.mkdir(parents=True)
                if owner is not None:
                    (work / OWNER_FILE).write_text(owner)
                yield work
                os.utime(work)  # the time to live counts from now
                os.replace(work, self.root / work.name)
            self._published(self.root / work.name)
        except StorageFullError:
            self.wake_sweeper()  # the oldest results go now, so that a retry finds room
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def free_bytes(self) -> int | None:
        """Free space on the output folder's disk for this process; 0 when the disk is mounted read-only
        (None when it cannot be read)."""
        try:
            disk = os.statvfs(self.root)
        except OSError:
            return None
        return 0 if disk.f_flag & os.ST_RDONLY else disk.f_bavail * disk.f_frsize

    def storage_problem(self) -> str | None:
        """Why results cannot be written now (for /readyz), or None: the disk has less free space than
        ``min_free_bytes`` (AVATAR_MIN_FREE_DISK_MB) or is read-only."""
        free = self.free_bytes()
        if free is None or (free >= self.min_free_bytes and free > 0):
            return None
        return (
            f"storage_full: the output folder's disk has {free / 2**20:.1f} MB free, under "
            f"AVATAR_MIN_FREE_DISK_MB={self.min_free_bytes / 2**20:g} (or is read-only)"
        )

    def folder(self, result_id: str) -> Path:
        """The folder of a live result; NotFoundError for a malformed, unknown or expired id."""
        if not ID_PATTERN.match(result_id):
            raise NotFoundError("No such result.")  # never reaches the file system
        folder = self.root / result_id
        try:
            written = folder.stat().st_mtime
        except FileNotFoundError:
            raise NotFoundError(f"No result {result_id}; results are kept {self.ttl:g} s.") from None
        if self.clock() - written > self.ttl:
            self._remove(folder)
            raise NotFoundError(f"Result {result_id} has expired; results are kept {self.ttl:g} s.")
        return folder

    def file(self, result_id: str, download: str) -> tuple[Path, str]:
        """(path, media type) of one of a result's downloads (``video.mp4``, ``audio.wav``)."""
        name, media_type = DOWNLOADS[download]
        path = self.folder(result_id) / name
        if not path.is_file():
            raise NotFoundError(f"Result {result_id} has no {download}.")
        return path, media_type

    def segment(self, result_id: str, index: int) -> Path:
        """A video segment of a result, published or still being made (on any replica)."""
        if not ID_PATTERN.match(result_id) or not 0 <= index < MAX_SEGMENTS:
            raise NotFoundError("No such segment.")
        name = segment_name(index)
        for folder in (self.root / result_id, *self.root.glob(f"{STAGING}/*/{result_id}")):
            path = folder / SEGMENTS_DIR / name
            if path.is_file():
                return path
        raise NotFoundError(f"Result {result_id} has no segment {index} (not yet made, or the turn is over).")

    def owner(self, result_id: str) -> str | None:
        """The id of the API key that made the result (None: made with keys off)."""
        try:
            return (self.folder(result_id) / OWNER_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    def summary(self, result_id: str) -> dict[str, Any]:
        path = self.folder(result_id) / SUMMARY_NAME
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFoundError(f"Result {result_id} has no summary.") from None

    def _published(self, folder: Path) -> None:
        self.used_bytes += _size(folder)
        if self.max_bytes is not None and self.used_bytes > self.max_bytes:
            self.wake_sweeper()

    def sweep(self) -> int:
        """Remove every expired result, then the oldest while the rest exceed the quota (blocking); the
        number removed. Only result folders count: staging and anything else under ``root`` (such as
        created personas, which have their own limit) are neither counted nor removed here."""
        expired = evicted = 0
        now = self.clock()
        live: list[tuple[float, int, Path]] = []  # (written, bytes, folder)
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not ID_PATTERN.match(folder.name):
                continue
            try:
                written = folder.stat().st_mtime
            except FileNotFoundError:
                continue
            if now - written > self.ttl:
                self._remove(folder)
                expired += 1
            else:
                live.append((written, _size(folder), folder))
        for folder in (self.root / STAGING).glob("*"):  # crashed replicas' leftovers
            try:
                stale = folder != self.staging and now - folder.stat().st_mtime > self.ttl
            except FileNotFoundError:
                continue
            if stale:
                self._remove(folder)
        total = sum(size for _, size, _ in live)
        short = self._short_of_space()
        if short > 0 or (self.max_bytes is not None and total > self.max_bytes):
            for _, size, folder in sorted(live):  # oldest first
                over_quota = self.max_bytes is not None and total > self.max_bytes
                if not over_quota and short <= 0:
                    break
                self._remove(folder)
                total -= size
                short -= size
                evicted += 1
        self.used_bytes = total
        if expired:
            log.info("results expired", removed=expired)
        if evicted:
            log.info("results removed over the disk quota", removed=evicted, kept_mb=round(total / 2**20, 1))
        return expired + evicted

    def _short_of_space(self) -> int:
        """Bytes missing from the free-space floor (0 or less: none)."""
        free = self.free_bytes()
        return 0 if free is None else self.min_free_bytes - free + (1 if free == 0 else 0)

    @staticmethod
    def _remove(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


def _size(folder: Path) -> int:
    """Bytes in a result folder's files (a result holds a few files, no subfolders)."""
    total = 0
    try:
        for entry in os.scandir(folder):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return total
