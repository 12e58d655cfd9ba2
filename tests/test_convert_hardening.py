"""convert_weights on bad input (issue 11): structurally invalid checkpoints are refused before anything is
written, --overwrite deletes nothing it did not write, an interrupted write leaves no temporary file (at once
on Ctrl-C / SIGTERM, at the next run after SIGKILL), and every expected error is one line naming the file or
option. Tiny random configs (tests/test_convert.py's helpers); the subprocess tests are the only slow part."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO, save_official
from safetensors.torch import save_file
from test_convert import CFG, _official_file, _our_sd

from ltx.core.checkpoint import (
    CheckpointError,
    Terminated,
    atomic_dir,
    atomic_file,
    raise_on_sigterm,
    remove_stale_temps,
    temp_prefix,
    write_safetensors,
)
from ltx.ltxv.checkpoint import (
    check_component,
    load_component,
    load_dit,
    read_checkpoint,
    validate,
    write_diffusers,
    write_ltx,
)
from ltx.ltxv.keys_official import DIT_PREFIX, dit_config_to_official
from ltx.ltxv.upsampler import LatentUpsampler, UpsamplerConfig
from tools.convert_weights import main


def _run(capsys, *args) -> tuple[int, str]:
    """main() in process; returns (status, the one `error:` line), asserting there is exactly one and no traceback."""
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "interrupted"))]
    assert len(lines) == (1 if rc else 0), err
    return rc, lines[0] if lines else ""


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- 1. validate before writing


def _missing(sd):
    del sd["transformer_blocks.1.ff.net.2.bias"]


def _extra(sd):
    sd["transformer_blocks.0.attn1.bogus.weight"] = torch.zeros(3)  # under a known prefix: the reader maps it


def _shape(sd):
    sd["proj_out.weight"] = torch.zeros(17, 64)


def _dtype(sd):
    sd["proj_out.weight"] = torch.zeros(16, 64, dtype=torch.int32)


BAD_DIT = {
    "missing": (_missing, None, r"1 missing keys: transformer_blocks\.1\.ff\.net\.2\.bias"),
    "extra": (_extra, None, r"1 unexpected keys: transformer_blocks\.0\.attn1\.bogus\.weight"),
    "shape": (_shape, None, r"proj_out\.weight: checkpoint \(17, 64\) vs model \(16, 64\)"),
    "dtype": (_dtype, None, r"proj_out\.weight: int32, the model needs floating point"),
    "contradicting config": (None, dataclasses.replace(CFG, num_layers=28),
                             r"650 missing keys: transformer_blocks\.2\..*the metadata config builds "
                             r"transformer_blocks 0\.\.27 but the file has transformer_blocks 0\.\.1 .*"
                             r"says num_layers=28 but the tensors fit num_layers=2"),
}


@pytest.mark.parametrize("case", BAD_DIT)
@pytest.mark.parametrize("to", ["ltx", "official", "diffusers"])
def test_structurally_invalid_checkpoint_is_refused_and_nothing_written(tmp_path, capsys, case, to):
    change, cfg, message = BAD_DIT[case]
    sd = _our_sd()
    if change:
        change(sd)
    config = {"transformer": dit_config_to_official(cfg)} if cfg else None
    src = _official_file(tmp_path / "bad.safetensors", sd, config=config)
    dst = tmp_path / ("out" if to == "diffusers" else "out.safetensors")
    for args in ([src, dst, "--to", to], [src, "--dry-run"]):
        rc, line = _run(capsys, *args)
        assert rc == 1 and f"{src} (dit) does not fit DiT" in line
        assert __import__("re").search(message, line), line
    assert _names(tmp_path) == ["bad.safetensors"]  # nothing written, no temporary
    with pytest.raises(CheckpointError, match=message):  # the loader's check is the same one
        load_dit(src)


def test_contradicting_config_json_names_the_sizes_the_tensors_fit(tmp_path, capsys):
    """A diffusers folder whose config.json was edited: the hint says which sizes the tensors have."""
    write_diffusers(read_checkpoint(_official_file(tmp_path / "src.safetensors")), tmp_path / "dif")
    config = tmp_path / "dif/transformer/config.json"
    c = json.loads(config.read_text())
    config.write_text(json.dumps(c | {"num_attention_heads": 4, "attention_head_dim": 32, "cross_attention_dim": 128,
                                      "caption_channels": 64}))
    rc, line = _run(capsys, tmp_path / "dif", tmp_path / "x.safetensors")
    assert rc == 1 and "config.json says" in line and "caption_channels=64" in line
    assert "the tensors fit caption_channels=48, width (num_heads*head_dim)=64" in line
    assert not (tmp_path / "x.safetensors").exists()


def test_vae_and_upsampler_are_checked_too(tmp_path, capsys):
    from test_vae_convert import official_vae_file, tensors_of, write_official_file

    from ltx.ltxv import keys_vae as vt

    path, cfg = official_vae_file(tmp_path, "0.9.5")
    tensors = tensors_of(path)
    tensors["vae.encoder.down_blocks.0.bogus"] = torch.zeros(1)
    bad = write_official_file(tmp_path / "vae.safetensors", tensors, {"vae": vt.vae_config_to_official(cfg)})
    rc, line = _run(capsys, bad, tmp_path / "out.safetensors")
    assert rc == 1 and f"{bad} (vae) does not fit VideoVAE" in line and "encoder.down_blocks.0.bogus" in line

    ucfg = UpsamplerConfig(in_channels=8, mid_channels=32, num_blocks_per_stage=2)
    sd = LatentUpsampler(ucfg).state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("res_blocks.1.")}  # a file of num_blocks_per_stage=1
    up = tmp_path / "up.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(up),
              metadata={"config": json.dumps(vt.upsampler_config_to_official(ucfg))})
    rc, line = _run(capsys, up, tmp_path / "up2.safetensors")
    assert rc == 1 and "res_blocks.1.conv1.bias" in line and "(+" in line
    assert "builds res_blocks 0..1 but the file has res_blocks 0" in line
    assert "does not fit" in str(pytest.raises(CheckpointError, validate, read_checkpoint(up)).value)
    assert not (tmp_path / "up2.safetensors").exists() and not (tmp_path / "out.safetensors").exists()


def test_check_component_returns_the_meta_module_for_a_valid_file(tmp_path):
    ckpt = read_checkpoint(_official_file(tmp_path / "src.safetensors"))
    validate(ckpt)
    module = check_component(ckpt.components["dit"])
    assert next(module.parameters()).device.type == "meta"
    assert load_component(ckpt, "dit").cfg == CFG


# --------------------------------------------------------------------------- 2. --overwrite and dst kinds


def test_overwrite_diffusers_folder_keeps_files_it_did_not_write(tmp_path, capsys):
    src = _official_file(tmp_path / "src.safetensors")
    out = tmp_path / "out"
    (out / "other_model").mkdir(parents=True)
    (out / "other_model" / "weights.bin").write_bytes(b"keep me")
    (out / "notes.txt").write_text("keep me too")
    rc, _ = _run(capsys, src, out, "--to", "diffusers")
    assert rc == 1  # exists: needs --overwrite
    assert _run(capsys, src, out, "--to", "diffusers", "--overwrite")[0] == 0
    assert _run(capsys, src, out, "--to", "diffusers", "--overwrite")[0] == 0  # again over our own output
    assert _names(out) == ["notes.txt", "other_model", "transformer"]
    assert (out / "notes.txt").read_text() == "keep me too" and (out / "other_model/weights.bin").exists()
    assert _names(out / "transformer") == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert load_dit(out / "transformer").cfg == CFG
    # a component folder holding files the converter does not write: refused, naming them, nothing changed
    (out / "transformer" / "README.md").write_text("model card")
    (out / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    before = (out / "transformer/diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    rc, line = _run(capsys, src, out, "--to", "diffusers", "--overwrite")
    assert rc == 1 and str(out) in line and "transformer/README.md" in line and "index.json" in line
    assert (out / "transformer/diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temporaries anywhere


def test_overwrite_lora_folder_keeps_files_it_did_not_write(tmp_path, capsys):
    from ltx.ltxv.lora import save_lora

    tensors = {"transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 64),
               "transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(64, 4)}
    src = save_lora(tmp_path / "lora.safetensors", tensors, format="comfy")
    out = tmp_path / "lora_dif"
    out.mkdir()
    (out / "README.md").write_text("card")
    assert _run(capsys, src, out, "--to", "diffusers", "--overwrite")[0] == 0
    assert _names(out) == ["README.md", "adapter_config.json", "pytorch_lora_weights.safetensors"]
    assert _run(capsys, src, out, "--to", "diffusers", "--overwrite")[0] == 0
    assert (out / "README.md").read_text() == "card"


@pytest.mark.parametrize("kind", ["folder for a file", "file for a folder", "parent is a file"])
def test_destination_of_the_wrong_kind_is_one_line_naming_it(tmp_path, capsys, kind):
    src = _official_file(tmp_path / "src.safetensors")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    dst, to, words = {
        "folder for a file": (tmp_path / "a_folder", "ltx", "is a folder; this output is a single file"),
        "file for a folder": (tmp_path / "a_file", "diffusers", "is a file; this output is a folder"),
        "parent is a file": (tmp_path / "a_file" / "x.safetensors", "ltx", "a_file is a file, so"),
    }[kind]
    for extra in ([], ["--overwrite"]):
        rc, line = _run(capsys, src, dst, "--to", to, *extra)
        assert rc == 1 and words in line and str(dst) in line and "File exists" not in line
    assert (tmp_path / "a_file").read_text() == "x" and _names(tmp_path / "a_folder") == []


# ------------------------------------------------------------------------------------ 3. temporary files


def test_ctrl_c_during_write_prints_one_line_and_leaves_no_temp(tmp_path, capsys, monkeypatch):
    import ltx.core.checkpoint as ck

    src = _official_file(tmp_path / "src.safetensors")
    real, n = ck.SafetensorsReader.get, []

    def get(self, key):  # Ctrl-C after a few tensors are in the temporary file
        n.append(key)
        if len(n) == 5:
            raise KeyboardInterrupt
        return real(self, key)

    monkeypatch.setattr(ck.SafetensorsReader, "get", get)
    dst = tmp_path / "out.safetensors"
    rc, line = _run(capsys, src, dst)
    assert rc == 130 and line == f"interrupted; {dst} was not written (no temporary file left)"
    assert _names(tmp_path) == ["src.safetensors"]


_SLOW_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import ltx.core.checkpoint as ck
real = ck.SafetensorsReader.get
def get(self, key):
    Path({ready!r}).touch()
    time.sleep(0.1)
    return real(self, key)
ck.SafetensorsReader.get = get
from tools.convert_weights import main
sys.exit(main({argv!r}))
"""


