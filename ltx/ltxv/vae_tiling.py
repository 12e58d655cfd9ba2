"""Tiled VAE encode/decode over time, height and width with overlap blending, for bounded memory.

The VAE has no global normalization (PixelNorm is per position), so a tile computes almost what the full
pass computes; only positions near a cut see the edge padding instead of their neighbours. Tiles overlap, and
the overlap is cross-faded with linear ramps (per axis, normalized to sum to 1, so a constant input stays
constant and a single tile reproduces the untiled pass bitwise). With real checkpoints the seams are
invisible at the default overlaps; `tests/test_vae.py` states the measured tiled-vs-untiled error.

Units: a `Tiling` is in *latent* units (frames, rows, columns) for both directions. A latent window
[a, a + n) covers pixel rows/columns [32a, 32(a + n)) and pixel frames [8a, 8(a + n - 1) + 1): a decoder
tile that starts at latent frame a > 0 emits its first latent frame as a single frame, which is pixel frame 8a
(the last of that latent's 8). An encoder tile for latent frames [a, a + n), a > 0, reads pixel frames
[8(a - 1), 8(a + n - 1) + 1) and drops its first latent (which encodes frame 8(a - 1) as a stand-alone image).

Memory (`decode_memory_bytes`, `encode_memory_bytes`): the working set of one pass is estimated by walking the
block list: at each block, the tensors alive at once (input, normalized copy, time-padded copy, conv output,
for depth-to-space also the shuffled and residual copies) times their sizes; the peak over blocks, plus the
weights and the output buffer of a tiled pass. `choose_tiling` shrinks tiles (largest axis first) until one
tile's estimate fits a budget. Checked against the measured peak RSS on CPU (fp32, tools/bench_vae.py, base
width 16, 9 frames): decode 512 / 1024 px measured 67 / 297 MiB vs estimated 87 / 348 MiB; encode 66 / 408
MiB vs 117 / 468 MiB: an upper bound within ~1.3x once the sizes dominate fixed overheads (~20 MiB).

Decode noise (0.9.1+) is drawn once for the whole latent, before tiling, as in the untiled pass; the 0.9.1
noise injection inside the decoder draws per tile.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx.ltxv.vae import VAEConfig, VideoVAE, check_latent_shape, check_video_shape

DEFAULT_OVERLAP = (2, 2, 2)  # latent frames / rows / columns shared by neighbouring tiles (= 9 frames, 64 px)


@dataclass(frozen=True)
class Tiling:
    """Tile size and overlap in latent units: (frames, rows, columns)."""

    tile: tuple[int, int, int]
    overlap: tuple[int, int, int] = DEFAULT_OVERLAP

    def __post_init__(self):
        for n, o in zip(self.tile, self.overlap):
            if n < 1 or o < 0 or (o >= n and n > 1):
                raise ValueError(f"invalid tiling {self}: each tile size must be >= 1 and larger than its overlap")


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering [0, n) with at least `overlap` shared; the last tile ends at n."""
    if tile >= n:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, n - tile, stride))
    return starts + [n - tile]


def _axis_weights(spans: list[tuple[int, int]], length: int) -> list[Tensor]:
    """Per-tile cross-fade weights along one axis (output units), summing to 1 at every position."""
    ramps = []
    for k, (p, q) in enumerate(spans):
        x = torch.arange(p, q, dtype=torch.float64) + 0.5
        w = torch.ones(q - p, dtype=torch.float64)
        if k > 0 and spans[k - 1][1] > p:  # fade in over the overlap with the previous tile
            w = torch.minimum(w, (x - p) / (spans[k - 1][1] - p))
        if k + 1 < len(spans) and spans[k + 1][0] < q:  # fade out over the overlap with the next tile
            w = torch.minimum(w, (q - x) / (q - spans[k + 1][0]))
        ramps.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (p, q), w in zip(spans, ramps):
        total[p:q] += w
    if not bool((total > 0).all()):  # temporal tiles must share a latent frame: each emits 8(n - 1) + 1 frames
        raise ValueError(f"tiles {spans} leave output positions of 0..{length} uncovered; use overlap >= 1 in time")
    return [(w / total[p:q]).float() for (p, q), w in zip(spans, ramps)]


