#!/usr/bin/env python
"""Make an IC-LoRA control video (canny edges, or checked depth / pose maps) as an mp4, with a contact sheet.

    python tools/make_control.py canny clip.mp4 control/canny.mp4                     # edges of a video
    python tools/make_control.py canny clip.mp4 control/canny.mp4 --low 0.2 --high 0.5 --sigma 1.5 --overwrite
    python tools/make_control.py canny clip.mp4 control/canny.mp4 --max-frames 121    # the first 121 frames
    python tools/make_control.py depth depth_frames/ control/depth.mp4 --fps 24       # a folder of depth PNGs
    python tools/make_control.py depth metric_depth.mp4 control/depth.mp4 --invert     # near = dark -> bright
    python tools/make_control.py pose pose_render.mp4 control/pose.mp4

Modes (the formats are described in ltx/core/control.py):
- canny: INPUT is any video (or folder of images); writes its Canny edges (ltx.core.control.canny), white on
  black. --low / --high are fractions of each frame's strongest gradient (0 <= low <= high <= 1), --sigma
  the blur in pixels.
- depth: INPUT is a video or folder of depth maps from an estimator (DepthCrafter, Depth-Anything, ...),
  grayscale with near = bright, as the depth IC-LoRA was trained with; --invert flips maps where near is
  dark. Colour input is converted to luminance (with a note: a colour-mapped depth is probably not what the
  LoRA expects).
- pose: INPUT is a video or folder of pose renders (DWPose / OpenPose style skeletons on black), kept in RGB.

INPUT is a video file, one image (a 1-frame control), or a folder whose image files (.png, .jpg, ...;
sorted by name: zero-pad frame numbers) are the frames. Image frames may be 8-bit, 16-bit grayscale (PNG) or
32-bit float (TIFF, values in [0, 1]); all must have the same size. Frame rate: the video's, or --fps
(default 24 for image folders); use the target video's. The VAE needs 8k + 1 frames: other counts keep the
first 8k + 1 (with a note). Odd heights / widths lose their last row / column (H.264 yuv420p needs even
sizes; the generator resizes guides anyway).

Writes OUT (H.264 mp4, CRF 18, atomically) and OUT with the suffix .png: a contact sheet with a few input
frames above the same control frames. Prints one summary line (frames, size, fps; edge density for canny).
Bad input prints one `error: ...` line and exits with status 2; LTX_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltx.core.checkpoint import Terminated, check_output_path, raise_on_sigterm  # noqa: E402
from ltx.core.control import canny, check_canny_params, edges_to_video, luminance, maps_to_video  # noqa: E402
from ltx.core.media import IMAGE_EXTENSIONS, MediaError, is_image, read_frames, write_mp4  # noqa: E402
from ltx.core.viz import save_video_grid  # noqa: E402

MODES = ("canny", "depth", "pose")
TEMPORAL = 8  # the VAE's temporal factor: frame counts are 8k + 1
DEFAULT_FPS = 24.0  # for image folders without --fps
SHEET_FRAMES = 5  # frames per row of the contact sheet
SHEET_SIDE = 320  # longest side of a contact-sheet frame
COLOUR_SPREAD = 0.05  # depth: a pixel whose channels differ by more than this is coloured


@dataclass
class Result:
    mode: str
    output: Path
    sheet: Path
    frames: int
    height: int
    width: int
    fps: float
    edge_density: float | None = None  # canny: the fraction of edge pixels
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ reading


def read_map_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (3, H, W) float32 in [0, 1]: 8-bit images (alpha dropped, grayscale replicated),
    16-bit grayscale divided by 65535, 32-bit float images checked to be finite and in [0, 1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found" if not path.exists() else "not a file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):
                gray = torch.from_numpy(np.asarray(im, dtype=np.float32) / 65535.0)
            elif im.mode in ("I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                if not np.isfinite(arr).all():
                    raise MediaError(path, f"{int((~np.isfinite(arr)).sum())} NaN / inf pixel value(s); valid: "
                                           "finite values")
                lo, hi = float(arr.min()), float(arr.max())
                top = 65535.0 if im.mode == "I" else 1.0
                if lo < -1e-6 or hi > top + 1e-6:
                    what = "16-bit integers 0..65535" if im.mode == "I" else "floats in [0, 1]"
                    raise MediaError(path, f"{'integer' if im.mode == 'I' else 'float'} pixel values in "
                                           f"[{lo:.6g}, {hi:.6g}]; valid: {what}")
                gray = torch.from_numpy((arr / top).clip(0.0, 1.0).astype(np.float32))
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
                return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    except MediaError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(path, f"unreadable or corrupt image ({e})") from None
    return gray.expand(3, -1, -1).contiguous()


def image_files(folder: Path) -> list[Path]:
    """The folder's image files (not hidden ones), sorted by name."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith(".")),
                   key=lambda p: p.name)
    if not files:
        raise MediaError(folder, f"no image files in the folder (valid frames: {', '.join(IMAGE_EXTENSIONS)}, "
                                 "sorted by name)")
    return files


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_input(path: Path, max_frames: int | None, notes: list[str]) -> tuple[Tensor, float | None]:
    """A video, one image or a folder of images -> ((3, F, H, W) float32 in [0, 1], fps or None)."""
    if not path.exists():
        raise MediaError(path, "not found (give a video file, an image, or a folder of image frames)")
    if path.is_dir():
        files = image_files(path)
        names = [p.name for p in files]
        if sorted(names, key=_natural_key) != names:
            notes.append(f"frames are taken in name order, which puts {_first_swap(names)}; zero-pad the frame "
                         "numbers if that is not the intended order")
        files = files[:max_frames] if max_frames else files
        frames, size = [], None
        for p in files:
            x = read_map_image(p)
            if size is None:
                size, first = x.shape[1:], p
            elif x.shape[1:] != size:
                raise MediaError(p, f"{x.shape[2]}x{x.shape[1]} pixels but {first.name} is {size[1]}x{size[0]}: all "
                                    "frames must have the same size")
            frames.append(x)
        return torch.stack(frames, dim=1), None
    if is_image(path):
        return read_map_image(path)[:, None], None
    video, fps = read_frames(path, max_frames=max_frames)  # (F, H, W, 3) uint8; MediaError when unreadable
    return video.permute(3, 0, 1, 2).float() / 255.0, fps


