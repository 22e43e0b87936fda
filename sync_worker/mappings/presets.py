"""Presets: canonical stage models for common pipeline shapes, with matching source mappings.

Each preset is a folder of ``mappings/presets/`` (shipped inside the package): a ``canonical.yaml``
plus the source mappings that go with it. :func:`write_preset` copies one into a mappings
directory with the JSON schemas next to it, so ``sync-worker mappings validate`` and editors work
on the result; it refuses to overwrite files that are there unless ``overwrite``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sync_worker.errors import ConfigError
from sync_worker.mappings.loader import validate_directory

__all__ = ["PRESETS_DIR", "list_presets", "preset_dir", "write_preset"]

PRESETS_DIR = Path(__file__).resolve().parent.parent / "defaults" / "presets"
_SCHEMA_DIR = PRESETS_DIR.parent / "schema"


def list_presets() -> tuple[str, ...]:
    """The preset names, sorted."""
    return tuple(sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "canonical.yaml").is_file()))


def preset_dir(name: str) -> Path:
    """The shipped folder of preset ``name``; :class:`ConfigError` naming the choices otherwise."""
    if name not in list_presets():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}")
    return PRESETS_DIR / name


def write_preset(name: str, directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write preset ``name`` into ``directory`` (created when missing); the files written.

    The YAML points at ``./schema/``; the schemas are copied along. The written directory is
    validated; a preset that does not validate raises :class:`ConfigError` (a packaging bug).
    """
    source = preset_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    files = sorted(source.glob("*.yaml"))
    clashes = [directory / f.name for f in files if (directory / f.name).exists()]
    if clashes and not overwrite:
        raise ConfigError(f"{clashes[0]} exists: pass --force to overwrite, or choose an empty directory")
    written: list[Path] = []
    for path in files:
        text = path.read_text(encoding="utf-8").replace("$schema=../../schema/", "$schema=./schema/")
        target = directory / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    schemas = directory / "schema"
    schemas.mkdir(exist_ok=True)
    for schema in sorted(_SCHEMA_DIR.glob("*.json")):
        written.append(Path(shutil.copy(schema, schemas / schema.name)))
    _mappings, errors, _warnings = validate_directory(directory)
    if errors:
        raise ConfigError(f"preset {name!r} does not validate: {errors[0]}")
    return written
