"""Drag-edit inference: source image + mask + handle/target points (+ prompt) -> edited images.

One edit (one drag step):
  1. the source is resized to the run size (by default the public release's rule: about the
     model resolution's area, the input's aspect ratio, sides multiples of `size_multiple`;
     schemas.coords owns the rule and the mapping of points, mask and pixels), encoded by the
     VAE (the latent mean: deterministic);
  2. the appearance encoder runs once on the clean source latents; the point embedding runs
     once on the point maps; the image prompt (IP-Adapter) and text are encoded once;
  3. noise prior: the source latents noised to the last training timestep (999);
  4. DDIM or LCM steps; with point-following guidance every step evaluates the backbone on
     [uncond, cond] in one batch, where uncond keeps every image condition and zeroes only the
     point terms, and mixes them with the scale of the chosen schedule;
  5. decode; the result stays at the run size (as the release returns it), or with
     `resize_back` is resized to the input size (benchmarks compare at their own sizes); with
     `keep_unmasked`, every pixel outside the mask is then the source's own at that size (the
     mask is the editable region: nothing else may change).
Several candidates run as one batch, candidate k seeded with seed + k; a long drag can be split
into `sequential` steps, each step editing the previous step's output.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import (CLIPImageProcessorPil, CLIPTextModel, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

from model import checkpoint
from model.attention import DragConditions, tile_batch
from model.lightning_drag import LightningDragModel
from model.lora import fuse_lora
from model.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, SCHEDULERS, SCHEDULES
from model.pixel_vae import PixelVAE
from model.images import images_to_tensor, tensor_to_images
from model.points import DragInputError, point_maps, validate_drag
from schemas.coords import area_size, resize_image, resize_mask, round_to_pixel, scale_points

NOISE_PRIOR_TIMESTEP = 999


def guidance_scale(schedule: str, scale: float, step: int, steps: int) -> float:
    """Point-guidance scale at a step: decays from `scale` towards 1 as denoising proceeds."""
    r = step / steps
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return scale * (1 - r) + r
    if schedule == "square":
        return scale * (1 - r ** 2) + r ** 2
    if schedule == "inverse-square":
        return (scale - 1) * (1 - r) ** 2 + 1
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@dataclass
class DragInput:
    """One edit's own inputs (DragEditPipeline.edit_batch): image (HxWx3 uint8 or PIL), mask
    (HxW, nonzero = editable), handle and target points in the image's pixels."""
    image: object
    mask: object
    handles: object
    targets: object
    prompt: str = ""
    seed: int = 0
    guidance: float | None = None    # None: the scheduler's default


@dataclass
class EditResult:
    images: list[np.ndarray]   # one HxWx3 uint8 image per candidate, of `size`
    size: tuple[int, int]      # (w, h) of the images: the run size, or the input's (resize_back)
    handles: np.ndarray        # (N, 2) the drag in the images' pixel coordinates
    targets: np.ndarray
    unet_calls: int            # backbone forward passes
    unet_samples: int          # backbone evaluations (forward passes x batch)
    appearance_calls: int      # appearance-encoder forward passes
    seconds: float             # the whole call
    denoise_seconds: float     # of which the denoising loops (the rest: encoders, VAE, resizing)
    scheduler: str             # the settings actually used, defaults resolved
    steps: int
    guidance: float
    resolution: tuple[int, int]   # (w, h) the model ran at


