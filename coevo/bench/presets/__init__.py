"""Sweep presets for ``coevo bench --preset NAME``: TOML specs shipped with coevo."""
