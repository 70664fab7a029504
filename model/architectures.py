"""Configs of the real-size components (SD-1.5 inpainting, its VAE and text encoder, and the
ViT-H/14 image encoder of IP-Adapter sd15), for random-weight benchmarks and layout checks."""
from __future__ import annotations

SD15_INPAINT_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)

SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)

SD15_TEXT_ENCODER = dict(  # CLIP ViT-L/14 text tower
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=768,
)

IP_ADAPTER_SD15_IMAGE_ENCODER = dict(  # OpenCLIP ViT-H/14 vision tower with projection
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
)

# The public point embedding: PointEmbeddingModel(embed_dim=16), 8x VAE and 8x UNet downsampling.
PUBLIC_POINT_EMBED_DIM = 16
