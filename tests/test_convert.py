"""Checkpoint conversion: the rule engine, bitwise round trips, and a clear error for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, randomize_, save_official
from safetensors.torch import load_file, save_file

from ltx.core.checkpoint import CheckpointError, SafetensorsReader
from ltx.core.keymap import KeyMapError, Rule, invert, rename
from ltx.ltxv.checkpoint import load_dit, read_checkpoint, write_diffusers, write_ltx, write_official
from ltx.ltxv.keys_official import DIT_PREFIX, ConfigError, dit_config_to_official
from ltx.ltxv.transformer import DiT

CFG = TINY["w64"]


def _our_sd(seed=0):
    with torch.device("cpu"):
        model = randomize_(DiT(CFG), seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _official_file(path, sd=None, config=None, extra=None):
    sd = _our_sd() if sd is None else sd
    config = {"transformer": dit_config_to_official(CFG), **(extra or {})} if config is None else config
    return save_official(path, {DIT_PREFIX + k: v for k, v in sd.items()}, config)


def _equal_files(a, b):
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k].view(torch.uint8), sb[k].view(torch.uint8)), k


# --------------------------------------------------------------------------------------------- rule engine


def test_rules_first_match_slots_and_inverse():
    rules = (Rule("blocks.{i}.norm_q.weight", "blocks.{i}.q_norm.weight"), Rule("{rest}", "{rest}"))
    assert rename(["blocks.12.norm_q.weight", "a.b"], rules) == {"blocks.12.q_norm.weight": "blocks.12.norm_q.weight",
                                                                  "a.b": "a.b"}
    assert rename(["blocks.12.q_norm.weight"], invert(rules)) == {"blocks.12.norm_q.weight": "blocks.12.q_norm.weight"}


def test_unknown_key_and_collision_raise():
    with pytest.raises(KeyMapError, match=r"2 checkpoint keys match no conversion rule.*'x\.y'"):
        rename(["a.weight", "x.y", "z"], (Rule("a.{rest}", "{rest}"),))
    with pytest.raises(KeyMapError, match="two checkpoint keys map to 'w'"):
        rename(["a.w", "b.w"], (Rule("a.{rest}", "{rest}"), Rule("b.{rest}", "{rest}")))


# ------------------------------------------------------------------------------------------ round trips


def test_official_ltx_official_bitwise(tmp_path):
    src = _official_file(tmp_path / "src.safetensors", extra={"scheduler": {"sampler": "LinearQuadratic"},
                                                               "allowed_inference_steps": [1.0, 0.9937]})
    write_ltx(read_checkpoint(src), tmp_path / "ours.safetensors")
    ours = read_checkpoint(tmp_path / "ours.safetensors")
    assert ours.format == "ltx" and ours.components["dit"].config == CFG
    write_official(ours, tmp_path / "back.safetensors")
    _equal_files(src, tmp_path / "back.safetensors")
    back = json.loads(SafetensorsReader(tmp_path / "back.safetensors").metadata["config"])
    assert back["scheduler"] == {"sampler": "LinearQuadratic"} and back["allowed_inference_steps"] == [1.0, 0.9937]
    assert back["transformer"] == dit_config_to_official(CFG)


def test_diffusers_ltx_diffusers_bitwise(tmp_path):
    from diffusers import LTXVideoTransformer3DModel

    from ltx.ltxv.keys_diffusers import dit_config_to_diffusers

    c = {k: v for k, v in dit_config_to_diffusers(CFG).items() if not k.startswith("_")}
    ref = randomize_(LTXVideoTransformer3DModel(**c), seed=5).to(torch.bfloat16)
    ref.save_pretrained(tmp_path / "src" / "transformer")  # a pipeline root with a transformer/ subfolder
    write_ltx(read_checkpoint(tmp_path / "src"), tmp_path / "ours.safetensors")
    write_diffusers(read_checkpoint(tmp_path / "ours.safetensors"), tmp_path / "back")
    _equal_files(tmp_path / "src/transformer/diffusion_pytorch_model.safetensors",
                 tmp_path / "back/transformer/diffusion_pytorch_model.safetensors")
    again = LTXVideoTransformer3DModel.from_pretrained(tmp_path / "back" / "transformer")  # diffusers reads it
    assert again.config.num_layers == CFG.num_layers


def test_dtype_cast_and_loaded_values(tmp_path):
    sd = _our_sd(seed=2)
    src = _official_file(tmp_path / "src.safetensors", sd)
    write_ltx(read_checkpoint(src), tmp_path / "bf16.safetensors", dtype=torch.bfloat16)
    model = load_dit(tmp_path / "bf16.safetensors")
    for k, v in model.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, sd[k].to(torch.bfloat16)), k
    model32 = load_dit(src, dtype=torch.float32)
    assert all(torch.equal(v, sd[k]) for k, v in model32.state_dict().items())


def test_sharded_diffusers_folder(tmp_path):
    """diffusers' large checkpoints are sharded with an index; read them as one key space."""
    from ltx.core.keymap import apply, invert
    from ltx.ltxv.keys_diffusers import DIT_FROM_DIFFUSERS, dit_config_to_diffusers

    sd = apply(_our_sd(seed=4), invert(DIT_FROM_DIFFUSERS))
    folder = tmp_path / "transformer"
    folder.mkdir()
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(folder / name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    (folder / "config.json").write_text(json.dumps(dit_config_to_diffusers(CFG)))
    model = load_dit(folder)
    ours = _our_sd(seed=4)
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------- bad input


def test_missing_and_unexpected_keys_listed(tmp_path):
    sd = _our_sd()
    del sd["transformer_blocks.1.ff.net.2.bias"]
    sd["transformer_blocks.0.attn1.extra.weight"] = torch.zeros(3)
    path = _official_file(tmp_path / "bad.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"1 missing keys: transformer_blocks\.1\.ff\.net\.2\.bias .*"
                       r"1 unexpected keys: transformer_blocks\.0\.attn1\.extra\.weight"):
        load_dit(path)


def test_shape_mismatch_named(tmp_path):
    sd = _our_sd()
    sd["proj_out.weight"] = torch.zeros(17, 64)
    with pytest.raises(CheckpointError, match=r"proj_out\.weight: checkpoint \(17, 64\) vs model \(16, 64\)"):
        load_dit(_official_file(tmp_path / "bad.safetensors", sd))


def test_truncated_and_not_safetensors(tmp_path):
    good = _official_file(tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated: tensor data needs"):
        load_dit(tmp_path / "cut.safetensors")
    (tmp_path / "cut_header.safetensors").write_bytes(data[:40])
    with pytest.raises(CheckpointError, match="truncated: the header needs"):
        load_dit(tmp_path / "cut_header.safetensors")
    (tmp_path / "model.ckpt").write_bytes(b"PK\x03\x04 this is a zip/pickle, not safetensors" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_dit(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_dit(tmp_path / "absent.safetensors")


def test_unsupported_knob_and_unknown_prefix(tmp_path):
    cfg = dit_config_to_official(CFG) | {"qk_norm": "layer_norm"}
    msg = r"sets \{'qk_norm': 'layer_norm'\}; ltx implements only \{'qk_norm': 'rms_norm'\}"
    with pytest.raises(ConfigError, match=msg):
        read_checkpoint(_official_file(tmp_path / "knob.safetensors", config={"transformer": cfg}))
    path = save_official(tmp_path / "prefix.safetensors",
                         {DIT_PREFIX + k: v for k, v in _our_sd().items()} | {"cond_stage_model.w": torch.zeros(2)},
                         {"transformer": dit_config_to_official(CFG)})
    with pytest.raises(CheckpointError, match=r"1 keys belong to no component .*cond_stage_model\.w"):
        read_checkpoint(path)


def test_expected_config_contradiction(tmp_path):
    import dataclasses

    path = _official_file(tmp_path / "src.safetensors")
    other = dataclasses.replace(CFG, num_layers=28, causal_temporal_positioning=True)
    with pytest.raises(ConfigError, match=r"num_layers: checkpoint 2 vs expected 28.*causal_temporal_positioning"):
        load_dit(path, expected_config=other)
    assert load_dit(path, expected_config=CFG).cfg == CFG


def test_refuses_to_overwrite_and_leaves_no_partial_file(tmp_path):
    src = read_checkpoint(_official_file(tmp_path / "src.safetensors"))
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_ltx(src, out)
    assert out.read_bytes() == b"precious"

    def boom(key):  # a read error half way through the stream
        raise OSError("disk went away")

    src.components["dit"].fetch = boom
    with pytest.raises(OSError, match="disk went away"):
        write_ltx(src, out, overwrite=True)
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temporary file removed


# -------------------------------------------------------------------------------------------------- CLI


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "tools/convert_weights.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)  # a hang guard, not a speed limit


def test_cli_convert_and_errors(tmp_path):
    src = _official_file(tmp_path / "src.safetensors")
    r = _cli(src, tmp_path / "ours.safetensors")
    assert r.returncode == 0, r.stderr
    assert "dit: 65 tensors" in r.stdout and "wrote" in r.stdout
    r = _cli(tmp_path / "ours.safetensors", tmp_path / "off.safetensors", "--to", "official")
    assert r.returncode == 0, r.stderr
    _equal_files(src, tmp_path / "off.safetensors")
    r = _cli(src, tmp_path / "ours.safetensors")
    assert r.returncode == 1 and "exists; pass --overwrite" in r.stderr
    r = _cli(src, "--dry-run", "--model", REPO / "configs/model/ltxv-2b-0.9.8-distilled.yaml")
    assert r.returncode == 1 and "num_layers: checkpoint 2 vs ltxv-2b-0.9.8-distilled.yaml 28" in r.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    r = _cli(tmp_path / "junk.safetensors", "--dry-run")
    assert r.returncode == 1 and "not a safetensors file" in r.stderr and "Traceback" not in r.stderr


def test_conversion_streams_tensors(tmp_path):
    """Converting a file needs about one tensor of extra memory, not the file's size (13B files are 26 GB)."""
    n, shape = 12, (2048, 4096)  # 12 tensors x 32 MiB = 384 MiB of weights
    big = {f"{DIT_PREFIX}blob.{i}": torch.full(shape, float(i)) for i in range(n)}
    src = save_official(tmp_path / "big.safetensors", big, {"transformer": dit_config_to_official(CFG)})
    del big
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from ltx.ltxv.checkpoint import read_checkpoint, write_ltx
def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024
ckpt = read_checkpoint({str(src)!r})
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak to the current resident size
before = hwm()
write_ltx(ckpt, {str(tmp_path / 'out.safetensors')!r})
print(hwm() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    extra_mib = int(out.stdout.strip())
    assert extra_mib < 3 * 32, f"conversion needed {extra_mib} MiB for a 384 MiB file"  # a few tensors at most
    assert load_file(str(tmp_path / "out.safetensors"))["dit.blob.11"][0, 0] == 11.0


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    from ltx.core.checkpoint import atomic_dir, atomic_file

    (tmp_path / "plain").write_bytes(b"x")
    with atomic_file(tmp_path / "atomic", "wb") as f:
        f.write(b"x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(tmp_path / "folder") as tmp:  # replaces the old folder whole
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["b"]
    (tmp_path / "plain_dir").mkdir()
    assert (tmp_path / "folder").stat().st_mode == (tmp_path / "plain_dir").stat().st_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic", "folder", "plain", "plain_dir"]  # no leftovers
