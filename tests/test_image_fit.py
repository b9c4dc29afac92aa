"""The data must fit the image size and value range a prior was trained for (priors/fit.py), and every resize
the data loader does is logged (data/sources.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from invlab.errors import ShapeError


def test_a_digit_diffusion_prior_refuses_photos_and_passes_digits(caplog):
    from invlab.priors.diffusion import DiffusionPrior
    from invlab.priors.fit import check_image_fit

    prior = DiffusionPrior("ddpm_mnist")
    with pytest.raises(ShapeError, match=r"trained on 28×28 images but the data is 256×256.*data.size=28"):
        check_image_fit(prior, torch.rand(1, 1, 256, 256))
    with caplog.at_level(logging.WARNING, logger="invlab"):
        check_image_fit(prior, torch.rand(1, 1, 28, 28))
        assert not caplog.records
        check_image_fit(prior, torch.rand(1, 1, 40, 40))          # 1.4× off: runs, with a warning
    assert "expect worse samples" in caplog.text


def test_a_published_256_model_passes_on_256_data():
    """A zoo-style prior (no card, a preset's image_size) at its own size passes; the net is never called."""
    from invlab.priors.diffusion import DiffusionPrior
    from invlab.priors.fit import check_image_fit

    prior = DiffusionPrior(net=torch.nn.Conv2d(3, 3, 1), channels=3, image_size=(256, 256))
    check_image_fit(prior, torch.rand(1, 3, 256, 256))
    with pytest.raises(ShapeError, match="trained on 256×256"):
        check_image_fit(prior, torch.rand(1, 3, 64, 64))


def test_a_denoiser_only_warns_and_only_far_from_its_training_size(caplog):
    from invlab.priors.fit import check_image_fit
    from invlab.priors.learned import LearnedDenoiser

    with caplog.at_level(logging.WARNING, logger="invlab"):
        check_image_fit(LearnedDenoiser("dncnn_gray"), torch.rand(1, 1, 256, 256))   # 40² crops → 256²: normal
        assert not caplog.records
        check_image_fit(LearnedDenoiser("dncnn_mnist"), torch.rand(1, 1, 256, 256))  # 28² digits → 256² photos
    assert "trained on 28×28 images and the data is 256×256" in caplog.text


def test_data_outside_the_value_range_is_refused():
    from invlab.priors.fit import check_image_fit
    from invlab.priors.learned import LearnedDenoiser

    with pytest.raises(ShapeError, match=r"spans \[0, 255\].*\[0, 1\]"):
        check_image_fit(LearnedDenoiser("dncnn_gray"), torch.linspace(0, 255, 64 * 64).reshape(1, 1, 64, 64))


def test_run_preflight_refuses_the_mismatch_in_one_sentence():
    from invlab.cli.run import preflight
    from invlab.data.datasets import ImageDataset
    from invlab.priors.diffusion import DiffusionPrior
    from invlab.utils.config import build, load_option

    task, solver = build(load_option("task", "deblur", [])), build(load_option("solver", "dps", []))
    with pytest.raises(ShapeError, match="ddpm_mnist"):
        preflight(ImageDataset(torch.rand(1, 1, 64, 64)), task, DiffusionPrior("ddpm_mnist"), solver, seed=0)


def test_every_resize_is_logged_once_per_size_pair(caplog):
    from invlab.data import sources

    sources._LOGGED_RESIZES.clear()
    with caplog.at_level(logging.INFO, logger="invlab"):
        for _ in range(3):
            sources.resize(np.zeros((5, 5), np.float32), 256)            # 51× up: a warning, logged once
        sources.resize(np.zeros((300, 300), np.float32), 256)             # a mild resize: info
        sources.resize(np.zeros((256, 256), np.float32), 256)             # no resize: nothing
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "invlab"]
    assert msgs == [(logging.WARNING, "data: resizing 5×5 images to 256×256 (×51.2); far from their own size "
                                      "(set data.size to change it)"),
                    (logging.INFO, "data: resizing 300×300 images to 256×256 (×0.853)")]
