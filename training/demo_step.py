"""The training leg of `onegen demo`: tiny local T5 + VAE, precompute, a short CPU train, samples.

`build_tiny_text_encoder(path)` / `build_tiny_vae(path)` write random checkpoints from configs
(save_pretrained) that load through the same `TextEncoder.load` / `Vae.load` code as hub ids; tests
use them too. `run_training_demo(shards, out)` returns {"checkpoint", "samples", "final_loss", ...}.
"""

from __future__ import annotations

import time
from pathlib import Path

CORPUS_WORDS = ("a photo of the cat dog person face city tree car red blue green small large image "
                "text2image canny2image deblurring image_inpainting super_resolution depth2image hed2img "
                "pose2image semanticmap2image boundingbox2image multiview faceid img0 img1 img2 mask")


def build_tiny_text_encoder(path: str | Path, width: int = 32) -> str:
    """A 1-layer T5 encoder (d_model = `width`) + a word-level tokenizer trained in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([CORPUS_WORDS, "[[ ]] < > # :"], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=300)
    config = T5Config(vocab_size=tokenizer.get_vocab_size(), d_model=width, d_kv=8, d_ff=2 * width, num_layers=1,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    import torch

    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return str(path)


def build_tiny_vae(path: str | Path) -> str:
    """A random AutoencoderKL with 16 latent channels and 8x downsampling (4 blocks, 3 downsamples)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(4, 8, 8, 8), scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(str(path))
    return str(path)


def _condition_image(shards: str, task: str, folder: Path) -> str | None:
    """Write the condition view (img1) of the first `task` sample in the raw shards to a PNG."""
    import io

    import webdataset as wds
    from PIL import Image

    from onegen.manifests.query import select_shards

    urls = select_shards(shards, tasks=[task])
    for sample in wds.DataPipeline(wds.SimpleShardList(urls[:1]), wds.tarfile_to_samples()):
        name = next((k for k in sample if k.startswith("img1.")), None)
        if name:
            path = folder / f"{task}-condition.png"
            Image.open(io.BytesIO(sample[name])).convert("RGB").save(path)
            return str(path)
    return None


def run_training_demo(shards: str, out: str, steps: int = 200) -> dict:
    """Tiny T5 + VAE -> precompute (64 px) -> `tiny` Next-DiT for `steps` CPU steps -> one sample per family.

    Returns {"checkpoint", "latents", "samples": {task: [png paths]}, "final_loss", "seconds"}.
    """
    import torch

    from onegen.manifests.query import read_manifests
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae
    from onegen.training.precompute import PrecomputeConfig, run_precompute
    from onegen.training.sample import SampleRequest, generate, load_denoiser, write_outputs
    from onegen.training.train import TrainConfig, train

    start, root = time.time(), Path(out)
    folder = root / "training"
    folder.mkdir(parents=True, exist_ok=True)
    t5, vae_path = build_tiny_text_encoder(folder / "tiny-t5"), build_tiny_vae(folder / "tiny-vae")
    print(f"[demo] tiny T5 + VAE written to {folder}", flush=True)
    latents = str(folder / "latent-shards")
    print(f"[demo] precompute: {run_precompute(PrecomputeConfig(shards, latents, t5, vae_path, ((64, 64),)))}", flush=True)
    config = TrainConfig(shards=latents, out=str(folder / "run"), preset="tiny", text_encoder=t5, vae=vae_path,
                         batch_size=4, steps=steps, lr=2e-3, ema_decay=0.95, num_workers=0, ckpt_every=steps,
                         buckets=((64, 64),), progress=False)
    result = train(config)
    print(f"[demo] trained {steps} steps, final loss {result['losses'][-1]:.4f}", flush=True)
    model, _ = load_denoiser(result["checkpoint"], torch.device("cpu"))
    vae, text_encoder = Vae.load(vae_path), TextEncoder.load(t5)
    tasks = set(read_manifests(shards, ["task"]).to_pydict().get("task", []))
    samples = {}
    for task in sorted(tasks):
        condition = None if task == "text2image" else _condition_image(shards, task, folder)
        if task != "text2image" and (condition is None or task in samples or any(t != "text2image" for t in samples)):
            continue  # one sample per family: text2image and the first condition task
        request = SampleRequest(task, "a photo", (condition,) if condition else (), size=(64, 64), steps=10)
        latent, kinds, flags = generate(model, request, vae, text_encoder)
        samples[task] = write_outputs(latent, kinds, flags, vae, str(folder / "samples" / task), task)
        print(f"[demo] sample {task}: {samples[task]}", flush=True)
    return {"checkpoint": result["checkpoint"], "latents": latents, "samples": samples,
            "final_loss": result["losses"][-1], "seconds": time.time() - start}