def _first_swap(names: list[str]) -> str:
    natural = sorted(names, key=_natural_key)
    i = next(k for k, (a, b) in enumerate(zip(names, natural)) if a != b)
    return f"{names[i]} before {natural[i]}"


# ------------------------------------------------------------------------------------------------ making


def usable_frames(n: int, temporal: int = TEMPORAL) -> int:
    """The largest temporal * k + 1 <= n (n >= 1)."""
    return (n - 1) // temporal * temporal + 1


def _sheet_size(video: Tensor) -> Tensor:
    """(3, F, H, W) -> at most SHEET_SIDE on its longest side (area averaging)."""
    H, W = video.shape[-2:]
    s = SHEET_SIDE / max(H, W)
    if s >= 1:
        return video
    size = (max(1, round(H * s)), max(1, round(W * s)))
    return F.interpolate(video.transpose(0, 1), size=size, mode="area").transpose(0, 1)


def make_control(mode: str, input: str | os.PathLike, output: str | os.PathLike, *, low: float = 0.4,
                 high: float = 0.8, sigma: float = 1.0, invert: bool = False, max_frames: int | None = None,
                 fps: float | None = None, overwrite: bool = False) -> Result:
    """Write the control mp4 `output` and its contact sheet (`output` with suffix .png); see the file docstring.
    Raises MediaError / ValueError / OSError with a one-line message for bad input, before writing anything."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "canny":
        check_canny_params(low, high, sigma)
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"--max-frames must be a whole number >= 1, got {max_frames!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be a positive number, got {fps!r}")
    input, output = Path(input), Path(output)
    if output.suffix.lower() != ".mp4":
        raise ValueError(f"{output}: the output is an H.264 mp4; give a path ending in .mp4")
    sheet = output.with_suffix(".png")
    for path in (output, sheet):  # refuse an output that cannot be written before reading anything
        check_output_path(path, overwrite=overwrite)

    notes: list[str] = []
    frames, video_fps = read_input(input, max_frames, notes)
    if fps is None:
        fps = video_fps
        if fps is None:
            fps = DEFAULT_FPS
            notes.append(f"no frame rate in the input: writing {DEFAULT_FPS:g} fps (--fps to set the target video's)")
    n = frames.shape[1]
    keep = usable_frames(n)
    if keep != n:
        notes.append(f"{n} frames is not 8k + 1: keeping the first {keep} (the VAE needs 8k + 1 frames)")
        frames = frames[:, :keep]
    H, W = frames.shape[-2:]
    if H < 2 or W < 2:
        raise MediaError(input, f"{W}x{H} pixels is too small; frames need at least 2x2 pixels")
    if H % 2 or W % 2:
        notes.append(f"{W}x{H} is odd: cropped to {W // 2 * 2}x{H // 2 * 2} (H.264 yuv420p needs even sizes)")
        frames = frames[..., : H // 2 * 2, : W // 2 * 2]
        H, W = frames.shape[-2:]

    density = None
    if mode == "canny":
        edges = canny(frames, low, high, sigma)
        density = float(edges.mean())
        control = edges_to_video(edges)
    elif mode == "depth":
        coloured = float(((frames.amax(0) - frames.amin(0)) > COLOUR_SPREAD).float().mean())
        if coloured > 0.01:
            notes.append(f"{coloured:.0%} of the depth pixels are coloured: converted to luminance; a colour-mapped "
                         "depth is probably not what the LoRA was trained on (grayscale, near = bright)")
        gray = luminance(frames).clamp(0, 1)
        control = maps_to_video(1.0 - gray if invert else gray)
    else:
        dark = float((luminance(frames) < 0.1).float().mean())
        if dark < 0.5:
            notes.append(f"only {dark:.0%} of the pixels are near black: pose controls are usually skeletons "
                         "rendered on black")
        control = maps_to_video(frames)

    write_mp4(output, (control + 1.0) / 2.0, fps)
    save_video_grid(sheet, [_sheet_size(frames * 2.0 - 1.0), _sheet_size(control)], frames=SHEET_FRAMES,
                    scale=2 if max(H, W) <= 128 else 1)
    return Result(mode, output, sheet, control.shape[1], H, W, float(fps), density, tuple(notes))


# ------------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    """Usage errors as one `error: ...` line (exit status 2)."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _unit(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (valid: 0 <= low <= high <= 1)") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1] (valid: 0 <= low <= high <= 1)")
    return v


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
        return v

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="make_control.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True, metavar="{canny,depth,pose}")
    for mode, help in (("canny", "Canny edges of a video (white on black)"),
                       ("depth", "depth maps: grayscale, near = bright"),
                       ("pose", "pose renders: skeletons on black, RGB")):
        s = sub.add_parser(mode, help=help, description=help)
        s.add_argument("input", type=Path, help="a video, an image, or a folder of image frames (sorted by name)")
        s.add_argument("output", type=Path, help="the control video, .mp4 (the contact sheet goes beside it, .png)")
        if mode == "canny":
            s.add_argument("--low", type=_unit, default=0.4, help="weak-edge threshold, a fraction of each frame's "
                           "strongest gradient (default 0.4)")
            s.add_argument("--high", type=_unit, default=0.8, help="strong-edge threshold (default 0.8)")
            s.add_argument("--sigma", type=_positive(float), default=1.0, help="Gaussian blur in pixels (default 1)")
        if mode == "depth":
            s.add_argument("--invert", action="store_true", help="the maps have near = dark: flip to near = bright")
        s.add_argument("--max-frames", type=_positive(int), default=None, help="read at most N frames")
        s.add_argument("--fps", type=_positive(float), default=None,
                       help=f"frame rate to write (default: the video's; {DEFAULT_FPS:g} for image folders)")
        s.add_argument("--overwrite", action="store_true", help="replace existing OUT.mp4 / OUT.png")
    return p.parse_args(argv)


