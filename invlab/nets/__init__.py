"""Plain `nn.Module` denoisers. Every network is called as `net(x, sigma)` with x (B, C, H, W) in [0, 1]
and sigma a (B,) tensor (or float) in the same units, and returns the denoised image."""
from invlab.nets.dncnn import DnCNN
from invlab.nets.drunet import DRUNet

__all__ = ["DnCNN", "DRUNet"]