def _killed_writer(tmp_path, src, dst, sig) -> subprocess.CompletedProcess:
    """convert_weights in a subprocess, sent `sig` while it writes (its tensor reads are slowed down)."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    code = _SLOW_WRITER.format(repo=str(REPO), ready=str(ready), argv=[str(src), str(dst)])
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few tensors into the temporary file
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_sigterm_during_write_removes_the_temp_and_sigkill_leftover_goes_at_the_next_run(tmp_path, capsys):
    src = _official_file(tmp_path / "src.safetensors")
    dst = tmp_path / "out" / "model.safetensors"
    r = _killed_writer(tmp_path, src, dst, signal.SIGTERM)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert f"interrupted; {dst} was not written (no temporary file left)" in r.stderr and "Traceback" not in r.stderr
    assert _names(dst.parent) == []

    r = _killed_writer(tmp_path, src, dst, signal.SIGKILL)  # no unwinding: the temporary stays ...
    assert r.returncode == -signal.SIGKILL
    (left,) = dst.parent.iterdir()
    assert left.name.startswith(f".{dst.name}.") and left.name.endswith(".tmp") and left.stat().st_size > 0
    assert _run(capsys, src, dst)[0] == 0  # ... until the next write of the same target
    assert _names(dst.parent) == ["model.safetensors"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_writers_go_live_and_foreign_ones_stay(tmp_path):
    target = tmp_path / "model.safetensors"
    live = tmp_path / f"{temp_prefix(target)}abcd1234.tmp"  # this process: alive
    host = temp_prefix(target).rsplit("-", 1)[1].rstrip(".")
    dead = tmp_path / f".{target.name}.{_dead_pid()}-{host}.abcd1234.tmp"
    dead_dir = tmp_path / f".{target.name}.{_dead_pid()}-{host}.efgh5678.tmp"  # an atomic_dir temporary
    other_host = tmp_path / f".{target.name}.{_dead_pid()}-00000000.abcd1234.tmp"  # a shared file system
    foreign = [tmp_path / f".{target.name}.abcd1234.tmp", tmp_path / ".other.safetensors.1-x.tmp",
               tmp_path / f".{target.name}.999999999.tmp", tmp_path / "notes.tmp"]
    for p in (live, dead, other_host, *foreign):
        p.write_bytes(b"x")
    dead_dir.mkdir()
    (dead_dir / "config.json").write_text("{}")
    assert sorted(remove_stale_temps(target)) == sorted([dead, dead_dir])
    with atomic_file(target) as f:  # every atomic write runs it first
        f.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (target, live, other_host, *foreign))


def test_atomic_dir_recovers_from_a_kill_between_its_renames(tmp_path):
    folder = tmp_path / "run"
    with atomic_dir(folder) as tmp:
        (tmp / "a").write_text("1")
    folder.rename(tmp_path / ".run.old")  # killed after moving the old folder aside
    with pytest.raises(RuntimeError):
        with atomic_dir(folder, overwrite=True):
            assert (folder / "a").read_text() == "1"  # the old folder is back before anything is written
            raise RuntimeError
    assert _names(tmp_path) == ["run"] and _names(folder) == ["a"]


def test_raise_on_sigterm_is_idempotent_main_thread_only_and_keeps_other_handlers():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert raise_on_sigterm() is True and raise_on_sigterm() is True
        with pytest.raises(Terminated) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert isinstance(e.value, KeyboardInterrupt) and e.value.signum == signal.SIGTERM
        result = []
        t = threading.Thread(target=lambda: result.append(raise_on_sigterm()))
        t.start()
        t.join()
        assert result == [False]

        def mine(signum, frame):
            pass

        signal.signal(signal.SIGTERM, mine)
        assert raise_on_sigterm() is False and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_library_writer_interrupted_by_its_tensor_loader_leaves_nothing(tmp_path):
    from ltx.core.checkpoint import TensorEntry

    def boom():
        raise KeyboardInterrupt

    entries = [TensorEntry("a", torch.float32, (2,), lambda: torch.zeros(2)),
               TensorEntry("b", torch.float32, (2,), boom)]
    with pytest.raises(KeyboardInterrupt):
        write_safetensors(tmp_path / "x.safetensors", entries)
    ckpt = read_checkpoint(_official_file(tmp_path / "src.safetensors"))
    ckpt.components["dit"].fetch = lambda k: boom()
    with pytest.raises(KeyboardInterrupt):
        write_diffusers(ckpt, tmp_path / "dif")
    assert _names(tmp_path) == ["src.safetensors"]


# ---------------------------------------------------------------------------------------- 4. one line


def _bad_inputs(tmp_path):
    good = _official_file(tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    (tmp_path / "model.ckpt").write_bytes(b"PK\x03\x04 a zip, not safetensors" * 10)
    (tmp_path / "dif" / "transformer").mkdir(parents=True)
    (tmp_path / "dif" / "transformer" / "config.json").write_text("{not json")
    save_file({DIT_PREFIX + k: v.contiguous() for k, v in _our_sd().items()}, str(tmp_path / "meta.safetensors"),
              metadata={"config": json.dumps({"transformer": {"num_layers": 2}})})
    (tmp_path / "syntax.yaml").write_text("dit: [1, 2\n")
    (tmp_path / "train.yaml").write_text("lr: 0.1\n")
    return good


ONE_LINE = {  # args (T = tmp_path), words the line must hold
    "truncated": (["T/cut.safetensors", "T/o.safetensors"], ["T/cut.safetensors", "truncated"]),
    "not safetensors": (["T/model.ckpt", "--dry-run"], ["T/model.ckpt", "not a safetensors file"]),
    "missing source": (["T/absent.safetensors", "--dry-run"], ["T/absent.safetensors", "no such file"]),
    "config.json JSON": (["T/dif", "--dry-run"], ["T/dif/transformer/config.json", "not valid JSON"]),
    "metadata config fields": (["T/meta.safetensors", "--dry-run"], ["T/meta.safetensors", "no 'num_attention_heads'"]),
    "missing --model": (["T/good.safetensors", "--dry-run", "--model", "T/nope.yaml"], ["--model", "T/nope.yaml"]),
    "yaml syntax": (["T/good.safetensors", "--dry-run", "--model", "T/syntax.yaml"], ["--model", "T/syntax.yaml"]),
    "yaml not a preset": (["T/good.safetensors", "--dry-run", "--model", "T/train.yaml"],
                          ["--model", "T/train.yaml", "'lr'"]),
    "unknown component": (["T/good.safetensors", "--dry-run", "--components", "dit,foo"],
                          ["--components", "['foo']", "'upsampler', 'vae'"]),
    "absent component": (["T/good.safetensors", "--dry-run", "--components", "vae"], ["--components", "no ['vae']"]),
    "empty components": (["T/good.safetensors", "--dry-run", "--components", ","], ["--components"]),
    "LoRA format for a checkpoint": (["T/good.safetensors", "T/o.safetensors", "--to", "comfy"], ["--to comfy"]),
    "exists": (["T/good.safetensors", "T/good.safetensors"], ["T/good.safetensors exists; pass --overwrite"]),
}


@pytest.mark.parametrize("case", ONE_LINE)
def test_each_bad_input_is_one_line_naming_the_file_or_option(tmp_path, capsys, case):
    _bad_inputs(tmp_path)
    args, words = ONE_LINE[case]
    rc, line = _run(capsys, *(a.replace("T/", f"{tmp_path}/") for a in args))
    assert rc == 1 and line.startswith("error: ")
    for w in words:
        assert w.replace("T/", f"{tmp_path}/") in line, line


def test_permission_and_disk_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    good = _bad_inputs(tmp_path)
    dst = tmp_path / "out.safetensors"
    real = tempfile.mkstemp

    def denied(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    rc, line = _run(capsys, good, dst)
    assert rc == 1 and line == f"error: {dst}: Permission denied (creating a temporary file in {tmp_path})"
    monkeypatch.setattr(tempfile, "mkstemp", real)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    rc, line = _run(capsys, good, dst)
    assert rc == 1 and "No space left on device" in line and str(dst) in line
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setenv("LTX_DEBUG", "1")  # the traceback on request
    with pytest.raises(OSError, match="No space left"):
        main([str(good), str(dst)])


def test_ltx_debug_reraises_bad_input(tmp_path, monkeypatch):
    (tmp_path / "model.ckpt").write_bytes(b"\x00" * 3)
    monkeypatch.setenv("LTX_DEBUG", "1")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        main([str(tmp_path / "model.ckpt"), "--dry-run"])


def test_argparse_errors_are_one_line_too(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "x.safetensors"), "--dry-run", "--dtype", "int8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: argument --dtype: invalid choice")


def test_existing_write_paths_still_work(tmp_path):
    """Round trip through every writer after the hardening (the checks do not refuse good files)."""
    src = save_official(tmp_path / "src.safetensors", {DIT_PREFIX + k: v for k, v in _our_sd().items()},
                        {"transformer": dit_config_to_official(CFG)})
    write_ltx(read_checkpoint(src), tmp_path / "a.safetensors")
    write_diffusers(read_checkpoint(tmp_path / "a.safetensors"), tmp_path / "dif")
    validate(read_checkpoint(tmp_path / "dif"))
    assert load_dit(tmp_path / "dif").cfg == CFG
