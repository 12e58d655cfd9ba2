"""Control signals for IC-LoRA video-to-video control: Canny edge maps, and checks for user depth / pose maps.

An IC-LoRA (ltx/ltxv/conditioning.py, `GuideItem`) is steered by a control video that the VAE encodes like any
other video, so a control video is (3, F, H, W) in [-1, 1] with F = 8k + 1 (the VAE's temporal factor is 8),
the layout of every video fed to the VAE in ltx. Its content must look like what the LoRA was trained on:
- canny: white edges on black, one-pixel-wide (`canny`, then `edges_to_video`).
- depth: grayscale, near = bright, far = dark (the output convention of relative-depth estimators such as
  Depth-Anything and DepthCrafter, which the official workflow uses). Any other map (metric depth with
  near = dark, a colour-mapped depth) must be converted to what the LoRA was trained with, or it steers wrongly.
- pose: an RGB render of the skeletons on black (DWPose / OpenPose style: coloured limbs and joints).
Depth and pose maps come from external estimators; `maps_to_video` checks them and puts them in the video
layout. Control videos may be at any resolution: the generator resizes a guide to the target size (or to
1/downscale of it for a downscaled reference, `GuideItem.downscale`), bilinearly and without cropping, so give
it the target's aspect ratio. The frame rate should be the target video's (control frame i steers generated
frame i). Frame counts are 8k + 1: tools/make_control.py keeps the first 8k + 1 frames of other counts, and a
control video longer than the generated one is cut to the generated length (its first frames are kept).

Shapes: F frames · H, W pixels. Inputs are RGB (3, F, H, W) float in [0, 1] (ltx.core.media.read_video);
edge maps are (F, H, W) float in {0, 1}.

Canny (Canny 1986, "A Computational Approach to Edge Detection"), per frame: Rec. 601 luminance
(0.299 R + 0.587 G + 0.114 B), a separable Gaussian blur (radius ceil(3 sigma), reflect padding), Sobel
gradients (reflect padding), non-maximum suppression along the gradient direction quantised to 0 / 45 / 90 /
135 degrees, a double threshold and hysteresis (weak pixels are kept when 8-connected to a strong pixel
through weak pixels). `low` and `high` are fractions of the strongest gradient magnitude *in that frame*
(the magnitude is divided by its per-frame maximum), so the result does not change when the contrast of a
frame is scaled, and a frame whose strongest gradient is below `FLAT_GRADIENT` (far below one 8-bit level)
has no edges. The defaults 0.4 / 0.8 are the defaults of ComfyUI's Canny node (used by the official canny
workflow), but that node (kornia.filters.canny) applies them to an unnormalised gradient magnitude, so the
same numbers give sparser edges here. Tune `low` / `high` by looking at the result (tools/make_control.py
writes a contact sheet) against what the LoRA was trained with.

Pure torch, any device; no OpenCV, no model downloads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601 R, G, B
FLAT_GRADIENT = 1e-4  # a frame whose largest Sobel magnitude is below this has no edges (one 8-bit step: ~0.01)
RANGE_TOLERANCE = 1e-6  # values this far outside [0, 1] are accepted (and clamped)
_CHUNK = 8  # frames processed at once (bounds the memory of long videos)


# ------------------------------------------------------------------------------------------------ checks


def _check_number(name: str, value, lo: float, hi: float | None = None, *, open_lo: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if open_lo else value >= lo) and (hi is None or value <= hi)
    if not ok:
        what = f"> {lo}" if open_lo else f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
    return float(value)


def check_canny_params(low: float = 0.4, high: float = 0.8, sigma: float = 1.0) -> None:
    """Raise a ValueError naming the valid ranges unless 0 <= low <= high <= 1 and sigma > 0 (all finite)."""
    low = _check_number("low", low, 0.0, 1.0)
    high = _check_number("high", high, 0.0, 1.0)
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high}): need 0 <= low <= high <= 1 (fractions of the "
                         "strongest gradient in each frame)")
    _check_number("sigma", sigma, 0.0, open_lo=True)


def _check_values(x: Tensor, what: str) -> Tensor:
    """x as a floating tensor with values in [0, 1] (within RANGE_TOLERANCE, clamped); ValueError otherwise."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x.float()
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0, 1], got dtype {x.dtype} (8-bit values: divide by "
                         "255)")
    if x.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)})")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{what} holds {bad} NaN / inf value(s); valid values are finite, in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = (" (8-bit values? divide by 255)" if hi > 1.5
                else " (a [-1, 1] video? map it with (x + 1) / 2)" if lo < 0 else "")
        raise ValueError(f"{what} has values in [{lo:.6g}, {hi:.6g}]; valid values are in [0, 1]{hint}")
    return x.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------ canny


