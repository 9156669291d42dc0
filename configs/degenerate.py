"""Claim 4, degenerate flows: grid against particle on folding and collapsing flows.

Run (about 40 s on 2 CPU cores):

    python -m experiments.degenerate --config=configs/degenerate.py --workdir=/tmp/paper/degenerate

Tiny variant for the smoke test (about 15 s on 2 CPU cores, nearly all compilation):

    python -m experiments.degenerate --config=configs/degenerate.py:small --workdir=/tmp/d_small

Override any field, e.g. ``--config.methods="('grid', 'particle', 'splat')"``,
``--config.flows="('fold_over', 'zoom_in_4x')"`` or ``--config.samples=2048``. Tuples (not lists)
are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the degenerate-flow config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the noise and of the warps.
    config.seed = 0
    # Frame size (H, W).
    config.size = (64, 64)
    # Noise samples R (one channel each) for the per-pixel maps and the pairwise correlations.
    config.samples = 512
    # Flows: "fold_over", "collapse" (irwarp.flows), "strong_vortex" (irwarp.flows.vortex with the
    # strength and radius below), "zoom_in_4x" (a 4x zoom-in: injective, but the particle variant's
    # normalisation fires everywhere).
    config.flows = ("fold_over", "collapse", "strong_vortex")
    # Strong vortex: rotation at the centre in degrees, and radius as a fraction of min(H, W).
    config.vortex_strength = 720.0
    config.vortex_radius = 0.125
    # Methods compared: any of the experiments' names ("grid", "particle", "splat", "chang4", ...).
    config.methods = ("grid", "particle")
    # Standard errors allowed by the whiteness checks and the per-pixel maps.
    config.num_se = 5.0
    # Colour range (+-) of the correlation maps.
    config.map_range = 0.5
    # Pairwise correlations of all pixels are computed when H * W is at most this.
    config.max_pairwise_pixels = 4096

    if arg == "small":
        config.size = (16, 16)
        config.samples = 64
    elif arg:
        raise ValueError(f"unknown degenerate config variant {arg!r}; known: 'small'")
    return config
