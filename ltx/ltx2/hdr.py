"""LTX-2.5's HDR colour path: EXR / SDR conditioning in, scene-linear EXR frames and a BT.2020 / HLG master out.

The VAE only ever sees [-1, 1] pixels, so HDR rides on a transfer curve: scene-linear light [0, inf) is compressed
into a [0, 1] "working space" signal with a camera-log curve, mapped to the VAE's range with 2 v - 1, and the decoded
signal is expanded back. Two curves are in use (ltx-core `hdr.py`):

* **LogC3** (ARRI LogC3, EI 800; the HDR IC-LoRA's curve, its native primaries Rec.709):
      v = c log10(a x + b) + d                 x >= cut
      v = e x + f                              x <  cut
  with (cut, a, b, c, d, e, f) = (0.010591, 5.555556, 0.052272, 0.247190, 0.385537, 5.367655, 0.092809).
  18% grey -> 0.391; the code is clamped to [0, 1], so the range tops out at x = (10^((1 - d) / c) - b) / a ~ 55.
* **ACEScct** (AMPAS S-2016-001; the native `--hdr` curve, its native primaries ACEScg / AP1):
      v = (log2 x + 9.72) / 17.52              x >  2^-7
      v = A x + B                              x <= 2^-7,  A = 10.5402377416545, B = 0.0729055341958355
  (the toe is the log curve's tangent at 2^-7, so the two meet with slope). 18% grey -> 0.4136, 1.0 -> 0.5548; the
  [0, 1] clamp tops out at 2^7.8 ~ 222.9.

Encoding clamps x to >= 0 and the code to [0, 1]; decoding clamps the code to [0, 1] (the branch point is the code
of the cut). With LogC3's 6-digit constants the log segment starts 2.5e-7 below the linear one at the cut, so linear
values within ~5e-8 above the cut decode through the linear branch (an error below 5e-8; upstream and diffusers alike).
Scene-linear values come back clamped to >= 0 after the primaries change (`decode_hdr`).

Primaries (3x3 maps of linear RGB; the official constants, which derive from the CIE chromaticities below: Rec.709
-> Rec.2020 is ITU-R BT.2087's matrix, ACEScg (white D60) -> Rec.709 / Rec.2020 use a Bradford adaptation to D65;
Rec.709 -> ACEScg is the float64 inverse of ACEScg -> Rec.709 as stored in float32, as upstream builds it):

    Rec.709  R (0.64, 0.33)   G (0.30, 0.60)   B (0.15, 0.06)   W D65 (0.3127, 0.3290)
    Rec.2020 R (0.708, 0.292) G (0.170, 0.797) B (0.131, 0.046) W D65
    ACEScg   R (0.713, 0.293) G (0.165, 0.830) B (0.128, 0.044) W D60 (0.32168, 0.33767)

HLG (ITU-R BT.2100, ARIB STD-B67), scene light E in [0, 1] -> signal E' in [0, 1]:
      E' = sqrt(3 E)                           E <= 1/12
      E' = a ln(12 E - b) + c                  a = 0.17883277, b = 1 - 4a, c = 0.5 - a ln(4a)
The reference display EOTF (`hlg_eotf`) applies the OOTF F_D = L_W Y_S^(gamma - 1) E with gamma = 1.2 + 0.42
log10(L_W / 1000) (75% HLG grey -> 203 cd/m^2 on a 1000 cd/m^2 display, BT.2408's reference white). The master does
not use the EOTF: like ltx-core `color/hlg.py`, it puts scene-linear diffuse white (1.0) at HLG 75% (E = w =
OETF^-1(0.75) ~ 0.265) and rolls highlights off toward 1.0 with a C1-continuous exponential:
      E = w x                                  x <= 1
      E = 1 - (1 - w) exp(-k (x - 1))          x >  1,  k = w / (1 - w)
after converting to Rec.2020 primaries. The signal is packed as BT.2020 non-constant-luminance Y'CbCr (Kr 0.2627,
Kb 0.0593), narrow range, 10 bit (Y' = 4 (219 Y + 16), C = 4 (224 C + 128)), 4:2:0 by averaging each 2x2 block of
Cb / Cr, and written as HEVC Main10 (libx265) tagged primaries bt2020, transfer arib-std-b67, matrix bt2020nc.

The two pipelines (official ltx-pipelines 1.2.0; diffusers 0.42.1 has only the IC-LoRA one):

* **Native `--hdr`** (`HDRColorSpace`): an EXR still or a folder of EXR frames conditions the ordinary pipelines. The
  frames are fitted to size in linear light (still: scale to cover + center crop; folder: scale to fit + reflect pad),
  converted to ACEScg and ACEScct-encoded (`ACESCCT` input is already codes and is only clamped), 2 v - 1. The decode
  is expanded with ACEScct; EXR frames get the colour space's own encoding (linear Rec.709 tagged "sRGB", linear
  ACEScg tagged "ACEScg", or the ACEScct codes themselves tagged "ACEScct") and the HLG master gets Rec.709 linear.
* **HDR IC-LoRA** (`HDRLoraConfig`): an SDR Rec.709 video is the IC reference; its frames are scaled to fit and
  reflect-padded, v = clamp(x / 255, 0, 1) (LogC3's `compress_ldr` is the identity clamp: SDR display values are
  taken as codes, so the LoRA learned the SDR -> LogC3 mapping), 2 v - 1. The output is LogC3-expanded to linear
  Rec.709 and written as EXR frames (plus an sRGB H.264 preview, clipped at 1.0; `linear_to_srgb`).

Where official and diffusers differ: diffusers' `postprocess_hdr_video` does not clamp the expanded light at 0, so the
LogC3 toe (codes below f = 0.0928) comes out negative, down to -f / e = -0.0173; the official `to_linear` clamps it and
so do we. Diffusers normalizes SDR frames before the resize, the official after (bilinear is linear: same values up to
float rounding). We also refuse non-finite EXR pixels (the official loader would pass NaN into the VAE).

EXR is read and written here (the official uses OpenImageIO): single-part scanline OpenEXR 2.0 files, channels stored
B, G, R (sorted by name), HALF or FLOAT, compression NONE, ZIPS (1 line per block) or ZIP (16 lines, the default, as
the official writer); ZIP is zlib over the bytes split into even / odd halves and delta-coded (OpenEXR's predictor).
Headers carry `chromaticities` and `colorSpace` tags as the official writer does. Other compressions, tiled, deep and
multi-part files raise ValueError.

Layouts: colour functions act on channels-last tensors (..., 3); frames are (H, W, 3), clips (F, H, W, 3); VAE
pixels are (B, 3, F, H, W) in [-1, 1]. PyAV and numpy are imported inside the functions that need them.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.core.checkpoint import atomic_file

# ------------------------------------------------------------------------------------------------ transfer curves

LOGC3_CUT, LOGC3_A, LOGC3_B, LOGC3_C = 0.010591, 5.555556, 0.052272, 0.247190
LOGC3_D, LOGC3_E, LOGC3_F = 0.385537, 5.367655, 0.092809

ACESCCT_X_BREAK, ACESCCT_Y_BREAK = 0.0078125, 0.155251141552511
ACESCCT_A, ACESCCT_B = 10.5402377416545, 0.0729055341958355
ACESCCT_SCALE, ACESCCT_OFFSET = 17.52, 9.72


def logc3_encode(x: Tensor) -> Tensor:
    """Scene-linear [0, inf) -> LogC3 (EI 800) code in [0, 1]."""
    x = x.clamp(min=0.0)
    log = LOGC3_C * torch.log10(LOGC3_A * x + LOGC3_B) + LOGC3_D
    return torch.where(x >= LOGC3_CUT, log, LOGC3_E * x + LOGC3_F).clamp(0.0, 1.0)


def logc3_decode(v: Tensor) -> Tensor:
    """LogC3 code (clamped to [0, 1]) -> scene-linear; the toe (v < f) decodes below 0."""
    v = v.clamp(0.0, 1.0)
    log = (torch.pow(10.0, (v - LOGC3_D) / LOGC3_C) - LOGC3_B) / LOGC3_A
    return torch.where(v >= LOGC3_E * LOGC3_CUT + LOGC3_F, log, (v - LOGC3_F) / LOGC3_E)


def acescct_encode(x: Tensor) -> Tensor:
    """Scene-linear [0, inf) -> ACEScct code in [0, 1]."""
    x = x.clamp(min=0.0)
    log = (torch.log2(x.clamp(min=1e-12)) + ACESCCT_OFFSET) / ACESCCT_SCALE
    return torch.where(x > ACESCCT_X_BREAK, log, ACESCCT_A * x + ACESCCT_B).clamp(0.0, 1.0)


def acescct_decode(v: Tensor) -> Tensor:
    """ACEScct code (clamped to [0, 1]) -> scene-linear ACEScg."""
    v = v.clamp(0.0, 1.0)
    log = torch.pow(2.0, v * ACESCCT_SCALE - ACESCCT_OFFSET)
    return torch.where(v > ACESCCT_Y_BREAK, log, (v - ACESCCT_B) / ACESCCT_A)


# ------------------------------------------------------------------------------------------------ primaries


class Primaries(Enum):
    """Linear-light RGB primaries (and white point)."""

    REC709 = "rec709"
    ACESCG = "acescg"
    REC2020 = "rec2020"

    @property
    def chromaticities(self) -> tuple[float, ...]:
        """(xR, yR, xG, yG, xB, yB, xW, yW): CIE 1931 xy, the EXR `chromaticities` attribute."""
        return _CHROMATICITIES[self]


_CHROMATICITIES = {
    Primaries.REC709: (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
    Primaries.ACESCG: (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767),
    Primaries.REC2020: (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
}

_ACESCG_TO_REC709 = ((1.70505, -0.62179, -0.08326), (-0.13026, 1.14080, -0.01055), (-0.02400, -0.12897, 1.15297))
_MATRICES: dict[tuple[Primaries, Primaries], Tensor] = {
    (Primaries.ACESCG, Primaries.REC709): torch.tensor(_ACESCG_TO_REC709, dtype=torch.float64),
    # upstream inverts its float32 copy of the matrix (in float64): the same here, so float32 use matches bitwise
    (Primaries.REC709, Primaries.ACESCG): torch.linalg.inv(torch.tensor(_ACESCG_TO_REC709).double()),
    (Primaries.REC709, Primaries.REC2020): torch.tensor(  # ITU-R BT.2087
        ((0.62740389, 0.32928304, 0.04331307), (0.06909729, 0.91954040, 0.01136232),
         (0.01639144, 0.08801331, 0.89559525)), dtype=torch.float64),
    (Primaries.ACESCG, Primaries.REC2020): torch.tensor(  # Bradford D60 -> D65
        ((1.02582475, -0.02005319, -0.00577156), (-0.00223437, 1.00458650, -0.00235213),
         (-0.00501335, -0.02529007, 1.03030342)), dtype=torch.float64),
}


def primaries_matrix(src: Primaries, dst: Primaries) -> Tensor:
    """The float64 (3, 3) M with rgb_dst = M @ rgb_src; the identity when src is dst."""
    if src is dst:
        return torch.eye(3, dtype=torch.float64)
    if (src, dst) not in _MATRICES:
        known = ", ".join(f"{a.name}->{b.name}" for a, b in _MATRICES)
        raise ValueError(f"no primaries conversion {src.name}->{dst.name}; known: {known}")
    return _MATRICES[(src, dst)]


def convert_primaries(rgb: Tensor, src: Primaries, dst: Primaries) -> Tensor:
    """Linear RGB (..., 3) in `src` primaries -> the same light in `dst` primaries."""
    _check_rgb(rgb, "rgb")
    if src is dst:
        return rgb
    m = primaries_matrix(src, dst).to(device=rgb.device, dtype=rgb.dtype if rgb.is_floating_point() else None)
    return rgb @ m.T


class Transfer(Enum):
    """The working-space curve the VAE sees: LogC3 (HDR IC-LoRA) or ACEScct (native `--hdr`)."""

    LOGC3 = "logc3"
    ACESCCT = "acescct"

    @property
    def primaries(self) -> Primaries:
        """The primaries the curve is applied in (decode lands here)."""
        return Primaries.REC709 if self is Transfer.LOGC3 else Primaries.ACESCG

    @property
    def tag(self) -> str:
        """The EXR `colorSpace` tag of codes in this curve."""
        return "LogC3" if self is Transfer.LOGC3 else "ACEScct"

    def encode(self, x: Tensor) -> Tensor:
        return logc3_encode(x) if self is Transfer.LOGC3 else acescct_encode(x)

    def decode(self, v: Tensor) -> Tensor:
        return logc3_decode(v) if self is Transfer.LOGC3 else acescct_decode(v)

    def to_working(self, rgb: Tensor, primaries: Primaries = Primaries.REC709) -> Tensor:
        """Scene-linear (..., 3) in `primaries` -> [0, 1] codes (to_working_space): convert, clamp >= 0, encode."""
        return self.encode(convert_primaries(rgb.float(), primaries, self.primaries).clamp(min=0.0))

    def to_linear(self, v: Tensor, primaries: Primaries = Primaries.REC709) -> Tensor:
        """[0, 1] codes (..., 3) -> scene-linear in `primaries`, clamped >= 0 (to_linear)."""
        return convert_primaries(self.decode(v.float()), self.primaries, primaries).clamp(min=0.0)


class HDRColorSpace(Enum):
    """What `--hdr` declares EXR inputs to hold (ltx-pipelines `HDRColorSpace`); the VAE curve is always ACEScct."""

    SRGB_LINEAR = "srgb_linear"  # scene-linear Rec.709 / sRGB primaries
    ACESCG = "acescg"  # scene-linear ACEScg
    ACESCCT = "acescct"  # ACEScct codes already (no transfer on load)

    @property
    def transfer(self) -> Transfer:
        return Transfer.ACESCCT

    @property
    def is_log(self) -> bool:
        return self is HDRColorSpace.ACESCCT

    @property
    def primaries(self) -> Primaries:
        return Primaries.REC709 if self is HDRColorSpace.SRGB_LINEAR else Primaries.ACESCG

    @property
    def exr_tag(self) -> str:
        """The EXR `colorSpace` tag of this space's output frames."""
        return {"srgb_linear": "sRGB", "acescg": "ACEScg", "acescct": "ACEScct"}[self.value]

    @classmethod
    def parse(cls, value: str | HDRColorSpace) -> HDRColorSpace:
        """From the enum, its value or its name, any case ('SRGB_LINEAR', 'acescg', ...)."""
        if isinstance(value, cls):
            return value
        for member in cls:
            if isinstance(value, str) and value.lower() in (member.value, member.name.lower()):
                return member
        raise ValueError(f"unknown HDR colour space {value!r}; valid: {', '.join(m.name for m in cls)}")


