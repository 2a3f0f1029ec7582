"""The continual-learning metrics as a local `evaluate` module (see `continual_learning.py`).

This file only makes the folder a package, so that wheels ship the script with the code;
load the module with `evaluate.load(dkvb_nlp.metrics.continual_learning_metric_path())`.
"""
