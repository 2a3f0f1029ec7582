"""The presets of `dkvb-nlp run --config NAME`: this folder installs as `dkvb_nlp.presets`."""
