"""Thin absl entry points: flags -> config -> irwarp calls -> outputs in the workdir."""