@dataclass(frozen=True)
class HDRLoraConfig:
    """An HDR IC-LoRA's decode curve and reference downscale, from its safetensors metadata (read_hdr_lora_config)."""

    transfer: Transfer = Transfer.LOGC3
    reference_downscale: int = 1

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> HDRLoraConfig | None:
        """None when the file has neither `hdr_transform` nor `use_hdr_transform`; `hdr_transform` may be a curve
        name or the bare flag 'true' (LogC3)."""
        metadata = metadata or {}
        name = metadata.get("hdr_transform", "")
        if not (name or metadata.get("use_hdr_transform")):
            return None
        if name and name != "true" and name not in {t.value for t in Transfer}:
            raise ValueError(f"unknown hdr_transform {name!r} in the LoRA metadata; valid: logc3, acescct, true")
        transfer = Transfer(name) if name and name != "true" else Transfer.LOGC3
        scale = metadata.get("reference_downscale_factor", "1")
        if not str(scale).isdigit() or int(scale) < 1:
            raise ValueError(f"reference_downscale_factor must be a positive integer, got {scale!r}")
        return cls(transfer, int(scale))


# ------------------------------------------------------------------------------------------------ checks


def _check_rgb(x: Tensor, what: str, ndims: tuple[int, ...] | None = None) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != 3 or (ndims is not None and x.ndim not in ndims):
        shapes = " or ".join({3: "(H, W, 3)", 4: "(F, H, W, 3)"}.get(n, f"{n}-d (..., 3)") for n in ndims or (0,))
        raise ValueError(f"{what} must be channels-last RGB {shapes if ndims else '(..., 3)'}, got {tuple(x.shape)}")