def _frame_span(a: int, n: int, st: int) -> tuple[int, int]:
    return st * a, st * (a + n - 1) + 1  # pixel frames of latent frames [a, a + n)


def _plan(latent_shape: tuple[int, int, int], tiling: Tiling, cfg: VAEConfig):
    """Latent windows per axis, their output spans (pixel units) and the blend weights per axis."""
    st, ss = cfg.temporal_factor, cfg.spatial_factor
    plans = []
    for axis, (n, tile, overlap) in enumerate(zip(latent_shape, tiling.tile, tiling.overlap)):
        starts = tile_starts(n, tile, overlap)
        windows = [(a, min(tile, n)) for a in starts]
        if axis == 0:
            spans = [_frame_span(a, m, st) for a, m in windows]
            length = st * (n - 1) + 1
        else:
            spans = [(ss * a, ss * (a + m)) for a, m in windows]
            length = ss * n
        plans.append((windows, spans, _axis_weights(spans, length)))
    return plans


def tiled_decode(
    vae: VideoVAE,
    latents: Tensor,
    timestep: float | Tensor | None = None,
    *,
    noise_scale: float | Tensor = 0.0,
    generator: torch.Generator | None = None,
    tiling: Tiling | None = None,
    memory_budget: int | None = None,
) -> Tensor:
    """`vae.decode` in tiles: normalized latents (B, C, F', H', W') -> video (B, 3, 8(F'-1)+1, 32H', 32W').

    Tiles are `tiling` if given, else chosen by `choose_tiling` so one tile's working memory fits
    `memory_budget` bytes (default 2 GiB). The output buffer itself is allocated in full.
    """
    cfg = vae.cfg
    z, t = vae.decoder_input(latents, timestep, noise_scale, generator)
    B, _, Fl, Hl, Wl = z.shape
    if tiling is None:
        tiling = choose_tiling(cfg, (B, *z.shape[1:]), memory_budget or 2 << 30, "decode", z.dtype)
    (tw, ts, tweights), (hw, hs, hweights), (ww, ws, wweights) = _plan((Fl, Hl, Wl), tiling, cfg)
    st, ss = cfg.temporal_factor, cfg.spatial_factor
    out = z.new_zeros(B, cfg.out_channels, st * (Fl - 1) + 1, ss * Hl, ss * Wl)
    for (i, (a, n)), (j, (y, m)), (k, (x, l)) in itertools.product(enumerate(tw), enumerate(hw), enumerate(ww)):
        tile = vae.decoder(z[:, :, a : a + n, y : y + m, x : x + l], t, generator)  # (B, 3, f, h, w)
        weight = tweights[i].to(tile)[:, None, None] * hweights[j].to(tile)[:, None] * wweights[k].to(tile)
        (f0, f1), (y0, y1), (x0, x1) = ts[i], hs[j], ws[k]
        out[:, :, f0:f1, y0:y1, x0:x1].addcmul_(tile, weight)
        del tile
    return out


