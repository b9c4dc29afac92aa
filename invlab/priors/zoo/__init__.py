"""Published checkpoints of the field, one file per family (adm.py, kair.py, diffusers.py): each holds the
family's named presets (the published configurations, with their provenance), its key conversion and its load
function. `common.py` is the one safe, strict state-dict loader they all use."""