def _check_finite(x: Tensor, what: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} holds NaN or inf; HDR inputs must be finite scene-linear values")


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# ------------------------------------------------------------------------------------------------ conditioning


def to_vae_range(v: Tensor) -> Tensor:
    """[0, 1] codes -> the VAE's [-1, 1]; anything outside [0, 1] (or NaN) is refused, never clamped."""
    if not bool(((v >= 0) & (v <= 1)).all()):
        raise ValueError(f"working-space codes must lie in [0, 1], got min {float(v.min())} max {float(v.max())}")
    return v * 2.0 - 1.0


def from_vae_range(z: Tensor) -> Tensor:
    """The VAE's [-1, 1] -> [0, 1] codes, clamped (the decoder's to_rgb)."""
    return ((z + 1.0) / 2.0).clamp(0.0, 1.0)


def fit_frames(frames: Tensor, height: int, width: int, mode: str = "reflect_pad") -> Tensor:
    """(H, W, 3) or (F, H, W, 3) -> (1, 3, F, height, width) float32, bilinear (no antialias), values unchanged.

    reflect_pad (resize_and_reflect_pad): scale to fit inside (sizes rounded; no resize when the frame already fits),
    then pad bottom / right by reflection (replication when a pad is not smaller than the frame).
    center_crop (resize_and_center_crop): scale to cover (sizes rounded up), then crop the centre."""
    _check_rgb(frames, "frames", (3, 4))
    _check_size(height, width)
    if mode not in ("reflect_pad", "center_crop"):
        raise ValueError(f"fit mode must be 'reflect_pad' or 'center_crop', got {mode!r}")
    x = frames.float()
    x = (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2)  # (F, 3, H, W)
    src_h, src_w = x.shape[-2:]
    if mode == "center_crop":
        scale = max(height / src_h, width / src_w)
        new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        x = x[:, :, top:top + height, left:left + width]
    else:
        if height < src_h or width < src_w:
            scale = min(height / src_h, width / src_w)
            new_h, new_w = round(src_h * scale), round(src_w * scale)
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        new_h, new_w = x.shape[-2:]
        pad_b, pad_r = height - new_h, width - new_w
        if pad_b > 0 or pad_r > 0:
            x = F.pad(x, (0, pad_r, 0, pad_b), mode="reflect" if pad_b < new_h and pad_r < new_w else "replicate")
    return x.permute(1, 0, 2, 3)[None]  # (1, 3, F, height, width)


