"""Images between numpy (HxWx3 uint8, as files and drawings hold them) and the models' tensors
((B, 3, H, W) float in [-1, 1]). Light imports: data-loader workers use it too."""
from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 images -> (B, 3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x.float().div_(127.5).sub_(1.0)


def tensor_to_images(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> HxWx3 uint8 images."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).cpu().numpy())
