"""LTX-2.5's HDR colour path (ltx.ltx2.hdr) against the references that run here.

- diffusers 0.42.1 (`LTX2VideoHDRProcessor`): LogC3 decode, the decode post-process, the SDR reference fit.
- the official code (Lightricks/LTX-2 at 400fd31, read from the local mirror; skipped without it): ltx-core `hdr.py`,
  `color/primaries.py`, `color/yuv.py`, `color/hlg.py` and ltx-pipelines `media_io` (color_config, range_map, resize,
  exr with its OpenImageIO reader swapped for ours), executed with stub parents for their package imports.
- the standards, independently: ACEScct's constants from S-2016-001's definition, LogC3 18% grey, BT.2100 HLG's
  reference points and closed-form inverse, BT.2408's 203 cd/m^2 reference white, the primaries matrices derived from
  CIE chromaticities (+ Bradford), BT.2100's narrow-range code values.
- OpenEXR files: our writer / reader round trip bitwise, and FFmpeg's EXR decoder and encoder (via PyAV) as an
  independent implementation; the OpenEXR Python package when it is installed.
"""

from __future__ import annotations

import math
import types
from fractions import Fraction

import numpy as np
import pytest
import torch
from official_mirror import load_official

from ltx.ltx2 import hdr
from ltx.ltx2.conditioning import fit_image
from ltx.ltx2.hdr import HDRColorSpace, HDRLoraConfig, Primaries, Transfer

_OFFICIAL_FILES = {  # module -> path at HEAD, executed in this order
    "ltx_core.color.primaries": "packages/ltx-core/src/ltx_core/color/primaries.py",
    "ltx_core.hdr": "packages/ltx-core/src/ltx_core/hdr.py",
    "ltx_core.color.yuv": "packages/ltx-core/src/ltx_core/color/yuv.py",
    "ltx_core.color.hlg": "packages/ltx-core/src/ltx_core/color/hlg.py",
    "ltx_pipelines.utils.media_io.range_map": "packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/range_map.py",
    "ltx_pipelines.utils.media_io.resize": "packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/resize.py",
    "ltx_pipelines.utils.media_io.color_config":
        "packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/color_config.py",
    "ltx_pipelines.utils.media_io.exr": "packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/exr.py",
}


@pytest.fixture(scope="module")
def official():
    """The official modules by short name, executed from the mirror (tests/ltx2/official_mirror.py)."""
    stubs = {n: types.ModuleType(n) for n in ("ltx_core", "ltx_core.color", "ltx_core.types",
                                              "ltx_core.color.audio_mux", "ltx_pipelines", "ltx_pipelines.utils",
                                              "ltx_pipelines.utils.media_io", "OpenImageIO")}
    stubs["ltx_core.types"].Audio = object
    for fn in ("prepare_audio_stream", "validate_audio_waveform", "write_audio"):
        setattr(stubs["ltx_core.color.audio_mux"], fn, None)
    mods = {name.rsplit(".", 1)[-1]: m for name, m in load_official(_OFFICIAL_FILES, stubs).items()}
    mods["exr"].read_exr = hdr.read_exr  # the official reader is OpenImageIO's
    return mods


def _maxdiff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------------------------ curves


def test_logc3_decode_is_diffusers_bitwise():
    from diffusers.pipelines.ltx2.image_processor import LTX2VideoHDRProcessor

    for dtype in (torch.float32, torch.float64):
        v = torch.linspace(-0.2, 1.2, 20001, dtype=dtype)
        assert _maxdiff(hdr.logc3_decode(v), LTX2VideoHDRProcessor._logc3_decompress(v)) == 0.0