def tiled_encode_moments(
    vae: VideoVAE, video: Tensor, *, tiling: Tiling | None = None, memory_budget: int | None = None
) -> Tensor:
    """`vae.encode_moments` in tiles: video (B, 3, F, H, W) -> moments (B, 2C, F', H', W')."""
    cfg = vae.cfg
    check_video_shape(tuple(video.shape), cfg)
    B, _, Fr, H, W = video.shape
    st, ss = cfg.temporal_factor, cfg.spatial_factor
    latent = ((Fr - 1) // st + 1, H // ss, W // ss)
    if tiling is None:
        tiling = choose_tiling(cfg, (B, cfg.latent_channels, *latent), memory_budget or 2 << 30, "encode", video.dtype)
    plans = []
    for n, tile, overlap in zip(latent, tiling.tile, tiling.overlap):
        windows = [(a, min(tile, n)) for a in tile_starts(n, tile, overlap)]
        spans = [(a, a + m) for a, m in windows]
        plans.append((windows, _axis_weights(spans, n)))
    (tw, tweights), (hw, hweights), (ww, wweights) = plans
    out = video.new_zeros(B, 2 * cfg.latent_channels, *latent)
    for (i, (a, n)), (j, (y, m)), (k, (x, l)) in itertools.product(enumerate(tw), enumerate(hw), enumerate(ww)):
        f0 = st * (a - 1) if a > 0 else 0  # one extra latent of causal context, dropped below
        f1 = st * (a + n - 1) + 1
        tile = vae.encoder(video[:, :, f0:f1, ss * y : ss * (y + m), ss * x : ss * (x + l)])
        if a > 0:
            tile = tile[:, :, 1:]
        weight = tweights[i].to(tile)[:, None, None] * hweights[j].to(tile)[:, None] * wweights[k].to(tile)
        out[:, :, a : a + n, y : y + m, x : x + l].addcmul_(tile, weight)
        del tile
    return out


def tiled_encode(
    vae: VideoVAE,
    video: Tensor,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    tiling: Tiling | None = None,
    memory_budget: int | None = None,
) -> Tensor:
    """`vae.encode` in tiles: video -> normalized latents (posterior mean, or a sample)."""
    moments = tiled_encode_moments(vae, video, tiling=tiling, memory_budget=memory_budget)
    return vae.posterior(moments, sample=sample, generator=generator)


# ------------------------------------------------------------------------------------------------ memory


def _weights_bytes(cfg: VAEConfig, part: str, itemsize: int) -> int:
    with torch.device("meta"):
        module = getattr(VideoVAE(cfg), part)
    return sum(p.numel() for p in module.parameters()) * itemsize


def decode_activation_elements(cfg: VAEConfig, latent_shape: tuple[int, ...]) -> int:
    """Peak number of activation elements alive at once in one untiled decoder pass (see the file docstring)."""
    B, _, f, h, w = latent_shape
    c = cfg.decoder_base_channels * cfg.decoder_width_factor
    peak = B * (cfg.latent_channels * f * h * w + 3 * c * (f + 2) * h * w)  # conv_in: input, padded, output
    for b in reversed(cfg.decoder_blocks):
        n = B * c * (f + 2) * h * w  # time-padded size of the block input
        if b.name == "compress_all":
            c2, f2, h2, w2 = c // b.multiplier, 2 * f - 1, 2 * h, 2 * w
            n_out = B * c2 * f2 * h2 * w2
            peak = max(peak, 2 * n + 8 * n // b.multiplier + (3 if b.residual else 1) * n_out)
            c, f, h, w = c2, f2, h2, w2
        else:
            c2 = c // b.multiplier if b.name == "res_x_y" else c
            peak = max(peak, 3 * n + B * c2 * (f + 2) * h * w + (n if b.name == "res_x_y" else 0))
            c = c2
    p2 = cfg.patch_size**2
    n = B * c * (f + 2) * h * w
    return max(peak, 3 * n + 2 * B * cfg.out_channels * p2 * f * h * w)  # head: norm, pad, conv_out, unpatchify


def encode_activation_elements(cfg: VAEConfig, video_shape: tuple[int, ...]) -> int:
    """Peak number of activation elements alive at once in one untiled encoder pass."""
    B, _, f, h, w = video_shape
    p = cfg.patch_size
    h, w = h // p, w // p
    c = cfg.encoder_base_channels
    # conv_in: the patchified copy, its time-padded copy and oneDNN's reordered copy of it, plus the output
    peak = B * (3 * cfg.in_channels * p * p * (f + 2) * h * w + 2 * c * f * h * w)
    for b in cfg.encoder_blocks:
        n = B * c * (f + 2) * h * w
        if b.name == "res_x":
            peak = max(peak, 4 * n)
        elif b.name == "res_x_y":
            peak = max(peak, 4 * n + 2 * B * c * b.multiplier * (f + 2) * h * w)
            c *= b.multiplier
        else:
            st, sh, sw = (2, 2, 2) if b.name in ("compress_all", "compress_all_res") else (
                (1, 2, 2) if b.name == "compress_space_res" else (2, 1, 1))  # fmt: skip
            f, h, w = (f - 1) // st + 1, h // sh, w // sw
            peak = max(peak, 4 * n)  # input, padded, the averaged skip and the conv output (both <= n)
            c = c if b.name == "compress_all" else c * b.multiplier
    return max(peak, 3 * B * c * (f + 2) * h * w + 4 * B * cfg.latent_channels * f * h * w)


def decode_memory_bytes(
    cfg: VAEConfig, latent_shape: tuple[int, ...], dtype: torch.dtype = torch.float32, tiling: Tiling | None = None
) -> int:
    """Estimated peak bytes of a decode (untiled, or with `tiling`): weights + one tile's activations + output."""
    B, C, f, h, w = latent_shape
    item = torch.empty((), dtype=dtype).element_size()
    tile = (f, h, w) if tiling is None else tuple(min(n, t) for n, t in zip((f, h, w), tiling.tile))
    out = 0 if tiling is None else B * cfg.out_channels * (cfg.temporal_factor * (f - 1) + 1) * (
        cfg.spatial_factor**2 * h * w)  # fmt: skip
    return _weights_bytes(cfg, "decoder", item) + item * (decode_activation_elements(cfg, (B, C, *tile)) + out)


def encode_memory_bytes(
    cfg: VAEConfig, video_shape: tuple[int, ...], dtype: torch.dtype = torch.float32, tiling: Tiling | None = None
) -> int:
    """Estimated peak bytes of an encode (untiled, or with `tiling` in latent units)."""
    B, _, Fr, H, W = video_shape
    item = torch.empty((), dtype=dtype).element_size()
    st, ss = cfg.temporal_factor, cfg.spatial_factor
    if tiling is None:
        shape, out = video_shape, 0
    else:
        lf = min((Fr - 1) // st + 1, tiling.tile[0] + 1)  # + 1: the extra latent of causal context
        lh, lw = min(H // ss, tiling.tile[1]), min(W // ss, tiling.tile[2])
        shape = (B, cfg.in_channels, st * (lf - 1) + 1, ss * lh, ss * lw)
        out = B * 2 * cfg.latent_channels * ((Fr - 1) // st + 1) * (H // ss) * (W // ss)
    return _weights_bytes(cfg, "encoder", item) + item * (encode_activation_elements(cfg, shape) + out)


def choose_tiling(
    cfg: VAEConfig,
    latent_shape: tuple[int, ...],
    budget: int,
    direction: str = "decode",
    dtype: torch.dtype = torch.float32,
    overlap: tuple[int, int, int] = DEFAULT_OVERLAP,
) -> Tiling:
    """The largest tiles (in latent units) whose one-tile working set (activations, not weights) fits
    `budget` bytes.

    Shrinks the longest tile side by a quarter at a time (never below 2 * overlap + 1 latents), so tiles stay
    roughly cubic in latent units and the overlap overhead stays small; if even the smallest tile does not
    fit, returns the smallest.
    """
    check_latent_shape(tuple(latent_shape), cfg)
    B, C, f, h, w = latent_shape
    st, ss = cfg.temporal_factor, cfg.spatial_factor
    item = torch.empty((), dtype=dtype).element_size()

    def cost(tile: tuple[int, int, int]) -> int:
        if direction == "decode":
            return item * decode_activation_elements(cfg, (B, C, *tile))
        lf = tile[0] + (1 if tile[0] < f else 0)  # one latent of extra causal context
        shape = (B, cfg.in_channels, st * (lf - 1) + 1, ss * tile[1], ss * tile[2])
        return item * encode_activation_elements(cfg, shape)

    tile = [f, h, w]
    smallest = [min(n, 2 * o + 1) for n, o in zip((f, h, w), overlap)]
    while cost(tuple(tile)) > budget:
        axes = [a for a in (0, 1, 2) if tile[a] > smallest[a]]
        if not axes:
            break
        a = max(axes, key=lambda i: tile[i])
        tile[a] = max(smallest[a], math.ceil(tile[a] * 3 / 4))
    return Tiling(tuple(tile), tuple(min(o, max(n - 1, 0)) for o, n in zip(overlap, tile)))
