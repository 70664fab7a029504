"""LPIPS v0.1 with the AlexNet trunk (Zhang et al., 2018), in plain torch, and Image Fidelity.

    LPIPS(a, b) = sum over layers l of  mean over (h, w) of  w_l . (a_l - b_l)^2

where a_l is the l-th AlexNet ReLU output of image a, unit-normalised over channels at every
position, and w_l (one non-negative weight per channel, a 1x1 conv without bias) is LPIPS's
learned linear layer. Images are RGB in [-1, 1], shifted and scaled by LPIPS's ScalingLayer
before the trunk. DragBench's Image Fidelity is 1 - LPIPS of source and edit, both resized
bilinearly to 224x224 (DragDiffusion's run_eval_similarity.py).

The trunk is torchvision's `alexnet().features` up to its fifth ReLU (the final maxpool at
index 12 is not used); the five outputs are taken after the ReLUs at indices 1, 4, 7, 9, 11.
Weights come from two local files in their public layouts, never downloaded:
  --alexnet  a torchvision AlexNet state dict (`features.0.weight`, ...; its `classifier.*`
             keys, present in the full torchvision file, are ignored);
  --lpips    LPIPS v0.1 linear layers (`lin0.model.1.weight` ... `lin4.model.1.weight`, each
             (1, C, 1, 1)), the file the `lpips` package ships as weights/v0.1/alex.pth.
Both are read with safetensors or torch.load(weights_only=True).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import check_state_dict, load_tensor_file
from model.images import images_to_tensor
from schemas.coords import resize_mask

ALEXNET_CHANNELS = (64, 192, 384, 256, 256)   # channels of the five ReLU outputs
ALEXNET_TAPS = (1, 4, 7, 9, 11)               # indices in `features` of those ReLUs
INPUT_SHIFT = (-0.030, -0.088, -0.188)        # LPIPS ScalingLayer, on inputs in [-1, 1]
INPUT_SCALE = (0.458, 0.448, 0.450)
LPIPS_SIZE = 224                              # images are compared at 224x224
NORM_EPS = 1e-10                              # LPIPS's normalize_tensor


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet `features[:12]`: the same module indices, so its keys load as is."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),   # 0, 1
        nn.MaxPool2d(kernel_size=3, stride=2),                              # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),            # 3, 4
        nn.MaxPool2d(kernel_size=3, stride=2),                              # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),           # 6, 7
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),           # 8, 9
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),           # 10, 11
    )


class LinearHead(nn.Module):
    """LPIPS's NetLinLayer. Its `model.0` was a Dropout (identity at evaluation) and `model.1`
    the 1x1 conv; the same indices keep the released keys `lin<i>.model.1.weight`."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """state_dict keys: `features.*` (AlexNet) and `lin0..lin4.model.1.weight` (LPIPS)."""

    def __init__(self):
        super().__init__()
        self.features = alexnet_features()
        for i, channels in enumerate(ALEXNET_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels))
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1), persistent=False)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of (B, 3, H, W) images in [-1, 1]."""
        x = (x - self.shift) / self.scale
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in ALEXNET_TAPS:
                outputs.append(x)
        return outputs

    def layer_distances(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the (B, 1, h_l, w_l) map of weighted squared differences."""
        maps = []
        for i, (fa, fb) in enumerate(zip(self.trunk(a), self.trunk(b))):
            fa = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            fb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            maps.append(getattr(self, f"lin{i}")((fa - fb) ** 2))
        return maps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B,) LPIPS distances."""
        return sum(m.mean(dim=(1, 2, 3)) for m in self.layer_distances(a, b))

    def distance_map(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W): every layer's map upsampled bilinearly to the input size, summed
        (LPIPS's `spatial=True`); averaging it over a region gives that region's LPIPS."""
        size = a.shape[2:]
        return sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                   for m in self.layer_distances(a, b))


def load_lpips(alexnet_path: str, lpips_path: str, device="cpu") -> LPIPS:
    """LPIPS from the two weight files; a missing, unexpected or wrongly shaped key is a
    CheckpointError naming the file and the keys."""
    model = LPIPS()
    expected = model.state_dict()
    alexnet = {k: v for k, v in load_tensor_file(alexnet_path).items()
               if not k.startswith("classifier.")}   # the full torchvision file: unused here
    check_state_dict(f"AlexNet weights {alexnet_path}",
                     {k: v for k, v in expected.items() if k.startswith("features.")}, alexnet)
    heads = load_tensor_file(lpips_path)
    check_state_dict(f"LPIPS weights {lpips_path}",
                     {k: v for k, v in expected.items() if k.startswith("lin")}, heads)
    model.load_state_dict({k: v.float() for k, v in {**alexnet, **heads}.items()})
    return model.to(device).eval().requires_grad_(False)


def _input(image: np.ndarray, device) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, 224, 224) in [-1, 1], resized as DragBench's evaluation does."""
    x = images_to_tensor([image]).to(device)
    return F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="bilinear", align_corners=False)


@torch.no_grad()
def image_distance(lpips: LPIPS, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS of two HxWx3 uint8 images of the same size, at 224x224."""
    device = lpips.shift.device
    return float(lpips(_input(a, device), _input(b, device))[0])


@torch.no_grad()
def region_distances(lpips: LPIPS, a: np.ndarray, b: np.ndarray,
                     mask: np.ndarray) -> tuple[float, float]:
    """(inside, outside): the LPIPS distance map at 224x224 averaged over the mask (nonzero)
    and over the rest; NaN for an empty region."""
    device = lpips.shift.device
    dmap = lpips.distance_map(_input(a, device), _input(b, device))[0, 0].cpu().numpy()
    inside = resize_mask((mask > 0).astype(np.uint8), (LPIPS_SIZE, LPIPS_SIZE)) > 0
    return _region_mean(dmap, inside), _region_mean(dmap, ~inside)


def _region_mean(values: np.ndarray, region: np.ndarray) -> float:
    return float(values[region].mean()) if region.any() else float("nan")
