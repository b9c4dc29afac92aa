"""invlab: a config-driven laboratory for imaging inverse problems with learned priors.

Kept import-light on purpose: `import invlab` must not pull in torch, lightning or hydra.
"""
__version__ = "0.1.0"