def _reflect_index(n: int, r: int, device) -> Tensor:
    """Indices of 0..n-1 padded by r on both sides with reflection about the edge pixels (d c b | a b c d |
    c b a, torch's "reflect"), for any r (also r >= n, where torch's padding refuses)."""
    i = torch.arange(-r, n + r, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    j = i.abs() % period
    return torch.where(j >= n, period - j, j)


def _filter_1d(x: Tensor, kernel: Tensor, dim: int) -> Tensor:
    """Correlate (N, H, W) with a 1-D odd-length `kernel` along dim 1 (rows) or 2 (columns), reflect padding:
    out[i] = sum_k kernel[k] * x[i + k - r] (a weighted sum of shifted copies: fast for short kernels)."""
    n, r = x.shape[dim], kernel.numel() // 2
    padded = x.index_select(dim, _reflect_index(n, r, x.device))
    out = None
    for k, w in enumerate(kernel.tolist()):
        if w != 0.0:
            term = padded.narrow(dim, k, n) * w
            out = term if out is None else out + term
    return out


def gaussian_kernel(sigma: float) -> Tensor:
    """(2 ceil(3 sigma) + 1,) normalised samples of a Gaussian of standard deviation `sigma` (float64)."""
    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def luminance(frames: Tensor) -> Tensor:
    """(3, F, H, W) RGB -> (F, H, W) Rec. 601 luma 0.299 R + 0.587 G + 0.114 B."""
    r, g, b = LUMA_WEIGHTS
    return frames[0] * r + frames[1] * g + frames[2] * b


def sobel(gray: Tensor) -> tuple[Tensor, Tensor]:
    """(N, H, W) -> Sobel gradients (gx, gy), x to the right, y downwards (reflect padding); unnormalised kernels
    ([1, 2, 1] smoothing times [-1, 0, 1] differences): a unit step gives 4."""
    smooth = torch.tensor([1.0, 2.0, 1.0])
    diff = torch.tensor([-1.0, 0.0, 1.0])
    gx = _filter_1d(_filter_1d(gray, diff, 2), smooth, 1)
    gy = _filter_1d(_filter_1d(gray, diff, 1), smooth, 2)
    return gx, gy


def gradient_magnitude(frames: Tensor, sigma: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(3, F, H, W) RGB in [0, 1] -> (magnitude, gx, gy), each (F, H, W): the Sobel gradient of the blurred
    luminance; `magnitude` is divided by its per-frame maximum (in [0, 1]; all 0 for a flat frame)."""
    k = gaussian_kernel(sigma)
    gray = luminance(frames.float() if frames.dtype in (torch.float16, torch.bfloat16) else frames)
    blurred = _filter_1d(_filter_1d(gray, k, 2), k, 1)
    gx, gy = sobel(blurred)
    mag = torch.hypot(gx, gy)
    peak = mag.amax(dim=(1, 2), keepdim=True)
    flat = peak < FLAT_GRADIENT
    mag = torch.where(flat, torch.zeros_like(mag), mag / torch.where(flat, torch.ones_like(peak), peak))
    return mag, gx, gy


def non_max_suppression(mag: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """(N, H, W) bool: pixels whose magnitude is a maximum along the gradient direction, quantised to 0 / 45 /
    90 / 135 degrees (neighbours outside the image count as 0). Ties go to the pixel further along the gradient
    (>= the neighbour behind, > the one ahead), so a step between two pixel columns gives one edge pixel, not
    two; zero-magnitude pixels are never maxima."""
    H, W = mag.shape[-2:]
    padded = F.pad(mag, (1, 1, 1, 1))

    def at(dy: int, dx: int) -> Tensor:  # the neighbour at row offset dy, column offset dx
        return padded[:, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]

    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0  # [0, 180): a direction, not an orientation
    sector = torch.div(angle + 22.5, 45.0, rounding_mode="floor").long() % 4  # 0: 0, 1: 45, 2: 90, 3: 135 degrees
    # (dy, dx) of the neighbour ahead along the gradient; y points down, so 45 degrees is down-right
    ahead = ((0, 1), (1, 1), (1, 0), (1, -1))
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for s, (dy, dx) in enumerate(ahead):
        is_max = (mag > at(dy, dx)) & (mag >= at(-dy, -dx))
        keep |= (sector == s) & is_max
    return keep & (mag > 0)


def _dilate(mask: Tensor) -> Tensor:
    """3x3 max pool (stride 1, the border padded with False) of a bool (N, H, W) mask: on bool masks the max is
    the OR of the shifted copies, taken separably (rows, then columns)."""
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[:, :, :-2] | p[:, :, 1:-1] | p[:, :, 2:]
    return rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]


def hysteresis(strong: Tensor, weak: Tensor) -> Tensor:
    """Edge tracking: bool (..., H, W) `strong` pixels plus every `weak` pixel 8-connected to a strong one
    through weak pixels (strong pixels count as weak). Iterated 3x3 max-pool dilation of the edges restricted
    to the weak pixels, until nothing changes."""
    if strong.shape != weak.shape:
        raise ValueError(f"strong {tuple(strong.shape)} and weak {tuple(weak.shape)} must have the same shape")
    if strong.ndim < 2:
        raise ValueError(f"expected (..., H, W) masks, got shape {tuple(strong.shape)}")
    shape = strong.shape
    allowed = (weak.bool() | strong.bool()).reshape(-1, *shape[-2:])
    edges = strong.bool().reshape(allowed.shape)
    while True:
        grown = _dilate(edges) & allowed
        if torch.equal(grown, edges):
            return edges.reshape(shape)
        edges = grown


def canny(frames: Tensor, low: float = 0.4, high: float = 0.8, sigma: float = 1.0) -> Tensor:
    """Canny edges of (3, F, H, W) RGB frames in [0, 1] -> (F, H, W) float32 {0, 1} (1 = edge), per frame.

    A pixel is a strong edge if its (non-maximum-suppressed) gradient magnitude is >= `high` times the frame's
    strongest gradient, a weak one if >= `low` times it; weak pixels are kept when 8-connected to a strong
    one. Needs 0 <= low <= high <= 1 and sigma > 0 (the Gaussian blur's standard deviation, in pixels; larger
    = fewer, smoother edges). A flat frame has no edges. See the module docstring."""
    check_canny_params(low, high, sigma)
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[0] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        hint = " ((F, 3, H, W)? use frames.permute(1, 0, 2, 3))" if isinstance(frames, Tensor) and frames.ndim == 4 \
            and frames.shape[1] == 3 else ""
        raise ValueError(f"canny expects RGB frames of shape (3, F, H, W) in [0, 1], got {shape}{hint}")
    frames = _check_values(frames, "canny frames")
    out = []
    for i in range(0, frames.shape[1], _CHUNK):
        mag, gx, gy = gradient_magnitude(frames[:, i : i + _CHUNK], sigma)
        thin = non_max_suppression(mag, gx, gy)
        out.append(hysteresis(thin & (mag >= high), thin & (mag >= low)))
    return torch.cat(out).float()


# ------------------------------------------------------------------------------------------------ control videos


def edges_to_video(edges: Tensor) -> Tensor:
    """(F, H, W) edge maps in [0, 1] (or bool) -> (3, F, H, W) in [-1, 1]: white edges on black, the layout of
    videos fed to the VAE."""
    if not isinstance(edges, Tensor) or edges.ndim != 3:
        shape = tuple(edges.shape) if isinstance(edges, Tensor) else type(edges).__name__
        raise ValueError(f"edges must be (F, H, W) maps in [0, 1], got {shape}")
    edges = _check_values(edges, "edges")
    return (edges * 2.0 - 1.0).unsqueeze(0).repeat(3, 1, 1, 1)


def maps_to_video(maps: Tensor) -> Tensor:
    """User depth / pose maps -> (3, F, H, W) in [-1, 1].

    maps: (F, H, W) or (1, F, H, W) grayscale (replicated to RGB; depth: near = bright), or (3, F, H, W) RGB
    (a pose render), float in [0, 1]. NaN / inf, integer dtypes and values outside [0, 1] (beyond
    RANGE_TOLERANCE) are refused with a ValueError naming the problem."""
    if not isinstance(maps, Tensor):
        raise ValueError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4 or maps.shape[0] not in (1, 3):
        raise ValueError(f"maps must be (F, H, W) or (1, F, H, W) grayscale, or (3, F, H, W) RGB, got shape "
                         f"{tuple(maps.shape)}")
    if 0 in maps.shape:
        raise ValueError(f"maps are empty (shape {tuple(maps.shape)})")
    maps = _check_values(maps, "maps")
    return (maps * 2.0 - 1.0).expand(3, -1, -1, -1).contiguous()
