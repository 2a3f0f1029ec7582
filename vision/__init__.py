"""DKVB on image backbones: reuses dkvb_nlp's bottleneck core (see the vision issue for the protocol)."""
