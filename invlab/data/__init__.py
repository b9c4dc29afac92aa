"""Datasets of clean images in [0,1]; see `datasets` (fixed sets) and `patches` (training crops)."""
