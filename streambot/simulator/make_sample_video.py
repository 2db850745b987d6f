"""Regenerate ``sample-video.webm``, the demo's first file: ``python -m streambot.simulator.make_sample_video``.

The demo's first watch link is what a newcomer opens first, so it must be a real video that
plays in every browser, yet small enough to commit and ship in the wheel. This script is how the
committed file was made (and how to remake it): ffmpeg's built-in test pattern and a tone, VP9
and Opus in WebM (Chromium, Firefox and Safari 14.1+ play it), 8 s at 320x180, about 100 KB.
ffmpeg is needed only to run this script, never at run time: the demo serves the committed file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

OUTPUT = Path(__file__).with_name("sample-video.webm")
SECONDS = 8

COMMAND = [
    "-v", "error", "-y",
    "-f", "lavfi", "-i", f"testsrc2=duration={SECONDS}:size=320x180:rate=15",
    "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}",
    "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "45", "-row-mt", "1", "-deadline", "good",
    "-c:a", "libopus", "-b:a", "24k",
    "-shortest",
    # Fixed metadata, so the same ffmpeg makes the same bytes (no encoder date in the file).
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
]  # fmt: skip


def main(out: Path = OUTPUT) -> int:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("make_sample_video: needs ffmpeg (apt-get install ffmpeg)", file=sys.stderr)
        return 1
    subprocess.run([ffmpeg, *COMMAND, str(out)], check=True)
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
