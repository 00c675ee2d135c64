"""A tiny random-weight Coqui VITS voice, built with coqui-tts's own code, fully offline.

No trained Coqui voice ships on a package registry, so the tests and the CPU demo
(`serve_config.coqui.yaml`) run the real Coqui engine on this one: a small VITS (~470k
parameters, 16 kHz) with a plain character set, so no phonemizer or download is needed.
It speaks noise shaped like speech, deterministically (no stochastic duration predictor, no
sampling noise), with a length that grows with the text. On a GPU cluster, point
`tts.model_path` at a trained model folder instead (README, "Coqui voices").

Run with the Coqui environment's Python: `.venv-coqui/bin/python -m salesagent.voice.coqui_voice
[--out DIR]`; it prints the folder (model.pth, config.json) and skips a finished one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from salesagent.platform.settings import default_model_cache

RANDOM_VOICE_FOLDER = "coqui-random-vits"


def build_random_vits(folder: Path, seed: int = 0) -> Path:
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(seed)
    config = VitsConfig(
        run_name="random-vits",
        use_phonemes=False,
        phonemizer=None,
        text_cleaner="english_cleaners",  # "$299" -> "two hundred ninety nine dollars"
        add_blank=True,
        characters=CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters",
            pad="<PAD>",
            eos=None,
            bos=None,
            blank="<BLNK>",
            is_unique=False,
            is_sorted=True,
            characters="abcdefghijklmnopqrstuvwxyz",
            punctuations="!'(),-.:;? ",
            phonemes=None,
        ),
        audio=BaseAudioConfig(
            sample_rate=16000, win_length=1024, hop_length=256, num_mels=80, fft_size=1024
        ),
        model_args=VitsArgs(
            hidden_channels=32,
            hidden_channels_ffn_text_encoder=64,
            num_heads_text_encoder=2,
            num_layers_text_encoder=2,
            num_layers_posterior_encoder=2,
            num_layers_flow=2,
            resblock_type_decoder="2",
            resblock_kernel_sizes_decoder=[3],
            resblock_dilation_sizes_decoder=[[1, 3]],
            upsample_rates_decoder=[8, 8, 4],  # their product is the hop length
            upsample_kernel_sizes_decoder=[16, 16, 8],
            upsample_initial_channel_decoder=64,
            use_sdp=False,  # the deterministic duration predictor
            init_discriminator=False,  # inference only: no discriminator weights
            inference_noise_scale=0.0,
        ),
    )
    model = Vits(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config.save_json(str(folder / "config.json"))
    partial = folder / "model.pth.partial"
    torch.save({"model": model.state_dict()}, partial)
    partial.rename(folder / "model.pth")  # last: a killed build is redone, not trusted
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_model_cache() / RANDOM_VOICE_FOLDER)
    args = parser.parse_args()
    if not (args.out / "model.pth").is_file():
        build_random_vits(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
