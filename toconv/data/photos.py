"""The real photographs shipped inside the package (``toconv/photos``, credits in its README)."""

from __future__ import annotations

from pathlib import Path

#: Folder of the packaged photos (their credits are in ``PHOTOS_DIR.parent / "README.md"``).
PHOTOS_DIR = Path(__file__).resolve().parents[1] / "photos" / "images"


def packaged_photos() -> Path:
    """The folder of the 160 packaged photos (336×336 JPEGs, public domain / CC licences).

    Raises:
        FileNotFoundError: toconv was installed without them (one line that says what to pass).
    """
    if not any(PHOTOS_DIR.glob("*.jpg")):
        raise FileNotFoundError(
            f"the packaged photos are not installed (expected JPEGs in {PHOTOS_DIR}); "
            f"pass a folder of images instead (data.imagenet_root=FOLDER, --images FOLDER)"
        )
    return PHOTOS_DIR
