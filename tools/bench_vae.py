"""Benchmark the VAE on CPU: ours vs the official ltx-video 0.1.2 vs diffusers, and tiled vs untiled memory.

    python tools/bench_vae.py [--width 32] [--frames 17] [--size 256] [--repeats 3]

Table 1: decode and encode time (best of --repeats) and peak memory of the 0.9.5 block list at reduced width
(all load the same random weights from one official-format file; same input, same threads). "ours" is the
default conv path (PyTorch's dispatch, as the official code), "ours-taps" / "ours-direct" the opt-in ones
(`ltx.ltxv.vae.set_cpu_conv_path`; less accurate on some CPUs); the last column of their rows is the default's
time over theirs.
Table 2: our decode, untiled vs tiled (a fixed 2 GiB-style budget scaled down: tiles of 8x8 latents), at
growing frame sizes, with the `decode_memory_bytes` estimate beside the measurement (`--tiled-sizes ""` skips it).

Peak memory is measured per run in a fresh subprocess: peak RSS (ru_maxrss) minus the RSS just before the
first call, so weights and inputs are excluded and the output is included. The machine is shared, so times
carry noise; the script alternates implementations and keeps the best of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def make_file(path: Path, width: int) -> None:
    """An official-format file with the 0.9.5 block list at `width` (random weights)."""
    from safetensors.torch import save_file

    from ltx.ltxv.keys_vae import vae_config_to_official
    from ltx.ltxv.vae import VAE_PRESETS, VideoVAE, tiny

    cfg = tiny(VAE_PRESETS["0.9.5"], width)
    cfg.latent_channels = 128
    torch.manual_seed(0)
    with torch.device("meta"):
        vae = VideoVAE(cfg)
    vae.to_empty(device="cpu").init_weights()
    with torch.no_grad():
        for name, t in vae.named_parameters():
            if "scale_shift_table" in name or "per_channel_scale" in name:
                t.normal_(0, 0.1)
    tensors = {"vae." + k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps({"vae": vae_config_to_official(cfg)})})


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints JSON {seconds, peak_bytes}."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    file = Path(args.file)
    F, S = args.frames, args.size
    x = torch.rand(1, 3, F, S, S) * 2 - 1
    z = torch.randn(1, 128, (F - 1) // 8 + 1, S // 32, S // 32)
    t = torch.tensor([0.05])
    if args.impl == "official":
        from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
        from ltx_video.models.autoencoders.vae_encode import vae_decode

        vae = CausalVideoAutoencoder.from_pretrained(file).eval()
        run = {
            "decode": lambda: vae_decode(z, vae, is_video=True, vae_per_channel_normalize=True, timestep=t),
            "encode": lambda: vae.encode(x).latent_dist.parameters,
        }[args.op]
    elif args.impl == "diffusers":
        from diffusers import AutoencoderKLLTXVideo
        from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers
        from safetensors.torch import load_file

        from ltx.ltxv.checkpoint import read_checkpoint
        from ltx.ltxv.keys_vae import vae_config_to_diffusers

        tensors = load_file(str(file))
        conv_out = tensors["vae.encoder.conv_out.conv.weight"]
        tensors["vae.encoder.conv_out.conv.weight"] = torch.empty(1, 2048)  # diffusers' 0.9.5 detection
        sd = convert_ltx_vae_checkpoint_to_diffusers(tensors)
        sd["encoder.conv_out.conv.weight"] = conv_out
        cfg = vae_config_to_diffusers(read_checkpoint(file).components["vae"].config)
        vae = AutoencoderKLLTXVideo(**{k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
        vae.load_state_dict(sd)
        mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
        run = {
            "decode": lambda: vae.decode(z * std + mean, t).sample,
            "encode": lambda: vae.encode(x).latent_dist.parameters,
        }[args.op]
    else:
        from ltx.ltxv.checkpoint import load_component
        from ltx.ltxv.vae import set_cpu_conv_path
        from ltx.ltxv.vae_tiling import Tiling, tiled_decode

        vae = load_component(file, "vae")
        if args.impl in ("ours-taps", "ours-direct"):
            set_cpu_conv_path(args.impl.removeprefix("ours-"))
        if args.impl == "tiled":
            tiling = Tiling((3, 8, 8), (2, 2, 2))
            run = lambda: tiled_decode(vae, z, t, tiling=tiling)  # noqa: E731
        else:
            run = {"decode": lambda: vae.decode(z, t), "encode": lambda: vae.encode_moments(x)}[args.op]
    with torch.inference_mode():
        before = rss_bytes()  # before the warm-up: freed memory stays in the process, so measure from here
        run()  # warm-up: oneDNN builds its kernels for each new shape on the first call
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = run()
            best = min(best, time.perf_counter() - t0)
            del out
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"seconds": best, "peak_bytes": peak}))


def measure(args, impl: str, op: str, size: int, file: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--op", op, "--file", str(file),
           "--size", str(size), "--frames", str(args.frames), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=32, help="encoder/decoder base channels (release: 128)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per implementation (best kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiled-sizes", default="256,512,1024")
    p.add_argument("--tiled-width", type=int, default=16)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--op", default="decode", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    tmp = Path(tempfile.mkdtemp(prefix="bench_vae_"))
    file = tmp / "vae.safetensors"
    make_file(file, args.width)
    print(f"0.9.5 block list, base width {args.width}, 128 latent channels; input 1x3x{args.frames}x{args.size}x"
          f"{args.size}; {args.threads} threads; torch {torch.__version__}; {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| op | impl | time (s) | vs official | peak memory (MiB) | default / this |")
    print("|---|---|---|---|---|---|")
    for op in ("decode", "encode"):
        results: dict[str, dict] = {}
        for _ in range(args.rounds):
            for impl in ("official", "diffusers", "ours", "ours-taps", "ours-direct"):
                r = measure(args, impl, op, args.size, file)
                old = results.get(impl)
                results[impl] = {"seconds": min(r["seconds"], old["seconds"]) if old else r["seconds"],
                                 "peak_bytes": r["peak_bytes"]}  # fmt: skip
        ref = results["official"]["seconds"]
        for impl, r in results.items():
            ratio = f"{results['ours']['seconds'] / r['seconds']:.2f}x" if impl.startswith("ours-") else ""
            print(f"| {op} | {impl} | {r['seconds']:.3f} | {r['seconds'] / ref:.2f}x | {r['peak_bytes'] / 2**20:.0f} | "
                  f"{ratio} |")  # fmt: skip

    if not args.tiled_sizes:
        return
    from ltx.ltxv.checkpoint import read_checkpoint
    from ltx.ltxv.vae_tiling import Tiling, decode_memory_bytes

    file16 = tmp / "vae16.safetensors"
    make_file(file16, args.tiled_width)
    cfg = read_checkpoint(file16).components["vae"].config
    print(f"\nDecode, untiled vs tiled (tiles of 3x8x8 latents = 17 frames x 256 px, overlap 2), base width "
          f"{args.tiled_width}, {args.frames} frames. Peak = measured peak RSS above the pre-call RSS (includes the "
          "output); estimate = decode_memory_bytes minus weights.\n")  # fmt: skip
    print("| size | output (MiB) | untiled peak (MiB) | untiled estimate | tiled peak (MiB) | tiled estimate | "
          "tiled peak - output | tiled time (s) | untiled time (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    weights = decode_memory_bytes(cfg, (1, 128, 1, 1, 1)) - 4 * (128 + 1)
    for size in (int(s) for s in args.tiled_sizes.split(",")):
        shape = (1, 128, (args.frames - 1) // 8 + 1, size // 32, size // 32)
        out_mib = 4 * 3 * args.frames * size * size / 2**20
        a = measure(argparse.Namespace(**{**vars(args), "repeats": 1}), "ours", "decode", size, file16)
        b = measure(argparse.Namespace(**{**vars(args), "repeats": 1}), "tiled", "decode", size, file16)
        est_a = (decode_memory_bytes(cfg, shape) - weights) / 2**20
        est_b = (decode_memory_bytes(cfg, shape, tiling=Tiling((3, 8, 8), (2, 2, 2))) - weights) / 2**20
        print(f"| {size}x{size} | {out_mib:.0f} | {a['peak_bytes'] / 2**20:.0f} | {est_a:.0f} | "
              f"{b['peak_bytes'] / 2**20:.0f} | {est_b:.0f} | {(b['peak_bytes'] / 2**20 - out_mib):.0f} | "
              f"{b['seconds']:.2f} | {a['seconds']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
