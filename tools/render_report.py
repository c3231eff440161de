#!/usr/bin/env python3
"""Render a NegPatch HTML audit report to a PNG with headless Chromium.

    python tools/render_report.py report.html [-o report.png] [--width 1240] [--height 0]

Needs Debian's ``chromium`` package (``apt-get install chromium``).  With ``--height 0``
(the default) the page is first measured at the given width so the whole report fits; the
page loads nothing, so no network is needed.  Prints the
PNG's path, size in pixels and bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("render_report: chromium not found (apt-get install chromium)")


def measure_height(chromium: str, html_path: str, width: int, profile: str) -> int:
    """The page's height in CSS pixels at ``width``: a temporary copy of the page with a
    one-line script that records ``scrollHeight`` is loaded with ``--dump-dom`` (the report
    itself stays script-free)."""
    html = open(html_path, encoding="utf-8").read()
    probe = ("<script>document.body.setAttribute('data-measured-height',"
             " String(document.documentElement.scrollHeight));</script>")
    html = html.replace("</body>", probe + "</body>", 1)
    folder = os.path.dirname(os.path.abspath(html_path))
    fd, temp = tempfile.mkstemp(suffix=".html", prefix=".measure-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               f"--window-size={width},800", "--dump-dom", "file://" + temp]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(temp)
    found = re.search(r'data-measured-height="(\d+)"', result.stdout)
    if not found:
        sys.exit(f"render_report: could not measure the page ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def png_size(path: str):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    return struct.unpack(">II", head[16:24])


def render(html_path: str, png_path: str, width: int, height: int) -> int:
    """Screenshots the page; returns the height used."""
    chromium = find_chromium()
    with tempfile.TemporaryDirectory() as profile:
        if height <= 0:
            height = measure_height(chromium, html_path, width, profile)
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               f"--screenshot={os.path.abspath(png_path)}", f"--window-size={width},{height}",
               "file://" + os.path.abspath(html_path)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not os.path.exists(png_path):
        sys.exit(f"render_report: chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return height


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html")
    parser.add_argument("-o", "--output", help="PNG to write (default: the HTML's name with .png)")
    parser.add_argument("--width", type=int, default=1240)
    parser.add_argument("--height", type=int, default=0, help="0: fit the whole page (measured)")
    args = parser.parse_args(argv)
    out = args.output or os.path.splitext(args.html)[0] + ".png"
    render(args.html, out, args.width, args.height)
    w, h = png_size(out)
    print(f"{out}: {w}x{h} pixels, {os.path.getsize(out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
