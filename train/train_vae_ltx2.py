"""Train the LTX-2 demo's video VAE (ShapesWorld, CPU-sized): `train.train_vae`'s recipe on the native LTX-2 VAE.

    python -m train.train_vae_ltx2                                        # configs/train_vae_ltx2.yaml
    python -m train.train_vae_ltx2 --config-name train_vae_ltx2_decoder   # decoder fine-tuning, latents frozen

The block list (configs/demo/ltx2_vae.yaml) compresses 8x in space and time into 32 channels, so a 64x64x17
clip becomes an 8x8x3 latent grid, as the 0.9.x demo's; the LTX-2 pipelines read the factors from the VAE.
"""

from __future__ import annotations

from infer.app import hydra_app
from train.harness import TrainingError
from train.runner import RunError
from train.train_vae import TrainLTX2VAEConfig, train


def main() -> None:
    hydra_app(TrainLTX2VAEConfig, "train_vae_ltx2", train, (RunError, TrainingError, OSError))


if __name__ == "__main__":
    main()