def test_decode_hdr_is_diffusers_postprocess_clamped_at_zero():
    """diffusers leaves LogC3's toe negative (down to -f/e); the official to_linear, and we, clamp it at 0."""
    from diffusers.pipelines.ltx2.image_processor import LTX2VideoHDRProcessor

    z = torch.rand(2, 3, 3, 8, 12, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    theirs = LTX2VideoHDRProcessor().postprocess_hdr_video(z, output_type="pt")  # (B, F, H, W, 3)
    ours = hdr.decode_hdr(z, Transfer.LOGC3)
    assert ours.shape == theirs.shape == (2, 3, 8, 12, 3)
    assert _maxdiff(ours, theirs.clamp(min=0)) == 0.0
    assert math.isclose(theirs.min().item(), -hdr.LOGC3_F / hdr.LOGC3_E, rel_tol=1e-6)


def test_logc3_encode_inverts_diffusers_decode():
    from diffusers.pipelines.ltx2.image_processor import LTX2VideoHDRProcessor

    x = torch.cat([torch.linspace(0, 0.01, 2001), torch.logspace(math.log10(0.0106), math.log10(55.0), 4001)]).double()
    back = LTX2VideoHDRProcessor._logc3_decompress(hdr.logc3_encode(x))
    assert _maxdiff(back, x) / 55.0 < 1e-13  # fp64, relative to the range's top


def test_curves_match_the_standards():
    # ACEScct (S-2016-001): the toe is the log segment's tangent at 2^-7.
    xb = hdr.ACESCCT_X_BREAK
    assert abs(hdr.ACESCCT_Y_BREAK - (math.log2(xb) + 9.72) / 17.52) < 1e-15
    assert abs(hdr.ACESCCT_A - 1 / (xb * math.log(2) * 17.52)) < 1e-12
    assert abs(hdr.ACESCCT_B - (hdr.ACESCCT_Y_BREAK - hdr.ACESCCT_A * xb)) < 1e-15
    x = torch.tensor([0.0, 0.18, 1.0], dtype=torch.float64)
    ref = torch.tensor([hdr.ACESCCT_B, (math.log2(0.18) + 9.72) / 17.52, 9.72 / 17.52], dtype=torch.float64)
    assert _maxdiff(hdr.acescct_encode(x), ref) < 1e-15
    # LogC3 EI 800: 18% grey is code 0.391 (10-bit 400); the two segments meet at the cut to the constants' 6 digits.
    assert abs(hdr.logc3_encode(torch.tensor(0.18, dtype=torch.float64)).item() - 0.391007) < 1e-6
    cut = hdr.LOGC3_CUT
    assert abs(hdr.LOGC3_E * cut + hdr.LOGC3_F - (hdr.LOGC3_C * math.log10(hdr.LOGC3_A * cut + hdr.LOGC3_B)
                                                  + hdr.LOGC3_D)) < 2e-6
    # round trips (fp64) over each curve's whole range
    for t, top in ((Transfer.LOGC3, (10 ** ((1 - hdr.LOGC3_D) / hdr.LOGC3_C) - hdr.LOGC3_B) / hdr.LOGC3_A),
                   (Transfer.ACESCCT, 2 ** 7.8)):
        lin = torch.cat([torch.linspace(0, 0.02, 1001, dtype=torch.float64),
                         torch.logspace(-2, math.log10(top), 3001, dtype=torch.float64)])
        if t is Transfer.LOGC3:  # the constants' seam: (cut, cut + 5e-8] decodes through the linear branch
            lin = torch.cat([lin, torch.tensor([cut, cut + 1e-8], dtype=torch.float64)])
            seam = (lin >= cut) & (lin <= cut + 5e-8)
            gap = hdr.LOGC3_E * cut + hdr.LOGC3_F - (hdr.LOGC3_C * math.log10(hdr.LOGC3_A * cut + hdr.LOGC3_B)
                                                    + hdr.LOGC3_D)  # 2.5e-7
            assert _maxdiff(t.decode(t.encode(lin[seam])), lin[seam]) <= gap / hdr.LOGC3_E * (1 + 1e-9)
            lin = lin[~seam]
        assert _maxdiff(t.decode(t.encode(lin)), lin) / top < 1e-13
        v = torch.linspace(0, 1, 4001, dtype=torch.float64)
        v = v[t.decode(v) >= 0]  # LogC3's toe decodes below 0, which encode clamps away
        assert _maxdiff(t.encode(t.decode(v)), v) < 1e-13
        assert t.encode(torch.tensor([-1.0, 1e9])).tolist() == [t.encode(torch.tensor([0.0])).item(), 1.0]


def _npm(p):
    """RGB -> XYZ from chromaticities (xR, yR, xG, yG, xB, yB, xW, yW) (SMPTE RP 177)."""
    xyz = lambda x, y: np.array([x / y, 1.0, (1 - x - y) / y])  # noqa: E731
    prim = np.stack([xyz(p[0], p[1]), xyz(p[2], p[3]), xyz(p[4], p[5])], axis=1)
    return prim * np.linalg.solve(prim, xyz(p[6], p[7]))


def _bradford(src_w, dst_w):
    m = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    xyz = lambda x, y: np.array([x / y, 1.0, (1 - x - y) / y])  # noqa: E731
    return np.linalg.inv(m) @ np.diag((m @ xyz(*dst_w)) / (m @ xyz(*src_w))) @ m


def test_primaries_derive_from_chromaticities():
    """Tolerances: half a unit in the constants' last printed digit (8 decimals; 5 for ACEScg -> Rec.709), except
    BT.2087's Rec.709 -> Rec.2020 whose first entry is truncated (0.62740389 vs 0.627403896): one unit."""
    c = {p: p.chromaticities for p in Primaries}
    d65, d60 = c[Primaries.REC709][6:], c[Primaries.ACESCG][6:]
    to2020 = np.linalg.inv(_npm(c[Primaries.REC2020]))
    ap1_to_d65 = _bradford(d60, d65) @ _npm(c[Primaries.ACESCG])
    cases = [((Primaries.REC709, Primaries.REC2020), to2020 @ _npm(c[Primaries.REC709]), 1e-8),
             ((Primaries.ACESCG, Primaries.REC2020), to2020 @ ap1_to_d65, 5e-9),
             ((Primaries.ACESCG, Primaries.REC709), np.linalg.inv(_npm(c[Primaries.REC709])) @ ap1_to_d65, 5e-6)]
    for (src, dst), derived, tol in cases:
        assert np.abs(hdr.primaries_matrix(src, dst).numpy() - derived).max() < tol, (src, dst)
    # Rec.709 -> ACEScg inverts ACEScg -> Rec.709 as rounded to float32 (as upstream)
    eye = hdr.primaries_matrix(Primaries.REC709, Primaries.ACESCG) @ hdr.primaries_matrix(Primaries.ACESCG,
                                                                                         Primaries.REC709).float().double()
    assert _maxdiff(eye, torch.eye(3, dtype=torch.float64)) < 1e-14


def test_transfers_and_primaries_match_official(official):
    core, prim = official["hdr"], official["primaries"]
    g = torch.Generator().manual_seed(0)
    lin = torch.cat([torch.rand(1, 3, 2, 8, 8, generator=g) * 2, torch.rand(1, 3, 2, 8, 8, generator=g) * 300 - 20],
                    dim=2)  # (B, 3, F, H, W): the official layout
    codes = torch.rand(1, 3, 4, 8, 8, generator=g) * 1.2 - 0.1
    ch_last = lambda x: x.permute(0, 2, 3, 4, 1)  # noqa: E731
    for ours, theirs in ((Transfer.LOGC3, core.HDRTransfer.LOGC3), (Transfer.ACESCCT, core.HDRTransfer.ACESCCT)):
        assert _maxdiff(ours.encode(lin), theirs.compress(lin)) == 0.0
        assert _maxdiff(ours.decode(codes), theirs.decompress(codes)) == 0.0
        for p, q in ((Primaries.REC709, prim.Primaries.REC709), (Primaries.ACESCG, prim.Primaries.ACESCG)):
            # fp32; the primaries matrix is applied by einsum there, by matmul here: a few ulps of the result
            want = ch_last(theirs.to_working_space(lin, source_primaries=q))
            assert _maxdiff(ours.to_working(ch_last(lin), p), want) < 1e-6
            want = ch_last(theirs.to_linear(codes, out_primaries=q))
            torch.testing.assert_close(ours.to_linear(ch_last(codes), p), want, rtol=1e-6, atol=1e-6)
    for (src, dst), m in {(Primaries.ACESCG, Primaries.REC709): prim.ACESCG_TO_SRGB,
                          (Primaries.REC709, Primaries.ACESCG): prim.SRGB_TO_ACESCG,
                          (Primaries.REC709, Primaries.REC2020): prim.REC709_TO_2020,
                          (Primaries.ACESCG, Primaries.REC2020): prim.ACESCG_TO_2020}.items():
        assert torch.equal(hdr.primaries_matrix(src, dst).float(), m), (src, dst)
    for ours in Primaries:
        if ours is not Primaries.REC2020:
            assert ours.chromaticities == prim.Primaries(ours.value).exr_chromaticities


# ------------------------------------------------------------------------------------------------ HLG


def test_hlg_reference_points():
    a = hdr.HLG_A
    assert abs(hdr.HLG_B - (1 - 4 * a)) < 5e-9 and abs(hdr.HLG_C - (0.5 - a * math.log(4 * a))) < 5e-9
    e = torch.tensor([0.0, 1 / 12, 1.0], dtype=torch.float64)
    assert _maxdiff(hdr.hlg_oetf(e), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)) < 1e-8  # 8-digit constants
    s = torch.linspace(0, 1, 10001, dtype=torch.float64)
    assert _maxdiff(hdr.hlg_oetf(hdr.hlg_inverse_oetf(s)), s) < 1e-15
    closed = torch.where(s <= 0.5, s**2 / 3, (torch.exp((s - hdr.HLG_C) / a) + hdr.HLG_B) / 12)
    assert _maxdiff(hdr.hlg_inverse_oetf(s), closed) == 0.0
    # BT.2100 reference display (1000 cd/m^2, black 0): peak white -> 1000, HLG 75% grey -> 203 (BT.2408, rounded)
    lum = hdr.hlg_eotf(torch.tensor([[1.0, 1.0, 1.0], [0.75, 0.75, 0.75], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert abs(lum[0, 0].item() - 1000) < 1e-4 and abs(lum[1, 0].item() - 203) < 0.5 and lum[2].abs().max() == 0
    assert abs(hdr.hlg_eotf(torch.ones(3, dtype=torch.float64), peak=2000.0)[0].item() - 2000) < 1e-3


def test_hlg_master_signal():
    """Scene-linear diffuse white -> HLG 75% (code 721, BT.2100 narrow range), black -> 64, neutral chroma 512; the
    roll-off is continuous with matching slope at 1 and saturates toward 1."""
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert _maxdiff(hdr.hlg_signal(rgb, white_signal=0.75), torch.tensor([[0.75] * 3, [0.0] * 3])) < 1e-6
    frames = torch.tensor([1.0, 0.0]).repeat_interleave(2)[:, None, None, None].expand(4, 2, 2, 3)
    y, cb, cr = hdr.yuv420p10(hdr.hlg_signal(frames))
    assert y[:, 0, 0].tolist() == [721, 721, 64, 64] and set(cb.flatten().tolist()) == set(cr.flatten().tolist()) == {
        512}
    x = torch.tensor([1 - 1e-4, 1.0, 1 + 1e-4, 55.0], dtype=torch.float64).expand(3, 4).T
    s = hdr.hlg_signal(x)[:, 0]
    assert abs((s[2] - s[1]) - (s[1] - s[0])) < 1e-6 and 0.999 < s[3] <= 1.0
    y, cb, cr = hdr.yuv420p10(torch.tensor([1.0, 0.0, 0.0])[None, None, None].expand(1, 2, 2, 3))  # Rec.2020 red
    assert (y[0, 0, 0].item(), cb[0, 0, 0].item(), cr[0, 0, 0].item()) == (round(4 * (219 * 0.2627 + 16)),
                                                                          round(4 * (224 * -0.2627 / 1.8814 + 128)),
                                                                          960)


def test_hlg_planes_match_official(official):
    g = torch.Generator().manual_seed(1)
    frames = torch.cat([torch.rand(2, 6, 8, 3, generator=g), torch.randn(2, 6, 8, 3, generator=g) * 8], dim=0)
    frames[0, 0, 0] = float("nan")
    for ours, theirs in ((Primaries.REC709, official["primaries"].Primaries.REC709),
                         (Primaries.ACESCG, official["primaries"].Primaries.ACESCG)):
        conv = official["hlg"].HlgGpuConverter.create(theirs, device=torch.device("cpu"))
        want = conv(frames)
        got = hdr.yuv420p10(hdr.hlg_signal(frames, ours))
        for a, b in zip(got, want):
            assert torch.equal(a, b.to(torch.int32))


def test_hlg_video_is_tagged_and_lossless(tmp_path):
    import av

    g = torch.Generator().manual_seed(2)
    frames = torch.rand(3, 16, 32, 3, generator=g) * 4
    path = tmp_path / "master.mp4"
    hdr.write_hlg_video(path, frames, Fraction(24000, 1001), lossless=True)
    y, cb, cr = hdr.yuv420p10(hdr.hlg_signal(frames))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        assert (cc.name, cc.pix_fmt, cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range) == (
            "hevc", "yuv420p10le", 9, 18, 9, 1)
        assert s.codec_tag == "hvc1" and s.average_rate == Fraction(24000, 1001)
        decoded = list(c.decode(s))
    assert len(decoded) == 3
    for i, fr in enumerate(decoded):
        for plane, want in zip(fr.planes, (y[i], cb[i], cr[i])):
            got = np.frombuffer(plane, dtype=np.uint16).reshape(plane.height, -1)[:, :want.shape[1]]
            assert np.array_equal(got, want.numpy())


# ------------------------------------------------------------------------------------------------ EXR


def _image(seed: int, h: int = 37, w: int = 23) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(h, w, 3, generator=g) * 4
    x[0, :4, 0] = torch.tensor([-0.0, 1e-7, 6e4, -3e-5])  # a negative zero, a half subnormal, near the half max
    x[1:, :, 1] = torch.rand(1, w, generator=g)  # compressible rows
    return x


def _ffmpeg_decode(data: bytes) -> torch.Tensor:
    import av

    (frame,) = av.CodecContext.create("exr", "r").decode(av.Packet(data))
    dt = np.float16 if "f16" in frame.format.name else np.float32
    g, b, r = (np.frombuffer(p, dtype=dt).reshape(p.height, -1)[:, :frame.width] for p in frame.planes)
    return torch.from_numpy(np.stack([r, g, b], axis=-1).astype(np.float32))


@pytest.mark.parametrize("half", [True, False])
@pytest.mark.parametrize("compression", ["none", "zips", "zip"])
def test_exr_round_trip_bitwise_and_ffmpeg_reads_it(tmp_path, half, compression):
    x = _image(3)
    path = tmp_path / "f.exr"
    hdr.write_exr(path, x, half=half, compression=compression, primaries=Primaries.ACESCG, color_space="ACEScct")
    want = x.half().float() if half else x
    back = hdr.read_exr(path)
    assert back.dtype == torch.float32 and back.shape == (37, 23, 3)
    assert torch.equal(back.view(torch.int32), want.view(torch.int32))  # bitwise, signs of zero included
    assert torch.equal(_ffmpeg_decode(path.read_bytes()).view(torch.int32), want.view(torch.int32))
    info = hdr.read_exr_header(path)
    assert info["compression"] == compression and info["colorSpace"] == "ACEScct"
    assert set(info["channels"].values()) == {"half" if half else "float"}
    assert np.allclose(info["chromaticities"], Primaries.ACESCG.chromaticities, rtol=0, atol=1e-7)  # float32 tag


@pytest.mark.parametrize("compression", ["none", "zip1", "zip16"])
@pytest.mark.parametrize("fmt", ["half", "float"])
def test_exr_reads_ffmpeg_files_bitwise(tmp_path, compression, fmt):
    import av

    x = _image(4, 21, 18)
    ctx = av.CodecContext.create("exr", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 18, 21, "gbrpf32le", Fraction(1, 24)
    ctx.options = {"compression": compression, "format": fmt}
    packets = ctx.encode(av.VideoFrame.from_ndarray(x.numpy(), format="gbrpf32le")) + ctx.encode(None)
    data = bytes(packets[0])
    (tmp_path / "ff.exr").write_bytes(data)
    got = hdr.read_exr(tmp_path / "ff.exr")
    assert torch.equal(got.view(torch.int32), _ffmpeg_decode(data).view(torch.int32))
    if fmt == "float":
        assert torch.equal(got, x)


def test_exr_against_openexr_when_installed(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    x = _image(5)
    for half in (True, False):
        for name, comp in (("none", OpenEXR.NO_COMPRESSION), ("zips", OpenEXR.ZIPS_COMPRESSION),
                           ("zip", OpenEXR.ZIP_COMPRESSION)):
            want = (x.half() if half else x).numpy()
            hdr.write_exr(tmp_path / "a.exr", x, half=half, compression=name)
            with OpenEXR.File(str(tmp_path / "a.exr")) as f:
                ch = f.channels()
                got = np.stack([ch[c].pixels for c in "RGB"], -1) if "R" in ch else ch["RGB"].pixels
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
            chans = {c: want[..., i].copy() for i, c in enumerate("RGB")}
            with OpenEXR.File({"compression": comp, "type": OpenEXR.scanlineimage}, chans) as f:
                f.write(str(tmp_path / "b.exr"))
            assert torch.equal(hdr.read_exr(tmp_path / "b.exr"), torch.from_numpy(want.astype(np.float32)))


def test_exr_frames_folder(tmp_path):
    frames = torch.stack([_image(i, 6, 4) for i in range(3)])
    paths = hdr.write_exr_frames(tmp_path / "seq", frames)
    assert [p.name for p in paths] == ["frame_00000.exr", "frame_00001.exr", "frame_00002.exr"]
    assert torch.equal(hdr.read_exr_frames(tmp_path / "seq"), frames.half().float())
    assert torch.equal(hdr.read_exr_frames(paths[1]), frames[1:2].half().float())
    assert hdr.read_exr_frames(tmp_path / "seq", max_frames=2).shape == (2, 6, 4, 3)


def test_unsupported_exr_files_raise(tmp_path):
    good = tmp_path / "g.exr"
    hdr.write_exr(good, _image(6, 4, 4), compression="none")
    data = good.read_bytes()
    at = data.index(b"compression\0compression\0") + len(b"compression\0compression\0") + 4
    cases = {"bad magic": (b"\0" * 4 + data[4:], "not an OpenEXR file"),
             "piz": (data[:at] + bytes([4]) + data[at + 1:], "compression 'piz' is not supported"),
             "tiled": (data[:4] + bytes([2, 2, 0, 0]) + data[8:], "only single-part scanline"),
             "truncated": (data[:-10], "truncated or corrupt EXR chunk")}
    for name, (blob, match) in cases.items():
        (tmp_path / f"{name}.exr").write_bytes(blob)
        with pytest.raises(ValueError, match=match):
            hdr.read_exr(tmp_path / f"{name}.exr")


# ------------------------------------------------------------------------------------------------ conditioning


def test_sdr_reference_matches_diffusers_and_official(official):
    from diffusers.pipelines.ltx2.image_processor import LTX2VideoHDRProcessor

    g = torch.Generator().manual_seed(7)
    frames = torch.randint(0, 256, (5, 64, 96, 3), generator=g, dtype=torch.uint8)
    proc = LTX2VideoHDRProcessor()
    resize, range_map = official["resize"], official["range_map"]
    for h, w in ((40, 72), (80, 128), (64, 96), (96, 100)):  # shrink + pad, pad only, as is, replicate pad
        ours = hdr.sdr_conditioning(frames, h, w)
        assert ours.shape == (1, 3, 5, h, w)
        theirs = proc.preprocess_reference_video_hdr((frames.float() / 255).permute(0, 3, 1, 2)[None], h, w)
        assert _maxdiff(ours, theirs) < 1e-6  # diffusers normalizes before the bilinear resize: fp32 rounding
        official_frames = [range_map.to_vae_range((resize.resize_and_reflect_pad(f[None].float(), h, w) / 255.0)
                                                  .clamp(0.0, 1.0)) for f in frames]  # load_video_conditioning_hdr
        assert _maxdiff(ours, torch.cat(official_frames, dim=2)) == 0.0


def test_center_crop_fit_is_fit_image():
    frames = torch.randint(0, 256, (2, 30, 50, 3), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
    for h, w in ((32, 32), (64, 96), (30, 50)):
        assert torch.equal(hdr.fit_frames(frames, h, w, "center_crop") / 127.5 - 1.0, fit_image(frames, h, w))


@pytest.mark.parametrize("space", list(HDRColorSpace))
def test_exr_conditioning_matches_official(official, tmp_path, space):
    g = torch.Generator().manual_seed(9)
    frames = torch.rand(3, 20, 28, 3, generator=g) * (1.0 if space is HDRColorSpace.ACESCCT else 60.0) - 0.05
    hdr.write_exr_frames(tmp_path, frames, half=False)
    theirs_space = official["color_config"].HDRColorSpace(space.value)
    for mode, (h, w) in (("reflect_pad", (16, 32)), ("center_crop", (16, 16))):
        resize_mode = official["resize"].ResizeMode(mode)
        want = torch.cat(list(official["exr"].load_exr_conditioning_hdr(
            tmp_path, h, w, torch.float32, torch.device("cpu"), frame_cap=3, color_space=theirs_space,
            resize_mode=resize_mode)), dim=2)
        ours = hdr.exr_conditioning(hdr.read_exr_frames(tmp_path), h, w, space.name, fit=mode)
        assert ours.shape == want.shape == (1, 3, 3, h, w)
        assert _maxdiff(ours, want) < 1e-6  # fp32: einsum vs matmul for the primaries, then a log


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("space", list(HDRColorSpace))
def test_hdr_outputs_match_official_decode(official, tmp_path, space):
    import av

    video = torch.rand(1, 3, 2, 16, 24, generator=torch.Generator().manual_seed(10)) * 2.2 - 1.1
    folder = hdr.write_hdr_outputs(tmp_path / "out.mp4", video, 24.0, space)
    assert folder == tmp_path / "out_exr"
    off_space = official["color_config"].HDRColorSpace(space.value)
    chunk = official["range_map"].from_vae_range(video[0]).permute(1, 2, 3, 0)  # the decoder's [F, H, W, C] in [0, 1]
    if space.is_log:
        want = chunk
    else:
        want = official["color_config"].decode_hdr_video(chunk, off_space.transfer, off_space.source_primaries)
    off_prim, off_tag = off_space.exr_output_tags()
    got = hdr.read_exr_frames(folder)
    assert _maxdiff(got, want.half().float()) <= _maxdiff(want.half().float(), want) + 1e-6  # half of fp32 ulps
    info = hdr.read_exr_header(folder / "frame_00000.exr")
    assert info["colorSpace"] == off_tag and np.allclose(info["chromaticities"], off_prim.exr_chromaticities)
    linear709 = official["color_config"].decode_hdr_video(chunk, off_space.transfer)  # the HLG sink's input
    assert _maxdiff(hdr.decode_hdr(video, space.transfer)[0], linear709) < 1e-5 * max(1.0, linear709.max().item())
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].codec_context.color_trc == 18 and len(list(c.decode(video=0))) == 2


def test_linear_to_srgb_reference_points():
    x = torch.tensor([-1.0, 0.0, 0.0031308, 0.18, 1.0, 4.0], dtype=torch.float64)
    want = [0.0, 0.0, 0.0031308 * 12.92, 1.055 * 0.18 ** (1 / 2.4) - 0.055, 1.0, 1.0]
    assert _maxdiff(hdr.linear_to_srgb(x), torch.tensor(want, dtype=torch.float64)) < 1e-12
    assert abs(0.0031308 * 12.92 - 0.04045) < 1e-5  # IEC 61966-2-1's break point, both sides


def test_hdr_lora_metadata():
    assert HDRLoraConfig.from_metadata({}) is None and HDRLoraConfig.from_metadata(None) is None
    assert HDRLoraConfig.from_metadata({"hdr_transform": "true"}) == HDRLoraConfig(Transfer.LOGC3, 1)
    assert HDRLoraConfig.from_metadata({"use_hdr_transform": "1"}) == HDRLoraConfig(Transfer.LOGC3, 1)
    assert HDRLoraConfig.from_metadata({"hdr_transform": "acescct", "reference_downscale_factor": "2"}) == \
        HDRLoraConfig(Transfer.ACESCCT, 2)


# ------------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("call, match", [
    (lambda: hdr.convert_primaries(torch.zeros(4, 3), Primaries.REC2020, Primaries.REC709),
     r"no primaries conversion REC2020->REC709; known: "),
    (lambda: hdr.convert_primaries(torch.zeros(4, 4), Primaries.REC709, Primaries.ACESCG), r"channels-last RGB"),
    (lambda: hdr.to_vae_range(torch.tensor([0.5, 1.5])), r"must lie in \[0, 1\], got min 0.5 max 1.5"),
    (lambda: hdr.to_vae_range(torch.tensor([float("nan")])), r"must lie in \[0, 1\]"),
    (lambda: hdr.fit_frames(torch.zeros(2, 4, 4), 8, 8), r"\(H, W, 3\) or \(F, H, W, 3\), got \(2, 4, 4\)"),
    (lambda: hdr.fit_frames(torch.zeros(4, 4, 3), 0, 8), r"height must be a positive int, got 0"),
    (lambda: hdr.fit_frames(torch.zeros(4, 4, 3), 8, 8, "stretch"), r"'reflect_pad' or 'center_crop'"),
    (lambda: hdr.exr_conditioning(torch.zeros(4, 4, 3), 8, 8, "rec2100"), r"unknown HDR colour space 'rec2100'"),
    (lambda: hdr.exr_conditioning(torch.full((4, 4, 3), float("inf")), 8, 8, "acescg"), r"holds NaN or inf"),
    (lambda: hdr.decode_hdr(torch.zeros(3, 2, 4, 4), Transfer.LOGC3), r"\(B, 3, F, H, W\), got"),
    (lambda: hdr.hlg_signal(torch.zeros(2, 3), white_signal=0.3), r"white_signal must be in \(0.5, 1\)"),
    (lambda: hdr.hlg_eotf(torch.zeros(3), peak=100.0, black=200.0), r"0 <= black < peak"),
    (lambda: hdr.yuv420p10(torch.zeros(1, 3, 4, 3)), r"even height and width, got 3x4"),
    (lambda: hdr.write_hlg_video("/tmp/x.mp4", torch.zeros(1, 16, 16, 3), 0.0), r"fps must be a positive number"),
    (lambda: hdr.write_hlg_video("/tmp/x.mp4", torch.zeros(1, 8, 16, 3), 24.0), r"even height and width >= 16"),
    (lambda: hdr.write_exr("/tmp/x.exr", torch.zeros(4, 4, 3), compression="piz"), r"one of none, zips, zip"),
    (lambda: hdr.read_exr_frames("/nonexistent/seq"), r"an .exr file or a folder of .exr frames"),
    (lambda: HDRLoraConfig.from_metadata({"hdr_transform": "pq"}), r"unknown hdr_transform 'pq'"),
    (lambda: HDRLoraConfig.from_metadata({"hdr_transform": "logc3", "reference_downscale_factor": "0"}),
     r"positive integer, got '0'"),
    (lambda: hdr.write_hdr_outputs("/tmp/x.mp4", torch.zeros(2, 3, 1, 4, 4), 24.0, "acescg"), r"\(1, 3, F, H, W\)"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
