#!/usr/bin/env python
"""Convert LTX-Video checkpoints between the official single file, the diffusers layout and the ltx format,
and LoRAs between the ComfyUI, diffusers (PEFT), trainer and ltx layouts.

Examples:
  python tools/convert_weights.py ltxv-2b-0.9.8-distilled.safetensors ltxv-2b.ltx.safetensors
  python tools/convert_weights.py ltxv-2b.ltx.safetensors out/diffusers --to diffusers --dtype bfloat16
  python tools/convert_weights.py diffusers/LTX-Video-0.9.5 ltx.safetensors --model configs/model/ltxv-2b-0.9.5.yaml
  python tools/convert_weights.py ckpt.safetensors --dry-run          # print what is inside, write nothing
  python tools/convert_weights.py my-lora.safetensors out/my-lora --to diffusers   # a LoRA: any layout -> diffusers
  python tools/convert_weights.py out/my-lora comfy.safetensors --to comfy --model configs/model/ltxv-2b-0.9.5.yaml

Tensors are streamed (one in memory at a time) and the output is written atomically. Every key must be
covered by a conversion rule, and the architecture comes from the checkpoint's own config (metadata or
config.json); `--model` checks it against a preset and stops on any difference.
LoRA inputs are detected (ltx.convert.lora_formats): `--to` then takes comfy, diffusers (a folder), trainer or
ltx; `--model` checks the LoRA's module names and shapes against the preset's transformer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ltx.checkpoint import CheckpointError  # noqa: E402
from ltx.convert import lora_formats as lf  # noqa: E402
from ltx.convert.formats import COMPONENTS, FORMATS, WRITERS, read_checkpoint  # noqa: E402
from ltx.convert.official import ConfigError, config_diff  # noqa: E402

DTYPES = {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ALL_FORMATS = (*FORMATS, *(f for f in lf.FORMATS if f not in FORMATS))  # checkpoint formats, then LoRA-only ones


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="convert_weights.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, help="input checkpoint: a .safetensors file (official or ltx) or a diffusers "
                   "folder (pipeline root with transformer/ etc., or one component folder with config.json)")
    p.add_argument("dst", type=Path, nargs="?", help="output path: a .safetensors file for --to ltx/official, a "
                   "folder for --to diffusers (one subfolder per component); omit with --dry-run")
    p.add_argument("--to", choices=ALL_FORMATS, default="ltx", help=f"output format (default: %(default)s): "
                   f"checkpoints {FORMATS}, LoRAs {lf.FORMATS}")
    p.add_argument("--from", dest="src_format", choices=("auto", *ALL_FORMATS), default="auto",
                   help="input format; 'auto' (default) detects it and a given format must match what is found")
    p.add_argument("--components", default="all", help=f"comma-separated components to convert, from "
                   f"{sorted(COMPONENTS)} (default: all found in the input)")
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


def check_model(ckpt, preset_path: Path) -> None:
    from omegaconf import OmegaConf

    from ltx.presets import ModelPreset

    preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), OmegaConf.load(preset_path)))
    if "dit" not in ckpt.components:
        raise ConfigError(f"{ckpt.path} has no transformer to check against {preset_path}")
    diff = config_diff(ckpt.components["dit"].config, preset.dit)
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r} vs {preset_path.name} {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"the checkpoint's transformer config contradicts {preset_path}: {shown}")


def summarize_lora(w: lf.LoRAWeights) -> str:
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
    try:
        if args.to not in lf.FORMATS:
            raise lf.LoRAError(f"{args.src} is a LoRA; --to takes {lf.FORMATS} for LoRAs, not {args.to!r}")
        if args.components != "all":
            raise lf.LoRAError("--components selects checkpoint components; a LoRA converts whole")
        w = lf.read_lora(args.src)
        if args.src_format != "auto" and args.src_format != w.format:
            raise lf.LoRAError(f"{args.src} is a LoRA in the {w.format} layout, not {args.src_format}")
        if args.model is not None:
            from omegaconf import OmegaConf

            from ltx.lora import check_lora
            from ltx.models.dit import DiT
            from ltx.presets import ModelPreset

            preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), OmegaConf.load(args.model)))
            with torch.device("meta"):
                check_lora(DiT(preset.dit), w)
        dtype = DTYPES[args.dtype]
        if dtype is not None:
            w.tensors = {k: t.to(dtype) for k, t in w.tensors.items()}
        print(summarize_lora(w))
        if args.dry_run:
            return 0
        targets = json.loads(w.metadata["targets"]) if w.metadata.get("format") == lf.LORA_FORMAT else None
        extra = {k: v for k, v in w.metadata.items() if k not in lf.RESERVED}  # e.g. a trainer's own notes
        out = lf.write_lora(args.dst, w, args.to, targets=targets, base_model=w.metadata.get("base_model", ""),
                            extra_metadata=extra, overwrite=args.overwrite)
        print(f"wrote {out} (LoRA, {args.to} layout)")
        return 0
    except (CheckpointError, ConfigError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dst is None and not args.dry_run:
        print("error: give a destination path, or --dry-run", file=sys.stderr)
        return 2
    if args.dst is not None and args.dst.exists() and not args.overwrite and not args.dry_run:
        print(f"error: {args.dst} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    if lf.is_lora(args.src):
        return convert_lora(args)
    causal = {"auto": None, "true": True, "false": False}[args.causal_temporal_positioning]
    try:
        ckpt = read_checkpoint(args.src, causal_temporal_positioning=causal)  # an unreadable file says why here
        if args.to not in FORMATS:
            raise CheckpointError(f"--to {args.to} is a LoRA format; checkpoints convert to {FORMATS}")
        if args.src_format != "auto" and args.src_format != ckpt.format:
            raise CheckpointError(f"{args.src} is in the {ckpt.format} format, not {args.src_format}")
        if args.components != "all":
            wanted = [c.strip() for c in args.components.split(",") if c.strip()]
            missing = [c for c in wanted if c not in ckpt.components]
            if missing:
                raise CheckpointError(f"{args.src} has no {missing}; it has {sorted(ckpt.components)}")
            ckpt.components = {c: ckpt.components[c] for c in wanted}
        if args.model is not None:
            check_model(ckpt, args.model)
        print(summarize(ckpt))
        if args.dry_run:
            return 0
        from tqdm import tqdm

        total = sum(len(cw.infos) for cw in ckpt.components.values())
        with tqdm(total=total, desc=f"writing {args.to}", unit="tensor") as bar:
            out = WRITERS[args.to](ckpt, args.dst, dtype=DTYPES[args.dtype], overwrite=args.overwrite,
                                   progress=lambda e: bar.update(1))
        print(f"wrote {out} ({args.to} format)")
        return 0
    except (CheckpointError, ConfigError, FileExistsError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
