"""Files a simulated world is seeded with: disk files, ``--synthetic SIZE[:NAME]`` files, the sample set.

Shared by the in-process demo and the standalone wire simulator, so both post the same bytes under
the same names (and the benchmarks can write an identical local copy for comparison).
"""

from __future__ import annotations

import mimetypes
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streambot.simulator.content import Content, DiskContent, SyntheticContent
from streambot.simulator.telegram import SimFile, SimulatedTelegram
from streambot.simulator.world import kind_for
from streambot.units import parse_size

__all__ = ["SAMPLE_FILES", "SyntheticFile", "add_content", "disk_file", "parse_size", "seed_files"]

SAMPLE_FILES = (
    ("sample-video.mp4", "video/mp4", 24 * 1024 * 1024 + 12345),
    ("sample-archive.zip", "application/zip", 3 * 1024 * 1024),
    ("sample-notes.txt", "text/plain", 4096 + 17),
)


@dataclass(frozen=True, slots=True)
class SyntheticFile:
    """A ``--synthetic SIZE[:NAME]`` file: deterministic bytes of any size, nothing allocated.

    The seed comes from the name, so a name always has the same bytes in every run; the
    benchmarks rely on that to write an identical local copy for comparison.
    """

    size: int
    name: str

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode())

    @classmethod
    def parse(cls, text: str) -> SyntheticFile:
        size_text, _, name = text.partition(":")
        size = parse_size(size_text)
        if size < 1:
            raise ValueError("a synthetic file needs at least one byte")
        name = name.strip() or f"synthetic-{size}.bin"
        if "/" in name or "\x00" in name:
            raise ValueError(f"not a file name: {name!r}")
        return cls(size, name)


def add_content(
    telegram: SimulatedTelegram, content: Content, name: str, *, dc_id: int | None = None
) -> SimFile:
    """Register bytes with the simulator under ``name`` (MIME type and media kind from the name)."""
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return telegram.add_file(content, name=name, mime_type=mime, kind=kind_for(mime), dc_id=dc_id)


def disk_file(
    telegram: SimulatedTelegram, content: DiskContent, *, dc_id: int | None = None
) -> SimFile:
    """Register a disk file with the simulator; its bytes are read later, per request."""
    return add_content(telegram, content, content.path.name, dc_id=dc_id)


def seed_files(
    telegram: SimulatedTelegram,
    paths: Sequence[Path],
    synthetic: Sequence[SyntheticFile] = (),
    *,
    dc_id: int | None = None,
) -> list[tuple[Path | None, SimFile]]:
    """PATHs, then synthetic files; the sample set (seeds 1, 2, 3) only when neither was given."""
    files: list[tuple[Path | None, SimFile]] = [
        (p, disk_file(telegram, DiskContent.of(p), dc_id=dc_id)) for p in paths
    ]
    for spec in synthetic:
        content = SyntheticContent(spec.size, spec.seed)
        files.append((None, add_content(telegram, content, spec.name, dc_id=dc_id)))
    if not files:
        for seed, (name, mime, size) in enumerate(SAMPLE_FILES, 1):
            f = telegram.add_file(
                SyntheticContent(size, seed),
                name=name,
                mime_type=mime,
                kind=kind_for(mime),
                dc_id=dc_id,
            )
            files.append((None, f))
    return files