class DragEditPipeline:

    def __init__(self, model: LightningDragModel, vae: AutoencoderKL | PixelVAE,
                 text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, image_encoder: CLIPVisionModelWithProjection,
                 feature_extractor: CLIPImageProcessorPil, scheduler_config: dict,
                 lcm: bool = False):
        self.model, self.vae = model, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.image_encoder, self.feature_extractor = image_encoder, feature_extractor
        self.scheduler_config, self.lcm = dict(scheduler_config), lcm
        self.vae_factor = checkpoint.vae_scale_factor(vae)
        self._text_cache: dict[str, torch.Tensor] = {}

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model_dir: str | None, base_dir: str, ip_adapter_dir: str,
                        lcm_lora: str | None = None, vae_dir: str | None = None,
                        fusion: str | None = None, device: str = "cpu",
                        dtype: torch.dtype = torch.float32,
                        point_embed_dim: int = 16,
                        point_proj_init: str = "zero") -> "DragEditPipeline":
        """Load the public layout. model_dir=None builds a new LightningDrag model on the base
        and IP-Adapter (`checkpoint.new_lightning_drag`, which takes point_embed_dim and
        point_proj_init) to train from."""
        for what, path in (("LightningDrag directory", model_dir), ("base model", base_dir),
                           ("IP-Adapter directory", ip_adapter_dir)):
            if path is not None and not os.path.isdir(path):
                raise checkpoint.CheckpointError(f"{what} {path}: not a directory")
        load = checkpoint.load_pretrained
        # A LightningDrag directory that carries its own (trained) backbone overrides the base's.
        own_backbone = model_dir is not None and os.path.isdir(
            os.path.join(model_dir, checkpoint.BACKBONE_DIR))
        unet = load(UNet2DConditionModel, model_dir if own_backbone else base_dir,
                    checkpoint.BACKBONE_DIR, dtype)
        if lcm_lora:
            fuse_lora(unet, checkpoint.load_tensor_file(lcm_lora))
        vae = (checkpoint.load_vae(vae_dir, None, dtype) if vae_dir
               else checkpoint.load_vae(base_dir, "vae", dtype))
        text_encoder = load(CLIPTextModel, base_dir, "text_encoder", dtype)
        tokenizer = CLIPTokenizer.from_pretrained(base_dir, subfolder="tokenizer",
                                                  local_files_only=True)
        encoder_dir = os.path.join(ip_adapter_dir, checkpoint.IMAGE_ENCODER_DIR)
        image_encoder = load(CLIPVisionModelWithProjection, encoder_dir, None, dtype)
        # The PIL flavour of CLIPImageProcessor: the same preprocessing without torchvision.
        if os.path.isfile(os.path.join(encoder_dir, "preprocessor_config.json")):
            feature_extractor = CLIPImageProcessorPil.from_pretrained(encoder_dir)
        else:  # the IP-Adapter release ships none; CLIP's defaults are what it was trained with
            feature_extractor = CLIPImageProcessorPil()
        scheduler_config = DDIMScheduler.load_config(base_dir, subfolder="scheduler")
        embed_dim = image_encoder.config.projection_dim
        if model_dir is None:
            model = checkpoint.new_lightning_drag(unet, embed_dim, ip_adapter_dir,
                                                  fusion or "full", point_embed_dim,
                                                  checkpoint.vae_scale_factor(vae),
                                                  point_proj_init)
        else:
            model = checkpoint.load_lightning_drag(model_dir, unet, embed_dim, ip_adapter_dir,
                                                   fusion=fusion)
        pipe = cls(model, vae, text_encoder, tokenizer, image_encoder, feature_extractor,
                   scheduler_config, lcm=bool(lcm_lora))
        return pipe.to(device)

    def to(self, device) -> "DragEditPipeline":
        for m in (self.model, self.vae, self.text_encoder, self.image_encoder):
            m.to(device).eval()
        self._text_cache.clear()
        return self

    @property
    def device(self) -> torch.device:
        return self.model.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.unet.dtype

    @property
    def resolution(self) -> tuple[int, int]:
        """The (w, h) the backbone was built for."""
        s = self.model.unet.config.sample_size * self.vae_factor
        return (s, s)

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * 2 ** (len(self.model.unet.config.block_out_channels) - 1)

    # --- encoders --------------------------------------------------------------------------

    def encode_text(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text_cache:
            ids = self.tokenizer(prompt, padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length,
                                 return_tensors="pt").input_ids
            self._text_cache[prompt] = self.text_encoder(ids.to(self.device))[0].to(self.dtype)
        return self._text_cache[prompt]

    def encode_image_prompt(self, images: torch.Tensor) -> torch.Tensor:
        pil = [Image.fromarray(im) for im in tensor_to_images(images)]
        pixels = self.feature_extractor(images=pil, return_tensors="pt").pixel_values
        embeds = self.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        return self.model.image_proj(embeds)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(images.to(self.dtype)).latent_dist.mode()
        return latents * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return images.clamp(-1, 1)

    # --- editing ---------------------------------------------------------------------------

    def sampling(self, scheduler: str | None = None, steps: int | None = None,
                 guidance: float | None = None) -> tuple[str, int, float]:
        """(scheduler, steps, guidance) an edit runs with, the defaults filled in: lcm when an
        LCM-LoRA is fused, else ddim; that scheduler's DEFAULT_STEPS and DEFAULT_GUIDANCE."""
        scheduler = scheduler or ("lcm" if self.lcm else "ddim")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if scheduler == "lcm" and not self.lcm:
            raise ValueError("the LCM scheduler needs an LCM-LoRA fused into the backbone "
                             "(load the pipeline with lcm_lora=...)")
        return (scheduler, DEFAULT_STEPS[scheduler] if steps is None else steps,
                DEFAULT_GUIDANCE[scheduler] if guidance is None else guidance)

    def run_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (w, h) an input of size=(w, h) runs at by default: the public release's rule
        (`schemas.coords.area_size`) for the model's resolution and size multiple."""
        return area_size(size, self.resolution[0], self.size_multiple)

    def _run_resolution(self, resolution, size) -> tuple[int, int]:
        if resolution is None:
            return self.run_size(size)
        w, h = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        m = self.size_multiple
        if w <= 0 or h <= 0 or w % m or h % m:
            raise DragInputError(f"resolution {w}x{h} must be positive multiples of {m}")
        return w, h

    def __call__(self, image, mask, handles, targets, prompt: str = "", steps: int | None = None,
                 guidance: float | None = None, schedule: str = "inverse-square", seed: int = 0,
                 candidates: int = 1, sequential: int = 1, scheduler: str | None = None,
                 resolution=None, resize_back: bool = False,
                 keep_unmasked: bool = False) -> EditResult:
        """`resolution`: None (the release's rule, `run_size`), N (N x N) or (w, h), multiples
        of `size_multiple`. `steps` and `guidance` default per scheduler (DEFAULT_STEPS,
        DEFAULT_GUIDANCE); `scheduler` to lcm when an LCM-LoRA is fused, else ddim."""
        return self.edit_batch([DragInput(image, mask, handles, targets, prompt, seed, guidance)],
                               steps=steps, schedule=schedule, candidates=candidates,
                               sequential=sequential, scheduler=scheduler, resolution=resolution,
                               resize_back=resize_back, keep_unmasked=keep_unmasked)[0]

    @torch.inference_mode()
    def edit_batch(self, inputs: list[DragInput], steps: int | None = None,
                   schedule: str = "inverse-square", candidates: int = 1, sequential: int = 1,
                   scheduler: str | None = None, resolution=None, resize_back: bool = False,
                   keep_unmasked: bool = False) -> list[EditResult]:
        """Several edits in one backbone batch (a service batching its users' requests): each
        input its own image, mask, drag, prompt, seed and guidance scale; the other settings
        shared, and every input running at the same size (`run_size` of its image, unless
        `resolution` is given). Input r's candidate k is seeded with its seed + k, as alone."""
        if not inputs:
            return []
        scheduler, steps, _ = self.sampling(scheduler, steps)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if steps < 1 or candidates < 1 or sequential < 1:
            raise ValueError("steps, candidates and sequential must be at least 1")
        prepared = [self._prepare(x, resolution) for x in inputs]
        res = prepared[0]["res"]
        if any(p["res"] != res for p in prepared):
            raise ValueError("a batch of edits runs at one size: got "
                             f"{sorted({p['res'] for p in prepared})}")
        guidance = [float(self.sampling(scheduler, steps, x.guidance)[2]) for x in inputs]

        started = time.perf_counter()
        n = len(inputs)
        source = images_to_tensor([p["source_image"] for p in prepared]).to(self.device,
                                                                            self.dtype)
        mask_t = torch.from_numpy(np.stack([p["mask_res"] for p in prepared])).to(
            self.device, self.dtype)[:, None]
        # The backbone batch is candidate-major: sample k * n + r is input r's candidate k
        # (tile_batch repeats the n inputs' conditions that way).
        generators = [torch.Generator("cpu").manual_seed(x.seed + k)
                      for k in range(candidates) for x in inputs]
        counts = {"unet_calls": 0, "unet_samples": 0, "appearance_calls": 0,
                  "denoise_seconds": 0.0}
        for k in range(sequential):
            step_handles = [p["h_res"] + (p["t_res"] - p["h_res"]) * (k / sequential)
                            for p in prepared]
            step_targets = [p["h_res"] + (p["t_res"] - p["h_res"]) * ((k + 1) / sequential)
                            for p in prepared]
            source = self._edit(source, mask_t, step_handles, step_targets,
                                [x.prompt for x in inputs], steps, guidance, schedule,
                                generators, scheduler, counts)
        images = tensor_to_images(source)
        seconds = time.perf_counter() - started
        results = []
        for r, p in enumerate(prepared):
            mine = images[r::n]
            if resize_back:
                mine = [resize_image(im, p["size"]) for im in mine]
                out_size, reference, out_mask, out_handles, out_targets = \
                    p["size"], p["image"], p["mask"], p["handles"], p["targets"]
            else:
                out_size, reference, out_mask, out_handles, out_targets = \
                    res, p["source_image"], p["mask_res"], p["h_res"], p["t_res"]
            if keep_unmasked:  # at the output size, so those pixels are the source's exactly
                mine = [np.where(out_mask[..., None] > 0, im, reference) for im in mine]
            results.append(EditResult(images=mine, size=out_size, handles=out_handles,
                                      targets=out_targets, seconds=seconds,
                                      scheduler=scheduler, steps=steps, guidance=guidance[r],
                                      resolution=res, **counts))
        return results

    def _prepare(self, x: DragInput, resolution) -> dict:
        """One input checked, and its image, mask and drag at the size it runs at."""
        image = np.asarray(x.image.convert("RGB") if isinstance(x.image, Image.Image)
                           else x.image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DragInputError(f"image must be HxWx3 RGB, got shape {image.shape}")
        mask = np.asarray(x.mask.convert("L") if isinstance(x.mask, Image.Image) else x.mask)
        if mask.ndim != 2:
            raise DragInputError(f"mask must be HxW, got shape {mask.shape}")
        size = (image.shape[1], image.shape[0])
        handles, targets = validate_drag(x.handles, x.targets, size, mask > 0)
        res = self._run_resolution(resolution, size)
        h_res, t_res = scale_points(handles, size, res), scale_points(targets, size, res)
        # The resized mask covers every mapped point, as the input's covers the points: a
        # thin region can lose the point's pixel to the nearest-neighbour sampling.
        mask_res = resize_mask((mask > 0).astype(np.uint8), res)
        for px, py in round_to_pixel(np.concatenate([h_res, t_res]), res):
            mask_res[py, px] = 1
        return {"image": image, "mask": mask, "size": size, "handles": handles,
                "targets": targets, "res": res, "source_image": resize_image(image, res),
                "mask_res": mask_res, "h_res": h_res, "t_res": t_res}

    def _edit(self, source, mask, handles, targets, prompts, steps, guidance, schedule,
              generators, scheduler_name, counts) -> torch.Tensor:
        """One drag step at model resolution for n inputs (handles, targets, prompts and
        guidance: one each) and C = len(generators) samples, candidate-major. source: (n or C,
        3, h, w) in [-1, 1]; mask (n, 1, h, w)."""
        model, c = self.model, len(generators)
        res = (source.shape[3], source.shape[2])
        guided = schedule != "none"
        batch = 2 * c if guided else c

        source_latents = self.encode_latents(source)
        masked_latents = self.encode_latents(source * (tile_batch(mask, source.shape[0]) < 0.5))
        latent_mask = F.interpolate(mask, size=source_latents.shape[2:], mode="nearest")
        empty = self.encode_text("")
        bank = model.encode_appearance(source_latents, empty.expand(source.shape[0], -1, -1))
        counts["appearance_calls"] += 1
        maps = [point_maps(h, t, res) for h, t in zip(handles, targets)]
        handle_map, target_map = (torch.cat([m[i] for m in maps]) for i in (0, 1))
        device = self.device
        handle_emb, target_emb = model.embed_points(handle_map.to(device), target_map.to(device))
        text = tile_batch(torch.cat([self.encode_text(p) for p in prompts]), source.shape[0])
        prompt_embeds = torch.cat([text, self.encode_image_prompt(source)], dim=1)
        points_on = torch.arange(batch, device=device) >= c if guided else None
        drag = DragConditions(bank=bank, handle_embeddings=handle_emb, target_embeddings=target_emb,
                              points_on=points_on, cache={})

        def scale(i: int):
            """This step's guidance: one number when the inputs share their scale (as alone),
            else one per sample."""
            per_input = [guidance_scale(schedule, g, i, steps) for g in guidance]
            if len(set(per_input)) == 1:
                return per_input[0]
            return tile_batch(torch.tensor(per_input, device=device, dtype=self.dtype),
                              c).view(-1, 1, 1, 1)

        sched_cls = LCMScheduler if scheduler_name == "lcm" else DDIMScheduler
        sched = sched_cls.from_config(self.scheduler_config)
        sched.set_timesteps(steps, device=device)
        shape = (c, *source_latents.shape[1:])
        noise = randn_tensor(shape, generator=generators, device=device, dtype=self.dtype)
        start = torch.full((c,), NOISE_PRIOR_TIMESTEP, device=device, dtype=torch.long)
        latents = sched.add_noise(tile_batch(source_latents, c), noise, start)
        condition = torch.cat([tile_batch(latent_mask, c), tile_batch(masked_latents, c)], dim=1)
        encoder_states = tile_batch(prompt_embeds, batch)
        _sync(device)
        loop_started = time.perf_counter()
        for i, t in enumerate(sched.timesteps):
            x = torch.cat([sched.scale_model_input(latents, t), condition], dim=1)
            x = torch.cat([x, x]) if guided else x
            pred = model(x, t.expand(batch), encoder_states, drag)
            counts["unet_calls"] += 1
            counts["unet_samples"] += batch
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + scale(i) * (cond - uncond)
            kwargs = {"generator": generators} if scheduler_name == "lcm" else {"eta": 0.0}
            latents = sched.step(pred, t, latents, **kwargs).prev_sample
        _sync(device)
        counts["denoise_seconds"] += time.perf_counter() - loop_started
        return self.decode_latents(latents)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # time what the GPU did, not what was queued
        torch.cuda.synchronize(device)
