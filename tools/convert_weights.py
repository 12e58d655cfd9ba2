#!/usr/bin/env python
"""Convert LTX-Video checkpoints between the official single file, the diffusers layout and the ltx format,
LoRAs between the ComfyUI, diffusers (PEFT), trainer and ltx layouts, and LTX-2 bundled files between the
official and the ltx2 layout.

Examples:
  python tools/convert_weights.py ltxv-2b-0.9.8-distilled.safetensors ltxv-2b.ltx.safetensors
  python tools/convert_weights.py ltxv-2b.ltx.safetensors out/diffusers --to diffusers --dtype bfloat16
  python tools/convert_weights.py diffusers/LTX-Video-0.9.5 ltx.safetensors --model configs/model/ltxv-2b-0.9.5.yaml
  python tools/convert_weights.py ckpt.safetensors --dry-run          # print what is inside, write nothing
  python tools/convert_weights.py my-lora.safetensors out/my-lora --to diffusers   # a LoRA: any layout -> diffusers
  python tools/convert_weights.py out/my-lora comfy.safetensors --to comfy --model configs/model/ltxv-2b-0.9.5.yaml
  python tools/convert_weights.py ltx-2-19b-dev.safetensors ltx-2-19b-dev.ltx2.safetensors   # LTX-2 -> ltx2
  python tools/convert_weights.py ltx-2-19b-dev.safetensors vae.safetensors --components vae,audio_vae --to official
  python tools/convert_weights.py my-finetune.safetensors my-finetune-fp8.safetensors --to fp8-scaled --dtype bfloat16
  python tools/convert_weights.py my-finetune.safetensors my-finetune-Q4_K.gguf --to gguf-q4_k

Tensors are streamed (one in memory at a time) and the output is written atomically. Every key must be
covered by a conversion rule, and the architecture comes from the checkpoint's own config (metadata or
config.json); `--model` checks it against a preset and stops on any difference.
LoRA inputs are detected (ltx.core.lora_formats, with 0.9.x's diffusers names: ltx.ltxv.lora): `--to` then takes
comfy, diffusers (a folder), trainer or ltx; `--model` checks the LoRA's module names and shapes against the
preset's transformer.
LTX-2 inputs (ltx.ltx2.checkpoint.detect: an ltx2 file, audio components, or a metadata config with audio_vae /
vocoder) go through ltx.ltx2.checkpoint: `--to` takes ltx2 or official (default: the other layout),
`--components` any of transformer, text, vae, audio_vae, vocoder, duration_head; both layouts keep every tensor
bitwise and the metadata verbatim. A folder (or the files) of LTX-2.5's split component files is read as one
checkpoint: `--to official` joins them into one bundled file, `--components vae --to official` writes one
component's file. `--to diffusers` writes an LTX-2 checkpoint as diffusers LTX2Pipeline component folders
(transformer/, connectors/, vae/, audio_vae/, vocoder/, duration_head/; ltx.ltx2.diffusers_layout); such a folder
given as the input converts back to the official bundled file (--to official).
An LTX-2 latent upsampler file (flat metadata config with spatial_scale / rational_resampler, or rational resampler
keys) has one layout: --dry-run checks it, `--to official` copies it (with --dtype). An
x2 pixel-shuffle / temporal upsampler without those metadata keys is the 0.9.x layout exactly and converts as a
0.9.x `upsampler`.

Quantized outputs (ltx.core.quant): `--to fp8-scaled | fp8-comfy | fp8-cast | nvfp4` write the official single file
(0.9.x: transformer + VAE; LTX-2: the bundle) with the transformer's Linears quantized as the official tools choose
(non-block layers stay in --dtype); `--to gguf-q8_0 | gguf-q4_k | gguf-q5_k | gguf-q6_k | ...` write the transformer
alone as a GGUF file in ComfyUI-GGUF's naming, carrying the config (`ltx.config`).

Before anything is written (and with --dry-run) every component is checked the way the loader checks it, from
the headers: built on `meta` from its config, its key set, shapes and dtypes must match the file's. --overwrite
into an existing diffusers folder replaces only the component folders (or LoRA files) written here. Ctrl-C or
SIGTERM leaves dst as it was and no temporary file (exit 130 / 143); bad input is one line `error: ...`, exit 1
(LTX_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ltx.core.checkpoint import (  # noqa: E402
    CheckpointError,
    Terminated,
    check_output_path,
    own_temps,
    raise_on_sigterm,
)
from ltx.core.keymap import KeyMapError  # noqa: E402
from ltx.core.lora_formats import FORMATS as LORA_FORMATS  # noqa: E402
from ltx.core.lora_formats import LORA_FORMAT, RESERVED, LoRAError, LoRAWeights, is_lora  # noqa: E402
from ltx.core.quant import LAYOUTS as QUANT_LAYOUTS  # noqa: E402
from ltx.core.quant import QuantizingView, select_layers, write_gguf  # noqa: E402
from ltx.ltx2 import checkpoint as ltx2_ckpt  # noqa: E402
from ltx.ltxv import lora as ltxv_lora  # noqa: E402
from ltx.ltxv.checkpoint import COMPONENTS, FORMATS, WRITERS, read_checkpoint, validate  # noqa: E402
from ltx.ltxv.keys_official import ConfigError, config_diff  # noqa: E402
from ltx.ltxv.transformer import DiT  # noqa: E402
from ltx.presets import load_preset  # noqa: E402

DTYPES = {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LTX2_LAYOUTS = ("ltx2", "official")
# checkpoint formats, then LoRA-only ones, then the LTX-2 layout
ALL_FORMATS = (*FORMATS, *(f for f in LORA_FORMATS if f not in FORMATS), LTX2_LAYOUTS[0], *QUANT_LAYOUTS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error here (argparse prints usage + error)
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(
        prog="convert_weights.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, help="input checkpoint: a .safetensors file (official or ltx) or a diffusers "
                   "folder (pipeline root with transformer/ etc., or one component folder with config.json)")
    p.add_argument("dst", type=Path, nargs="?", help="output path: a .safetensors file for --to ltx/official, a "
                   "folder for --to diffusers (one subfolder per component); omit with --dry-run")
    p.add_argument("--to", choices=ALL_FORMATS, default=None, help=f"output format: checkpoints {FORMATS} "
                   f"(default: ltx), LoRAs {LORA_FORMATS} (default: ltx), LTX-2 files {LTX2_LAYOUTS} (default: the "
                   "layout the input is not in)")
    p.add_argument("--from", dest="src_format", choices=("auto", *ALL_FORMATS), default="auto",
                   help="input format; 'auto' (default) detects it and a given format must match what is found")
    p.add_argument("--components", default="all", help=f"comma-separated components to convert, from "
                   f"{sorted(COMPONENTS)} (LTX-Video 0.9.x) or {list(ltx2_ckpt.COMPONENTS)} (LTX-2) (default: all "
                   "found in the input)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="keep",
                   help="cast floating-point tensors to this dtype (default: keep each tensor's stored dtype)")
    p.add_argument("--model", type=Path, help="a configs/model/*.yaml preset; the checkpoint's transformer "
                   "config must equal its `dit` section (the differing fields are reported)")
    p.add_argument("--causal-temporal-positioning", choices=("auto", "true", "false"), default="auto",
                   help="for diffusers inputs, whose config does not store it: auto (default) reads the "
                   "pipeline class in model_index.json (LTXConditionPipeline -> true)")
    p.add_argument("--overwrite", action="store_true", help="replace dst if it exists (default: refuse)")
    p.add_argument("--dry-run", action="store_true", help="read and check the input, print a summary, write nothing")
    return p.parse_args(argv)


def summarize(ckpt) -> str:
    lines = [f"{ckpt.path}: {ckpt.format} format"]
    for name, cw in ckpt.components.items():
        dtypes = Counter(str(i.dtype).replace("torch.", "") for i in cw.infos.values())
        nbytes = sum(i.dtype.itemsize * torch.Size(i.shape).numel() for i in cw.infos.values())
        params = sum(torch.Size(i.shape).numel() for i in cw.infos.values())
        lines.append(f"  {name}: {len(cw.infos)} tensors, {params / 1e6:.2f} M values, {nbytes / 2**30:.3f} GiB, "
                     f"dtypes {dict(dtypes)}")
        lines.append(f"    config: {asdict(cw.config)}")
    if ckpt.extra:
        lines.append(f"  other official config entries kept: {sorted(ckpt.extra)}")
    return "\n".join(lines)


def load_model_preset(preset_path: Path):
    """--model: a configs/model/*.yaml preset (or a preset name); errors name the file and say what is valid."""
    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))
    hint = f" (--model takes a model preset, configs/model/*.yaml: {', '.join(presets[:3])}, ...)"
    try:
        return load_preset(str(preset_path))
    except Exception as e:  # noqa: BLE001 - YAML, schema and file errors alike: one line naming the file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        msg = first if str(preset_path) in first else f"{preset_path}: {first}"
        raise ConfigError(f"--model: {msg}{'' if 'presets:' in msg else hint}") from None


def check_model(ckpt, preset_path: Path) -> None:
    preset = load_model_preset(preset_path)
    if preset.is_ltx2:
        raise ConfigError(f"--model {preset_path.name} is an LTX-2 preset; this file is LTX-Video 0.9.x")
    if "dit" not in ckpt.components:
        raise ConfigError(f"{ckpt.path} has no transformer to check against {preset_path}")
    diff = config_diff(ckpt.components["dit"].config, preset.dit)
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r} vs {preset_path.name} {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"the checkpoint's transformer config contradicts {preset_path}: {shown}")


def summarize_lora(w: LoRAWeights) -> str:
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in w.tensors.values())
    values = sum(t.numel() for t in w.tensors.values())
    more = f" (+{len(w.modules) - 6} more)" if len(w.modules) > 6 else ""
    lines = [f"{w.path}: LoRA, {w.summary()}", f"  {len(w.tensors)} tensors, {values / 1e6:.2f} M values, "
             f"dtypes {dict(dtypes)}", f"  modules: {', '.join(w.modules[:6])}{more}"]
    for key in ("targets", "base_model"):
        if w.metadata.get(key):
            lines.append(f"  {key}: {w.metadata[key]}")
    return "\n".join(lines)


def convert_lora(args: argparse.Namespace) -> int:
    """The LoRA branch of `main`: any layout -> `args.to`, tensors (cast with --dtype) and alphas kept."""
    if args.to not in LORA_FORMATS:
        raise LoRAError(f"{args.src} is a LoRA; --to takes {LORA_FORMATS} for LoRAs, not {args.to!r}")
    if args.components != "all":
        raise LoRAError("--components selects checkpoint components; a LoRA converts whole")
    w = ltxv_lora.read_lora(args.src)
    if args.src_format != "auto" and args.src_format != w.format:
        raise LoRAError(f"{args.src} is a LoRA in the {w.format} layout, not {args.src_format}")
    if args.model is not None:
        preset = load_model_preset(args.model)
        with torch.device("meta"):
            ltxv_lora.check_lora(DiT(preset.dit), w)
    dtype = DTYPES[args.dtype]
    if dtype is not None:
        w.tensors = {k: t.to(dtype) for k, t in w.tensors.items()}
    print(summarize_lora(w))
    if args.dry_run:
        return 0
    targets = None
    if w.metadata.get("format") == LORA_FORMAT and "targets" in w.metadata:
        try:
            targets = json.loads(w.metadata["targets"])
        except json.JSONDecodeError:
            targets = None
        if not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
            raise LoRAError(f"{args.src}: metadata 'targets' is not a JSON list of module names")
    extra = {k: v for k, v in w.metadata.items() if k not in RESERVED}  # e.g. a trainer's own notes
    out = ltxv_lora.write_lora(args.dst, w, args.to, targets=targets, base_model=w.metadata.get("base_model", ""),
                               extra_metadata=extra, overwrite=args.overwrite)
    print(f"wrote {out} (LoRA, {args.to} layout)")
    return 0


def _components(spec: str, have: list[str]) -> list[str]:
    wanted = [c.strip() for c in spec.split(",")]
    if not all(wanted):
        raise CheckpointError(f"--components {spec!r}: give comma-separated names from {sorted(COMPONENTS)}")
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown:
        ltx2 = [c for c in unknown if c in ltx2_ckpt.COMPONENTS]
        hint = f" ({ltx2} are LTX-2 components; this is an LTX-Video 0.9.x checkpoint)" if ltx2 else ""
        raise CheckpointError(f"--components: {unknown} not known; components are {sorted(COMPONENTS)}{hint}")
    if len(set(wanted)) != len(wanted):
        raise CheckpointError(f"--components {spec!r} names a component twice")
    missing = [c for c in wanted if c not in have]
    if missing:
        raise CheckpointError(f"--components: the input has no {missing}; it has {have}")
    return wanted


def _ltx2_family(version: object) -> str:
    from ltx.ltx2.api import family

    return family(str(version or "2"))


def check_ltx2_model(path: Path, version: object, preset_path: Path) -> None:
    """--model for an LTX-2 file: an LTX-2 preset of the same release (model_version 2 vs 2.3). The
    architecture itself always comes from the file's metadata."""
    preset = load_model_preset(preset_path)
    if not preset.is_ltx2:
        raise ConfigError(f"--model {preset_path.name} is an LTX-Video 0.9.x preset; {path} is an LTX-2 file")
    want, got = _ltx2_family(preset.av.model_version), _ltx2_family(version)
    if want != got:
        raise ConfigError(f"--model {preset_path.name} is an LTX-{want} preset; {path} has model_version "
                          f"{version!r} (LTX-{got})")


def convert_ltx2(args: argparse.Namespace, kind: str) -> int:
    """The LTX-2 branch of `main` (ltx.ltx2.checkpoint): bundled files official <-> ltx2, or an upsampler file."""
    if kind == "upsampler":
        return convert_ltx2_upsampler(args)
    names = None if args.components == "all" else args.components
    try:
        names = None if names is None else ltx2_ckpt.parse_components(names)
    except CheckpointError as e:
        raise CheckpointError(f"--components: {e}") from None
    ckpt = ltx2_ckpt.read(args.src)
    if names is not None:
        missing = [n for n in names if n not in ckpt.keys]
        if missing:
            raise CheckpointError(f"--components: {args.src} holds no {missing}; it holds {list(ckpt.components)}")
    if args.src_format != "auto" and args.src_format != ckpt.format:
        raise CheckpointError(f"{args.src} is an LTX-2 file in the {ckpt.format} layout, not {args.src_format}")
    to = args.to or ("official" if ckpt.format == "ltx2" else "ltx2")
    if to == "diffusers":
        return convert_ltx2_to_diffusers(args, ckpt, names)
    if to not in LTX2_LAYOUTS:
        raise CheckpointError(f"--to {to}: {args.src} is an LTX-2 file; it converts to {' or '.join(LTX2_LAYOUTS)} "
                              "(the ltx / diffusers formats are LTX-Video 0.9.x)")
    if args.model is not None:
        check_ltx2_model(args.src, ckpt.model_version, args.model)
    print(ltx2_ckpt.summary(ckpt, names))  # checks keys, shapes and dtypes before anything is written
    if args.dry_run:
        print("  checked: every component's keys, shapes and dtypes fit its metadata config")
        return 0
    from tqdm import tqdm

    total = sum(len(ckpt.keys[n]) for n in (names or ckpt.components))
    with tqdm(total=total, desc=f"writing {to}", unit="tensor") as bar:
        out = ltx2_ckpt.write(ckpt, args.dst, layout=to, components=names, dtype=DTYPES[args.dtype],
                              overwrite=args.overwrite, progress=lambda e: bar.update(1))
    print(f"wrote {out} (LTX-2, {to} layout)")
    return 0


def convert_ltx2_to_diffusers(args: argparse.Namespace, ckpt, names) -> int:
    """LTX-2 -> diffusers `LTX2Pipeline` component folders under dst (transformer/, connectors/, vae/, audio_vae/,
    vocoder/, duration_head/; ltx.ltx2.diffusers_layout.write_diffusers): every component, or --components."""
    from ltx.ltx2.diffusers_layout import write_diffusers

    chosen = names or tuple(ckpt.components)
    print(ltx2_ckpt.summary(ckpt, list(chosen)))
    if args.dry_run:
        print("  checked: keys, shapes and dtypes fit the metadata config")
        return 0
    out = write_diffusers(ckpt, args.dst, chosen, dtype=DTYPES[args.dtype], overwrite=args.overwrite)
    print(f"wrote {', '.join(str(p) for p in out)} (LTX-2, diffusers LTX2Pipeline component folders)")
    return 0


def convert_ltx2_from_diffusers(args: argparse.Namespace) -> int:
    """A diffusers LTX-2 folder (LTX2Pipeline components) -> the official bundled file: each component read
    strictly into ours, then written with its metadata config; model_version from the transformer's flags."""
    from ltx.ltx2.diffusers_layout import read_diffusers

    if args.to not in (None, "official"):
        raise CheckpointError(f"--to {args.to}: a diffusers LTX-2 folder converts to the official bundled file "
                              "(--to official)")
    modules = read_diffusers(args.src)
    version = {"2.0": "2.0.0", "2.3": "2.3.0", "2.5": "2.5.0"}[modules["transformer"].cfg.version] \
        if "transformer" in modules else "2.0.0"
    for name, module in modules.items():
        print(f"  {name}: {ltx2_ckpt.describe(name, module)}")
    if args.dry_run:
        print(f"  checked: {', '.join(modules)} read strictly (model_version {version} from the transformer's flags)")
        return 0
    out = ltx2_ckpt.write_modules(args.dst, modules, model_version=version, overwrite=args.overwrite,
                                  dtype=DTYPES[args.dtype])
    print(f"wrote {out} (LTX-2 official bundled file, model_version {version}, from diffusers)")
    return 0


def convert_ltx2_upsampler(args: argparse.Namespace) -> int:
    """An LTX-2 latent upsampler: one layout (unprefixed keys, flat config); checked, and copied (cast) on request."""
    up = ltx2_ckpt.read_upsampler(args.src)
    if args.components != "all":
        raise CheckpointError(f"--components: {args.src} is an LTX-2 latent upsampler file; it converts whole")
    if args.to not in (None, "official"):
        raise CheckpointError(f"--to {args.to}: {args.src} is an LTX-2 latent upsampler file, which has one layout "
                              "(unprefixed keys, flat metadata config) that ltx loads as it is "
                              "(ltx.ltx2.checkpoint.load_upsampler); --to official [--dtype ...] rewrites it")
    if args.src_format not in ("auto", "official"):
        raise CheckpointError(f"{args.src} is an LTX-2 latent upsampler file (official layout), not {args.src_format}")
    if args.model is not None:
        preset = load_model_preset(args.model)
        if not preset.is_ltx2:
            raise ConfigError(f"--model {args.model.name} is an LTX-Video 0.9.x preset; {args.src} is an LTX-2 "
                              "latent upsampler")
    print(ltx2_ckpt.upsampler_summary(up))
    if args.dry_run:
        print("  checked: keys, shapes and dtypes fit its metadata config")
        return 0
    out = ltx2_ckpt.write_upsampler(up, args.dst, dtype=DTYPES[args.dtype], overwrite=args.overwrite)
    print(f"wrote {out} (LTX-2 latent upsampler, official layout)")
    return 0


def convert_quantized(args: argparse.Namespace) -> int:
    """--to <quantized layout>: the transformer's chosen Linears quantized (ltx.core.quant does the work), the
    rest cast to --dtype; checked by the loaders' own header check before anything is written (LTX-2)."""
    layout, dtype = args.to, DTYPES[args.dtype]
    if args.components != "all":
        raise CheckpointError(f"--components: --to {layout} writes the whole checkpoint (GGUF: the transformer)")
    kind = ltx2_ckpt.detect(args.src)
    if kind == "upsampler":
        raise CheckpointError(f"--to {layout}: {args.src} is a latent upsampler; only transformers are quantized")
    if kind is not None:  # LTX-2 bundle
        ckpt = ltx2_ckpt.read(args.src)
        if args.model is not None:
            check_ltx2_model(args.src, ckpt.model_version, args.model)
        meta = ltx2_ckpt.check(ckpt, ["transformer"])["transformer"]
        fk = ckpt.keys["transformer"]
        layers = select_layers(meta, layout)
        if layout.startswith("gguf-"):
            strings = {"ltx.family": "ltx2", "ltx.config": json.dumps(ckpt.config),
                       "ltx.model_version": str(ckpt.model_version)}
            out = write_gguf(args.dst, {o: ckpt.reader.infos[k] for o, k in fk.items()},
                             lambda o: ckpt.reader.get(fk[o]), layers, _gguf_type(layout), strings=strings,
                             overwrite=args.overwrite)
        else:
            wanted = [fk[f"{n}.weight"][: -len(".weight")] for n in layers]
            view = QuantizingView(ckpt.reader.infos, ckpt.reader.get, wanted, layout, dtype, ckpt.reader.metadata)
            keys = {n: dict(k) for n, k in ckpt.keys.items()}
            for layer, ours in zip(wanted, layers):
                for key in view.infos:
                    if key.startswith(layer + ".") and key != layer + ".weight":
                        keys["transformer"][ours + key[len(layer):]] = key
            quantized = ltx2_ckpt.LTX2Checkpoint(args.dst, ckpt.format, ckpt.config, ckpt.model_version, keys, view)
            out = ltx2_ckpt.write(quantized, args.dst, layout="official", overwrite=args.overwrite)
    else:
        ckpt = read_checkpoint(args.src)
        if "dit" not in ckpt.components:
            raise CheckpointError(f"--to {layout}: {args.src} holds no transformer (it has {sorted(ckpt.components)})")
        if args.model is not None:
            check_model(ckpt, args.model)
        validate(ckpt)
        cw = ckpt.components["dit"]
        layers = select_layers(_meta_dit(cw), layout)
        if layout.startswith("gguf-"):
            config = {"transformer": COMPONENTS["dit"].config_to_official(cw.config)}
            out = write_gguf(args.dst, cw.infos, cw.fetch, layers, _gguf_type(layout), overwrite=args.overwrite,
                             strings={"ltx.family": "ltxv", "ltx.config": json.dumps(config)})
        else:
            for name, c in list(ckpt.components.items()):
                view = QuantizingView(c.infos, c.fetch, layers if name == "dit" else [], layout, dtype)
                ckpt.components[name] = type(c)(name, c.config, view.infos, view.get)
            out = WRITERS["official"](ckpt, args.dst, overwrite=args.overwrite)
    print(f"wrote {out} ({layout}: {len(layers)} Linears quantized)")
    return 0


def _meta_dit(cw):
    with torch.device("meta"):
        return DiT(cw.config)


def _gguf_type(layout: str) -> int:
    from ltx.core.quant.layouts import layout_kind

    return layout_kind(layout)[1]


def convert(args: argparse.Namespace) -> int:
    if is_lora(args.src):
        args.to = args.to or "ltx"
        return convert_lora(args)
    if args.to in QUANT_LAYOUTS:
        return convert_quantized(args)
    kind = ltx2_ckpt.detect(args.src)
    if kind is not None:
        return convert_ltx2(args, kind)
    from ltx.ltx2.diffusers_layout import is_diffusers_ltx2

    if is_diffusers_ltx2(args.src):
        return convert_ltx2_from_diffusers(args)
    if args.to == "ltx2":
        raise CheckpointError(f"--to ltx2 is the LTX-2 layout; {args.src} is not an LTX-2 file (LTX-Video 0.9.x "
                              f"checkpoints convert to {FORMATS})")
    args.to = args.to or "ltx"
    causal = {"auto": None, "true": True, "false": False}[args.causal_temporal_positioning]
    ckpt = read_checkpoint(args.src, causal_temporal_positioning=causal)  # an unreadable file says why here
    if args.to not in FORMATS:
        raise CheckpointError(f"--to {args.to} is a LoRA format; checkpoints convert to {FORMATS}")
    if args.src_format != "auto" and args.src_format != ckpt.format:
        raise CheckpointError(f"{args.src} is in the {ckpt.format} format, not {args.src_format}")
    if args.components != "all":
        wanted = _components(args.components, sorted(ckpt.components))
        ckpt.components = {c: ckpt.components[c] for c in wanted}
    if args.model is not None:
        check_model(ckpt, args.model)
    validate(ckpt)  # keys, shapes and dtypes against the config, from the headers: before any file is written
    print(summarize(ckpt))
    if args.dry_run:
        print("  checked: every component's keys, shapes and dtypes fit its config")
        return 0
    from tqdm import tqdm

    total = sum(len(cw.infos) for cw in ckpt.components.values())
    with tqdm(total=total, desc=f"writing {args.to}", unit="tensor") as bar:
        out = WRITERS[args.to](ckpt, args.dst, dtype=DTYPES[args.dtype], overwrite=args.overwrite,
                               progress=lambda e: bar.update(1))
    print(f"wrote {out} ({args.to} format)")
    return 0


def _leftovers(dst: Path | None) -> list[Path]:
    """Temporaries of this process beside dst or inside it (a second interrupt during cleanup): removed now;
    what cannot be removed is returned (the next run removes it: ltx.core.checkpoint.remove_stale_temps)."""
    if dst is None:
        return []
    folders = [dst.parent] + ([dst, *(p for p in dst.iterdir() if p.is_dir())] if dst.is_dir() else [])
    left = []
    for p in (t for folder in folders for t in own_temps(folder)):
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            left.append(p)
    return left


def _message(e: BaseException, args: argparse.Namespace) -> str:
    if isinstance(e, OSError) and e.strerror:
        if e.filename is not None:
            two = f" -> {e.filename2}" if e.filename2 is not None else ""
            return f"{e.filename}{two}: {e.strerror}"
        return f"{e.strerror} (reading {args.src}" + (f", writing {args.dst})" if args.dst else ")")
    return str(e).replace("pass overwrite=True (CLI: --overwrite)", "pass --overwrite")


class SignalWatch:
    """SIGINT / SIGTERM over a conversion: while it runs they raise as usual (KeyboardInterrupt / `Terminated`) and
    are also remembered, so one whose exception was swallowed on the way (raised inside a destructor or a library's
    catch-all, which prints "Exception ignored" and goes on) is still reported. `settle()` is the decision point:
    from then on both signals are blocked, one that was received or is pending is returned, and nothing can
    interrupt the report. With `hold`, they stay blocked after the block (the command line exits right away, so
    a signal after the decision cannot be lost in the interpreter's shutdown); else the previous state returns."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, hold: bool = False):
        self.hold = hold
        self.received: int | None = None
        self.active = threading.current_thread() is threading.main_thread()
        self.previous: dict = {}
        self.mask: set | None = None

    def __enter__(self) -> SignalWatch:
        if self.active:  # wrap Python's Ctrl-C handler and our SIGTERM one; a launcher's own handler is kept
            ours = {signal.SIGINT: signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                    signal.SIGTERM: raise_on_sigterm()}
            for sig in self.SIGNALS:
                if ours[sig]:
                    self.previous[sig] = signal.getsignal(sig)
                    signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.received = self.received or signum
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    def settle(self) -> int | None:
        """Block both signals, take in the pending ones, and return the first signal received (None: none)."""
        if not self.active:
            return self.received
        if self.mask is None:
            self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        for sig in sorted(signal.sigpending() & set(self.SIGNALS)):
            signal.sigwait([sig])  # consumed: it is reported here, not raised later
            self.received = self.received or sig
        return self.received

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        self.settle()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if not self.hold:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """(inode, mtime) of a path, None when absent: an atomic write into it changes both."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_ino, st.st_mtime_ns)


def _interrupted(args: argparse.Namespace, before: tuple[int, int] | None, signum: int) -> int:
    """The one line of an interrupted run (whether dst was written, and what is left), and its exit status."""
    if args.dry_run:
        print("interrupted; nothing was written", file=sys.stderr)
    else:
        left = _leftovers(args.dst)
        tail = f"; temporary files left: {[str(p) for p in left]}" if left else " (no temporary file left)"
        after = _stamp(args.dst)
        if after is not None and after != before:  # renamed into place: atomic writes only ever leave it whole
            print(f"interrupted after {args.dst} was completely written (it is complete and usable){tail}",
                  file=sys.stderr)
        else:
            print(f"interrupted; {args.dst} was not written{tail}", file=sys.stderr)
    return 128 + signum


def main(argv: list[str] | None = None, *, hold_signals: bool = False) -> int:
    """The command line (tests call it in-process); `hold_signals`: see `SignalWatch` (the script's own entry)."""
    raise_on_sigterm()  # a `kill` unwinds like Ctrl-C: atomic writes remove their temporary files
    args = parse_args(argv)
    if args.dst is None and not args.dry_run:
        print("error: give a destination path, or --dry-run", file=sys.stderr)
        return 2
    before = _stamp(args.dst)
    with SignalWatch(hold=hold_signals) as watch:
        try:
            if not args.dry_run:  # refuse a destination that cannot be written before reading anything
                check_output_path(args.dst, folder=args.to == "diffusers", overwrite=args.overwrite)
            code = convert(args)
        except KeyboardInterrupt as e:
            watch.settle()  # a second Ctrl-C cannot cut the cleanup and the report short
            return _interrupted(args, before, e.signum if isinstance(e, Terminated) else signal.SIGINT)
        except (CheckpointError, ConfigError, KeyMapError, OSError, ValueError) as e:  # bad input: one line
            if os.environ.get("LTX_DEBUG"):
                raise
            print(f"error: {_message(e, args)}", file=sys.stderr)
            return 1
        except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
            if os.environ.get("LTX_DEBUG"):
                raise
            print(f"error: unexpected {type(e).__name__}: {e} (LTX_DEBUG=1 shows the traceback)", file=sys.stderr)
            return 1
        late = watch.settle()  # the decision: a signal received at any point so far wins
        return code if late is None else _interrupted(args, before, late)


def cli() -> None:
    """The script's entry: `main` with the signals held blocked after its decision, then an immediate exit (no
    interpreter shutdown in which a late signal could be raised and ignored)."""
    code = main(hold_signals=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