def _message(e: BaseException) -> str:
    """The error as one line."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e).replace("pass overwrite=True (CLI: --overwrite)", "pass --overwrite")
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    raise_on_sigterm()  # a `kill` unwinds like Ctrl-C: atomic writes remove their temporary files
    args = parse_args(argv)
    try:
        r = make_control(args.mode, args.input, args.output, low=getattr(args, "low", 0.4),
                         high=getattr(args, "high", 0.8), sigma=getattr(args, "sigma", 1.0),
                         invert=getattr(args, "invert", False), max_frames=args.max_frames, fps=args.fps,
                         overwrite=args.overwrite)
    except KeyboardInterrupt as e:
        print(f"interrupted; {args.output} was not written", file=sys.stderr)
        return 128 + (e.signum if isinstance(e, Terminated) else 2)
    except (MediaError, ValueError, OSError) as e:  # bad input: one line
        if os.environ.get("LTX_DEBUG"):
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("LTX_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (LTX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    for note in r.notes:
        print(f"note: {note}", file=sys.stderr)
    density = f", edge density {r.edge_density:.2%}" if r.edge_density is not None else ""
    print(f"wrote {r.output}: {r.mode} control, {r.frames} frames, {r.width}x{r.height}, {r.fps:g} fps{density}; "
          f"contact sheet {r.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