def exr_conditioning(frames: Tensor, height: int, width: int, color_space: HDRColorSpace | str, *,
                     fit: str = "reflect_pad", dtype: torch.dtype = torch.float32) -> Tensor:
    """EXR pixels (H, W, 3) or (F, H, W, 3), as `color_space` declares them -> VAE pixels (1, 3, F, height, width)
    in [-1, 1] (load_exr_conditioning_hdr): fit in linear light, then ACEScct-encode from the declared primaries
    (ACESCCT input: clamp the codes to [0, 1]). Stills use fit='center_crop', folders 'reflect_pad'."""
    space = HDRColorSpace.parse(color_space)
    _check_rgb(frames, "EXR frames", (3, 4))
    _check_finite(frames, "EXR frames")
    x = fit_frames(frames, height, width, fit).permute(0, 2, 3, 4, 1)  # (1, F, h, w, 3)
    v = x.clamp(0.0, 1.0) if space.is_log else space.transfer.to_working(x, space.primaries)
    return to_vae_range(v).permute(0, 4, 1, 2, 3).to(dtype)


def sdr_conditioning(frames: Tensor, height: int, width: int, *, fit: str = "reflect_pad",
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """An SDR Rec.709 reference (H, W, 3) or (F, H, W, 3) in 0..255 -> VAE pixels (1, 3, F, height, width) for the
    HDR IC-LoRA (load_video_conditioning_hdr): fit, v = clamp(x / 255, 0, 1) (LogC3's compress_ldr), 2 v - 1."""
    _check_rgb(frames, "SDR frames", (3, 4))
    _check_finite(frames, "SDR frames")
    v = (fit_frames(frames, height, width, fit) / 255.0).clamp(0.0, 1.0)
    return to_vae_range(v).to(dtype)


# ------------------------------------------------------------------------------------------------ decode side


def decode_hdr(video: Tensor, transfer: Transfer, primaries: Primaries = Primaries.REC709) -> Tensor:
    """Decoded VAE pixels (B, 3, F, H, W) in [-1, 1] -> scene-linear (B, F, H, W, 3) float32 in `primaries`, >= 0
    (decode_hdr_video / to_hdr_linear). Decode the VAE in float32 for HDR, as the official pipelines do."""
    if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be decoded VAE pixels (B, 3, F, H, W), got {getattr(video, 'shape', video)}")
    linear = transfer.decode(from_vae_range(video.float())).permute(0, 2, 3, 4, 1)  # decoded contiguous: as upstream
    return convert_primaries(linear, transfer.primaries, primaries).clamp(min=0.0)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear light, clipped to [0, 1], -> sRGB-encoded [0, 1] (IEC 61966-2-1): the SDR preview's tone map."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


# ------------------------------------------------------------------------------------------------ HLG

HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073
KR_2020, KB_2020 = 0.2627, 0.0593


def hlg_oetf(e: Tensor) -> Tensor:
    """BT.2100 HLG OETF: scene light E >= 0 (clamped) -> signal E' clamped to [0, 1] (E = 1 gives 1 - 4.5e-9 with
    the standard's 8-digit constants; the clamp is on the signal, as upstream)."""
    e = e.clamp(min=0.0)
    log = HLG_A * torch.log((12 * e - HLG_B).clamp(min=1e-12)) + HLG_C
    return torch.where(e <= 1 / 12, torch.sqrt(3 * e), log).clamp(0.0, 1.0)


def hlg_inverse_oetf(s: Tensor) -> Tensor:
    """BT.2100 HLG inverse OETF: signal E' in [0, 1] (clamped) -> scene light E in [0, 1]."""
    s = s.clamp(0.0, 1.0)
    return torch.where(s <= 0.5, s * s / 3, (torch.exp((s - HLG_C) / HLG_A) + HLG_B) / 12)


def hlg_eotf(s: Tensor, peak: float = 1000.0, black: float = 0.0) -> Tensor:
    """BT.2100 HLG reference EOTF: signal R'G'B' (..., 3) in Rec.2020 -> display light in cd/m^2 for a display of
    nominal peak `peak` and black level `black` (gamma = 1.2 + 0.42 log10(peak / 1000))."""
    _check_rgb(s, "HLG signal")
    if not (peak > 0 and 0 <= black < peak):
        raise ValueError(f"need peak > 0 and 0 <= black < peak (cd/m^2), got peak={peak} black={black}")
    gamma = 1.2 + 0.42 * math.log10(peak / 1000.0)
    beta = math.sqrt(3 * (black / peak) ** (1 / gamma))
    e = hlg_inverse_oetf((1 - beta) * s + beta)
    ys = (e * torch.tensor([KR_2020, 1 - KR_2020 - KB_2020, KB_2020], dtype=e.dtype, device=e.device)).sum(-1, True)
    return peak * ys.clamp(min=0) ** (gamma - 1) * e


def hlg_signal(rgb: Tensor, primaries: Primaries = Primaries.REC709, white_signal: float = 0.75,
               rolloff: float | None = None) -> Tensor:
    """Scene-linear (..., 3) in `primaries` -> the master's HLG signal (..., 3) in [0, 1], Rec.2020 primaries
    (HlgGpuConverter.to_hlg_signal_): diffuse white 1.0 -> `white_signal`, highlights rolled off toward 1.0."""
    _check_rgb(rgb, "rgb")
    if not 0.5 < white_signal < 1:
        raise ValueError(f"white_signal must be in (0.5, 1) (HLG 75% is reference white), got {white_signal}")
    w = float(hlg_inverse_oetf(torch.tensor(white_signal, dtype=torch.float64)))
    k = w / (1 - w) if rolloff is None else rolloff
    lin = torch.nan_to_num(convert_primaries(rgb.float(), primaries, Primaries.REC2020).clamp(min=0.0),
                           nan=0.0, neginf=0.0)
    e = torch.where(lin <= 1.0, lin * w, 1.0 - (1.0 - w) * torch.exp(-k * (lin - 1.0)))
    return hlg_oetf(e)


def yuv420p10(signal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """R'G'B' signal (F, H, W, 3) in [0, 1] -> BT.2020 NCL narrow-range 10-bit planes Y (F, H, W) and Cb, Cr
    (F, H/2, W/2), int32 code values; chroma is the mean of each 2x2 block (rgb_to_yuv420p10). H, W even."""
    _check_rgb(signal, "signal", (4,))
    if signal.shape[1] % 2 or signal.shape[2] % 2:
        raise ValueError(f"4:2:0 needs even height and width, got {signal.shape[1]}x{signal.shape[2]}")
    kr, kb = KR_2020, KB_2020
    kg = 1 - kr - kb
    m = torch.tensor([[kr, kg, kb], [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                      [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]], dtype=torch.float32, device=signal.device)
    yuv = signal.float() @ m.T  # (F, H, W, 3): Y in [0, 1], Cb / Cr in [-0.5, 0.5]
    y = yuv[..., 0]
    cb, cr = F.avg_pool2d(yuv[..., 1:].permute(0, 3, 1, 2), 2).unbind(1)  # (F, H/2, W/2) each

    def code(v: Tensor, scale: float, offset: float) -> Tensor:
        return (v * (scale * 4) + offset * 4).round().clamp(0, 1023).to(torch.int32)

    return code(y, 219, 16), code(cb, 224, 128), code(cr, 224, 128)


def write_hlg_video(path: str | os.PathLike, frames: Tensor, fps: float, *,
                    primaries: Primaries = Primaries.REC709, white_signal: float = 0.75, crf: int = 12,
                    preset: str = "ultrafast", lossless: bool = False) -> None:
    """Scene-linear frames (F, H, W, 3) in `primaries` -> HEVC Main10 mp4 (yuv420p10le, libx265), tagged BT.2020 /
    HLG (arib-std-b67) / bt2020nc / limited range, written atomically (encode_linear_hdr_frames_to_hlg_mp4, video only).
    `lossless` makes the planes round-trip exactly (for tests)."""
    import av
    import numpy as np

    _check_rgb(frames, "frames", (4,))
    _check_finite(frames, "frames")
    n, height, width = frames.shape[:3]
    if n == 0 or height % 2 or width % 2 or min(height, width) < 16:
        raise ValueError(f"need >= 1 frame of even height and width >= 16 (libx265), got {tuple(frames.shape)}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    params = "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc:range=limited:repeat-headers=1:info=0"
    # bframes=0: with B-frames this libx265 build hands out garbage DTS on short clips, which the mp4 muxer refuses
    params += ":bframes=0:log-level=error" + (":lossless=1" if lossless else "")
    with atomic_file(path, "wb") as f, av.open(f, mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx265", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        stream.codec_tag = "hvc1"
        stream.options = {"crf": str(crf), "preset": preset, "x265-params": params}
        ctx = stream.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 9, 18, 9, 1  # AVCOL_* bt2020/HLG/ncl/mpeg
        for i in range(n):
            planes = yuv420p10(hlg_signal(frames[i:i + 1], primaries, white_signal))
            frame = av.VideoFrame(width, height, "yuv420p10le")
            for plane, src in zip(frame.planes, planes):
                src = src[0].numpy().astype(np.uint16)
                np.frombuffer(plane, dtype=np.uint16).reshape(plane.height, -1)[:, :src.shape[1]] = src
            frame.colorspace, frame.color_range = 9, 1
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ------------------------------------------------------------------------------------------------ OpenEXR

_EXR_MAGIC, _EXR_VERSION = 20000630, 2
_EXR_COMPRESSION = {"none": 0, "zips": 2, "zip": 3}
_EXR_COMPRESSION_NAMES = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab", "htj2k")
_EXR_LINES = {0: 1, 2: 1, 3: 16}  # scanlines per chunk
_EXR_PIXEL = {0: "<u4", 1: "<f2", 2: "<f4"}  # UINT, HALF, FLOAT


def _attr(name: str, kind: str, payload: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(payload)) + payload


def _zip_pack(raw: bytes, level: int) -> bytes:
    import numpy as np

    a = np.frombuffer(raw, dtype=np.uint8)
    t = np.concatenate([a[0::2], a[1::2]])  # even bytes, then odd bytes
    d = t.copy()
    d[1:] = (t[1:].astype(np.int16) - t[:-1] + 128).astype(np.uint8)  # mod 256
    return zlib.compress(d.tobytes(), level)


def _zip_unpack(data: bytes, size: int) -> bytes:
    import numpy as np

    d = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
    if d.size != size:
        raise ValueError(f"a ZIP block inflates to {d.size} bytes, expected {size}")
    t = ((np.cumsum(d, dtype=np.int64) - 128 * np.arange(size)) & 0xFF).astype(np.uint8)
    a = np.empty(size, dtype=np.uint8)
    half = (size + 1) // 2
    a[0::2], a[1::2] = t[:half], t[half:]
    return a.tobytes()


def write_exr(path: str | os.PathLike, image: Tensor, *, half: bool = True, compression: str = "zip",
              primaries: Primaries | None = Primaries.REC709, color_space: str | None = "sRGB",
              zip_level: int = 6) -> None:
    """(H, W, 3) float -> a scanline OpenEXR file with channels R, G, B, written atomically (save_exr_tensor).
    half: HALF (float16, values beyond 65504 become inf) else FLOAT; compression 'zip' (16 lines), 'zips' or 'none';
    `primaries` / `color_space` fill the `chromaticities` / `colorSpace` attributes (None leaves them out)."""
    import numpy as np

    _check_rgb(image, "image", (3,))
    if compression not in _EXR_COMPRESSION:
        raise ValueError(f"EXR compression must be one of {', '.join(_EXR_COMPRESSION)}, got {compression!r}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"an EXR image needs at least one pixel, got {tuple(image.shape)}")
    kind = 1 if half else 2
    pixels = image.detach().float().cpu().numpy().astype(_EXR_PIXEL[kind])  # (H, W, 3)
    planes = np.ascontiguousarray(pixels[:, :, ::-1].transpose(0, 2, 1))  # (H, 3, W): channels B, G, R per line
    code = _EXR_COMPRESSION[compression]
    lines = _EXR_LINES[code]

    channels = b"".join(c.encode() + b"\0" + struct.pack("<iB3xii", kind, 0, 1, 1) for c in "BGR") + b"\0"
    box = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    one = struct.pack("<f", 1.0)
    attrs = {"channels": ("chlist", channels), "compression": ("compression", bytes([code])),
             "dataWindow": ("box2i", box), "displayWindow": ("box2i", box), "lineOrder": ("lineOrder", b"\0"),
             "pixelAspectRatio": ("float", one), "screenWindowCenter": ("v2f", struct.pack("<ff", 0, 0)),
             "screenWindowWidth": ("float", one)}
    if primaries is not None:
        attrs["chromaticities"] = ("chromaticities", struct.pack("<8f", *primaries.chromaticities))
    if color_space is not None:
        attrs["colorSpace"] = ("string", color_space.encode())
    header = struct.pack("<ii", _EXR_MAGIC, _EXR_VERSION)
    header += b"".join(_attr(k, *attrs[k]) for k in sorted(attrs)) + b"\0"

    chunks = []
    for y in range(0, height, lines):
        raw = planes[y:y + lines].tobytes()
        data = raw if code == 0 else _zip_pack(raw, zip_level)
        data = raw if len(data) >= len(raw) else data  # stored raw when zip does not help (as OpenEXR does)
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    offsets, at = [], len(header) + 8 * len(chunks)
    for c in chunks:
        offsets.append(at)
        at += len(c)
    with atomic_file(path, "wb") as f:
        f.write(header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(chunks))


def _exr_header(data: bytes, path) -> tuple[dict, int]:
    """Parse the magic, version and header attributes; returns ({name: (type, payload)}, offset of the table)."""
    if len(data) < 8 or struct.unpack_from("<i", data)[0] != _EXR_MAGIC:
        raise ValueError(f"{path} is not an OpenEXR file (bad magic number)")
    version = struct.unpack_from("<i", data, 4)[0]
    if version & 0xFF != _EXR_VERSION or version & 0x1A00:  # tiled 0x200, deep 0x800, multi-part 0x1000
        raise ValueError(f"{path}: only single-part scanline OpenEXR 2 files are supported (version {version:#x})")
    attrs, at = {}, 8
    try:
        while data[at] != 0:
            name_end = data.index(b"\0", at)
            type_end = data.index(b"\0", name_end + 1)
            (size,) = struct.unpack_from("<i", data, type_end + 1)
            name, kind = data[at:name_end].decode(), data[name_end + 1:type_end].decode()
            attrs[name] = (kind, data[type_end + 5:type_end + 5 + size])
            at = type_end + 5 + size
    except (IndexError, ValueError, struct.error):
        raise ValueError(f"{path}: truncated OpenEXR header") from None
    return attrs, at + 1


def _exr_channels(payload: bytes) -> list[tuple[str, int]]:
    out, at = [], 0
    while payload[at] != 0:
        end = payload.index(b"\0", at)
        kind, _, xs, ys = struct.unpack_from("<iB3xii", payload, end + 1)
        if (xs, ys) != (1, 1):
            raise ValueError(f"subsampled EXR channels are not supported (channel {payload[at:end].decode()!r})")
        out.append((payload[at:end].decode(), kind))
        at = end + 17
    return out


def read_exr_header(path: str | os.PathLike) -> dict:
    """The header of an EXR file: width, height, channels {name: 'half'|'float'|'uint'}, compression, and the
    chromaticities / colorSpace tags when present."""
    data = Path(path).read_bytes()
    attrs, _ = _exr_header(data, path)
    return _describe(attrs, path)


def _describe(attrs: dict, path) -> dict:
    for need in ("channels", "compression", "dataWindow"):
        if need not in attrs:
            raise ValueError(f"{path}: the EXR header has no {need!r} attribute")
    x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"][1])
    code = attrs["compression"][1][0]
    out = {"width": x1 - x0 + 1, "height": y1 - y0 + 1, "y_min": y0,
           "channels": {n: {0: "uint", 1: "half", 2: "float"}.get(k, str(k)) for n, k in _exr_channels(
               attrs["channels"][1])},
           "compression": _EXR_COMPRESSION_NAMES[code] if code < len(_EXR_COMPRESSION_NAMES) else str(code)}
    if "chromaticities" in attrs:
        out["chromaticities"] = struct.unpack("<8f", attrs["chromaticities"][1])
    if "colorSpace" in attrs:
        out["colorSpace"] = attrs["colorSpace"][1].decode(errors="replace")
    return out


def read_exr(path: str | os.PathLike) -> Tensor:
    """A scanline EXR file -> (H, W, 3) float32 RGB, values as stored (half is widened exactly): R, G, B, or a lone
    Y channel broadcast to three; other channels (alpha, ...) are dropped (read_exr)."""
    import numpy as np

    data = Path(path).read_bytes()
    attrs, at = _exr_header(data, path)
    info = _describe(attrs, path)
    chans = _exr_channels(attrs["channels"][1])  # sorted by name in the file
    code = attrs["compression"][1][0]
    if code not in _EXR_LINES:
        name = info["compression"]
        raise ValueError(f"{path}: EXR compression {name!r} is not supported; supported: none, zips, zip")
    if any(k not in _EXR_PIXEL for _, k in chans):
        raise ValueError(f"{path}: unknown EXR pixel type in channels {info['channels']}")
    width, height, y0, lines = info["width"], info["height"], info["y_min"], _EXR_LINES[code]
    sizes = [np.dtype(_EXR_PIXEL[k]).itemsize * width for _, k in chans]
    line_bytes = sum(sizes)
    n_chunks = -(-height // lines)
    try:
        offsets = struct.unpack_from(f"<{n_chunks}Q", data, at)
    except struct.error:
        raise ValueError(f"{path}: truncated OpenEXR offset table") from None
    planes = {name: np.empty((height, width), dtype=np.float32) for name, _ in chans}
    for off in offsets:
        try:
            y, size = struct.unpack_from("<ii", data, off)
        except struct.error:
            raise ValueError(f"{path}: an EXR chunk offset points past the end of the file") from None
        row = y - y0
        n = min(lines, height - row)
        if not 0 <= row < height or off + 8 + size > len(data):
            raise ValueError(f"{path}: truncated or corrupt EXR chunk at offset {off}")
        raw = data[off + 8:off + 8 + size]
        if size < n * line_bytes:  # compressed; a chunk stored raw has the full size
            raw = _zip_unpack(raw, n * line_bytes)
        block = np.frombuffer(raw, dtype=np.uint8).reshape(n, line_bytes)
        col = 0
        for (name, kind), nb in zip(chans, sizes):
            planes[name][row:row + n] = block[:, col:col + nb].copy().view(_EXR_PIXEL[kind])
            col += nb
    if all(c in planes for c in "RGB"):
        rgb = np.stack([planes[c] for c in "RGB"], axis=-1)
    elif "Y" in planes:
        rgb = np.repeat(planes["Y"][..., None], 3, axis=-1)
    else:
        raise ValueError(f"{path}: an EXR needs R, G, B or Y channels, found {sorted(planes)}")
    return torch.from_numpy(rgb)


def write_exr_frames(folder: str | os.PathLike, frames: Tensor, **options) -> list[Path]:
    """(F, H, W, 3) -> folder/frame_00000.exr, ... (write_exr options); returns the paths."""
    _check_rgb(frames, "frames", (4,))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"frame_{i:05d}.exr" for i in range(frames.shape[0])]
    for path, frame in zip(paths, frames):
        write_exr(path, frame, **options)
    return paths


def read_exr_frames(source: str | os.PathLike, max_frames: int | None = None) -> Tensor:
    """An .exr still or a folder of *.exr frames (sorted by name) -> (F, H, W, 3) float32."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".exr":
        paths = [source]
    elif source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() == ".exr")
        if not paths:
            raise ValueError(f"no .exr frames in {source}")
    else:
        raise ValueError(f"EXR source must be an .exr file or a folder of .exr frames, got {str(source)!r}")
    frames = [read_exr(p) for p in paths[:max_frames]]
    if any(f.shape != frames[0].shape for f in frames):
        raise ValueError(f"EXR frames in {source} differ in size: {sorted({tuple(f.shape) for f in frames})}")
    return torch.stack(frames)


# ------------------------------------------------------------------------------------------------ outputs


def write_hdr_outputs(path: str | os.PathLike, video: Tensor, fps: float, color_space: HDRColorSpace | str,
                      transfer: Transfer | None = None, **hlg_options) -> Path:
    """The native `--hdr` sink (encode_video with color_space): decoded VAE pixels (3, F, H, W) or (1, 3, F, H, W)
    in [-1, 1] -> half EXR frames in `<stem>_exr/` in the colour space's own encoding, and the BT.2020 / HLG master
    at `path` from Rec.709 linear. `transfer`: the curve the pixels carry (None: the colour space's, ACEScct; the
    HDR IC-LoRA's LogC3 output: Transfer.LOGC3, its acescct EXR frames then re-encoded from the light). Returns
    the EXR folder."""
    space = HDRColorSpace.parse(color_space)
    if transfer is not None and transfer is not space.transfer:
        linear709 = decode_hdr(video[None] if isinstance(video, Tensor) and video.ndim == 4 else video, transfer)[0]
        exr = (space.transfer.to_working(linear709) if space.is_log
               else convert_primaries(linear709, Primaries.REC709, space.primaries).clamp(min=0.0))
        folder = Path(path).parent / f"{Path(path).stem}_exr"
        write_exr_frames(folder, exr, primaries=space.primaries, color_space=space.exr_tag)
        write_hlg_video(path, linear709, fps, **hlg_options)
        return folder
    video = video[None] if isinstance(video, Tensor) and video.ndim == 4 else video
    if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[:2] != (1, 3):
        raise ValueError(f"video must be decoded VAE pixels (3, F, H, W) or (1, 3, F, H, W), got "
                         f"{getattr(video, 'shape', video)}")
    path = Path(path)
    linear709 = decode_hdr(video, space.transfer)[0]  # (F, H, W, 3)
    if space.is_log:
        exr = from_vae_range(video.float())[0].permute(1, 2, 3, 0)
    elif space.primaries is Primaries.REC709:
        exr = linear709
    else:
        exr = decode_hdr(video, space.transfer, space.primaries)[0]
    folder = path.parent / f"{path.stem}_exr"
    write_exr_frames(folder, exr, primaries=space.primaries, color_space=space.exr_tag)
    write_hlg_video(path, linear709, fps, **hlg_options)
    return folder
