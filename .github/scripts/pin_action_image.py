"""Point action.yml's `runs.image` at a pushed image by digest, for a release commit.

    python3 .github/scripts/pin_action_image.py action.yml ghcr.io/OWNER/REPO sha256:HEX

On main, `runs.image: Dockerfile` builds the image from the checkout (what development wants). A
release rewrites that one line to `docker://IMAGE@sha256:...`, so a workflow pinned to the release
runs exactly the bytes that were built, pushed and attested; a tag there would let the image change
under a pinned action. Only that line changes: comments and layout of the file stay as they are.
Standard library only: it runs on the bare GitHub runner.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

IMAGE_LINE = re.compile(r"^(?P<indent>[ \t]+)image:[ \t]*(?P<value>\S.*?)[ \t]*$", re.MULTILINE)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# registry/owner/name in lower case (GHCR refuses upper case), no tag and no digest of its own
IMAGE_NAME = re.compile(r"^[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")


class PinError(ValueError):
    """The arguments or action.yml are not what a release can pin."""


def pin(text: str, image: str, digest: str) -> str:
    """Return action.yml ``text`` with its ``runs.image`` set to ``docker://image@digest``."""
    if not DIGEST.match(digest):
        raise PinError(f"digest {digest!r} is not sha256:<64 lower-case hex digits>")
    if not IMAGE_NAME.match(image):
        raise PinError(f"image {image!r} is not REGISTRY/OWNER/NAME in lower case, without tag or digest")
    runs = re.search(r"^runs:[ \t]*$", text, flags=re.MULTILINE)
    if runs is None:
        raise PinError("action.yml has no top-level 'runs:' section")
    section_end = re.search(r"^\S", text[runs.end() :], flags=re.MULTILINE)
    end = runs.end() + section_end.start() if section_end else len(text)
    matches = list(IMAGE_LINE.finditer(text, runs.end(), end))
    if len(matches) != 1:
        raise PinError(f"expected one 'image:' line under 'runs:', found {len(matches)}")
    line = matches[0]
    return f"{text[: line.start()]}{line['indent']}image: docker://{image}@{digest}{text[line.end() :]}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: pin_action_image.py ACTION_YML IMAGE sha256:DIGEST", file=sys.stderr)
        return 2
    path, image, digest = Path(argv[0]), argv[1], argv[2]
    try:
        path.write_text(pin(path.read_text(encoding="utf-8"), image, digest), encoding="utf-8")
    except (PinError, OSError) as exc:
        print(f"pin_action_image: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: runs.image = docker://{image}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
