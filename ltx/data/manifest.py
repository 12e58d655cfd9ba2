"""Fine-tuning datasets as (media file, caption) lists: manifests (CSV, JSON, JSONL) or captioned folders.

Sources accepted by `read_dataset`:
- A CSV (header row), JSON (a list of objects) or JSONL (one object per line) manifest. Columns:
  media `media_path` | `video` | `video_path`, caption `caption` | `text` | `prompt`, optional reference
  `reference_path` | `reference_video` (the names of LTX-Video-Trainer and the LTX-2 trainer; the first
  one present wins), optional `audio_path` (LTX-2: the item's sound from a separate audio file instead of the
  clip's own track). Relative paths are relative to the manifest's folder.
- A folder: every image / video file in it (recursively, ltx.core.media extensions), each captioned by the
  `.txt` file of the same name beside it.

Structural problems (missing file or columns, empty or malformed manifest) raise a ValueError (or
FileNotFoundError) whose one-line message names the file and, for JSON, the line. Per-item problems (a
media or reference file that does not exist, a missing or empty caption) are not fatal: they come back as
`Skipped(path, reason)` so that preprocessing can report them. Captions are stripped of surrounding space.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ltx.core.media import is_image, is_video

MEDIA_COLUMNS = ("media_path", "video", "video_path")
CAPTION_COLUMNS = ("caption", "text", "prompt")
REFERENCE_COLUMNS = ("reference_path", "reference_video")
AUDIO_COLUMNS = ("audio_path",)
MANIFEST_SUFFIXES = (".csv", ".json", ".jsonl")


@dataclass(frozen=True)
class MediaItem:
    media_path: Path  # absolute
    caption: str
    reference_path: Path | None = None
    audio_path: Path | None = None  # LTX-2: a separate audio file for the item (else the clip's own track)


@dataclass(frozen=True)
class Skipped:
    path: Path | str
    reason: str


def _rows(path: Path) -> tuple[list[dict], list[str]]:
    """The manifest's rows (dicts) and the column names seen, in file order."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c for c in (reader.fieldnames or []) if c is not None]
        return rows, columns
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: a JSON manifest must be a list of objects, got a {type(data).__name__}")
        rows = data
    elif suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: malformed JSON at line {n}, column {e.colno}: {e.msg}") from None
            if not isinstance(rows[-1], dict):
                raise ValueError(f"{path}: line {n} is not a JSON object")
    else:
        raise ValueError(f"{path}: unsupported manifest type {path.suffix!r}; expected one of {MANIFEST_SUFFIXES} "
                         "or a folder of media files with .txt captions")  # fmt: skip
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: entry {i} is not a JSON object")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return rows, columns


def _column(path: Path, columns: list[str], accepted: tuple[str, ...], what: str) -> str | None:
    found = [c for c in accepted if c in columns]
    if not found and what:
        raise ValueError(f"{path}: no {what} column; found {columns}, accepted: {', '.join(accepted)}")
    return found[0] if found else None


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def read_manifest(path: str | os.PathLike) -> tuple[list[MediaItem], list[Skipped]]:
    """Items and skipped entries of a CSV / JSON / JSONL manifest (see the module docstring)."""
    path = Path(path).resolve()
    rows, columns = _rows(path)
    if not rows:
        raise ValueError(f"{path}: empty manifest (no rows)")
    media_key = _column(path, columns, MEDIA_COLUMNS, "media")
    caption_key = _column(path, columns, CAPTION_COLUMNS, "caption")
    reference_key = _column(path, columns, REFERENCE_COLUMNS, "")
    audio_key = _column(path, columns, AUDIO_COLUMNS, "")
    root = path.parent
    items, skipped = [], []
    for i, row in enumerate(rows):
        where = f"{path.name} row {i + 1}"
        media = row.get(media_key)
        if not isinstance(media, str) or not media.strip():
            skipped.append(Skipped(where, f"no media path ({media_key!r} is empty)"))
            continue
        media_path = _resolve(root, media.strip())
        caption = row.get(caption_key)
        reference = row.get(reference_key) if reference_key else None
        ref = _resolve(root, reference.strip()) if isinstance(reference, str) and reference.strip() else None
        audio = row.get(audio_key) if audio_key else None
        sound = _resolve(root, audio.strip()) if isinstance(audio, str) and audio.strip() else None
        if not media_path.is_file():
            skipped.append(Skipped(media_path, "media file not found"))
        elif not isinstance(caption, str) or not caption.strip():
            skipped.append(Skipped(media_path, f"no caption ({where}: {caption_key!r} is missing or empty)"))
        elif ref is not None and not ref.is_file():
            skipped.append(Skipped(media_path, f"reference file {ref} not found"))
        elif sound is not None and not sound.is_file():
            skipped.append(Skipped(media_path, f"audio file {sound} not found"))
        else:
            items.append(MediaItem(media_path, caption.strip(), ref, sound))
    return items, skipped


def read_folder(folder: str | os.PathLike) -> tuple[list[MediaItem], list[Skipped]]:
    """Items of a folder of images / videos captioned by same-name .txt files, sorted by path."""
    folder = Path(folder).resolve()
    media = sorted(p for p in folder.rglob("*") if p.is_file() and (is_image(p) or is_video(p)))
    if not media:
        raise ValueError(f"{folder}: no image or video files in the folder (and it is not a manifest)")
    items, skipped = [], []
    for p in media:
        txt = p.with_suffix(".txt")
        caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
        if not txt.is_file():
            skipped.append(Skipped(p, f"no caption: {txt.name} not found"))
        elif not caption:
            skipped.append(Skipped(p, f"no caption: {txt.name} is empty"))
        else:
            items.append(MediaItem(p, caption))
    return items, skipped


def read_dataset(source: str | os.PathLike) -> tuple[list[MediaItem], list[Skipped]]:
    """(items, skipped) of a manifest file or a captioned folder (see the module docstring)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist; pass a manifest (.csv, .json, .jsonl) or a folder "
                                "of videos / images with .txt captions")  # fmt: skip
    return read_folder(path) if path.is_dir() else read_manifest(path)
