"""Run presets: configuration files shipped with coevo (``coevo run --preset NAME``)."""
