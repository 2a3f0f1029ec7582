"""DKVB on image backbones: the paper's class-incremental protocol on cached features, with reports.

    python benchmarks/vision_run.py --config configs/vision_fashion_mnist_offline.yaml
    python benchmarks/vision_run.py --dataset fashion_mnist --backbone efficientnet_lite0 --image-size 96 \\
        --splits 5x2 --epochs 2000 --key-init-dataset fashion_mnist:train --output-dir runs/vision
    python benchmarks/vision_run.py --config configs/vision_cifar10.yaml --backbone clip_vit_b32 --download

Features are extracted once per (backbone, dataset, split) into --cache-dir (default
$DKVB_VISION_CACHE_DIR or ~/.cache/dkvb_vision/features). Writes results.json, summary tables,
accuracy CSVs and plots into --output-dir through dkvb_nlp.report.write_report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# Defaults of a run; a --config YAML and then flags override them.
DEFAULTS = {
    "dataset": "fashion_mnist",
    "backbone": "efficientnet_lite0",
    "backbone_options": {},
    # The unlabelled set the keys are initialised on: "name:split" (labels are never read).
    "key_init": {"dataset": None, "max_images": None},
    "protocol": {},
    "output_dir": "runs/vision",
    "cache_dir": None,
    "data_dir": None,
    "download": False,
    "threads": None,
    # An ablation: {"option": dotted path, "values": [...]}; each value runs as its own method
    # label ("dkvb@key_dim=8") and all of them land in one report.
    "sweep": None,
}

# The paper's key-init set per target (Section 5.2); offline Fashion-MNIST has only itself.
DEFAULT_KEY_INIT = {"cifar10": "cifar100:train", "cifar100": "cifar10:train", "stl10": "cifar100:train",
                    "fashion_mnist": "fashion_mnist:train"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (each overrides the --config YAML)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a preset's name (vision_cifar10, ...) or a YAML file; flags below override it")
    p.add_argument("--dataset", help="target dataset: fashion_mnist | cifar10 | cifar100 | stl10")
    p.add_argument("--backbone", help="efficientnet_lite0 | resnet50_imagenet | clip_vit_b32 | dino_resnet50 | "
                                      "swav_resnet50w2 | tiny_random_cnn")
    p.add_argument("--image-size", type=int, help="backbone input size (images are resized to it)")
    p.add_argument("--random-weights", action="store_true", help="backbone architecture without pretrained weights")
    p.add_argument("--splits", help="class-incremental granularity, e.g. 5x2, 10x1, 2x5")
    p.add_argument("--epochs", type=int, help="epochs per split (paper: 2000)")
    p.add_argument("--head-epochs", type=int, help="epochs per split for the baseline heads (default: --epochs)")
    p.add_argument("--modes", help="comma-separated: class_il,iid")
    p.add_argument("--methods", help="comma-separated: dkvb,linear,linear_nobias,mlp")
    p.add_argument("--seeds", help="comma-separated integers (seed 0 keeps the class order)")
    p.add_argument("--key-init-dataset", help="unlabelled key-init set as name:split, e.g. cifar100:train")
    p.add_argument("--key-init-max-images", type=int, help="use a seeded subset of the key-init set")
    p.add_argument("--codebooks", type=int, help="number of codebooks C (paper: 256)")
    p.add_argument("--keys", type=int, help="key-value pairs per codebook K (paper: 4096)")
    p.add_argument("--key-dim", type=int, help="key dimension (paper: 14)")
    p.add_argument("--value-trainer", help="auto | numba | torch (torch = dkvb_nlp's ValueSGD)")
    p.add_argument("--output-dir")
    p.add_argument("--cache-dir", help="feature cache folder")
    p.add_argument("--data-dir", help="dataset root (torchvision downloads, or Fashion-MNIST IDX folder)")
    p.add_argument("--download", action="store_true", help="let torchvision download datasets")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any option by dotted path, e.g. protocol.dkvb.lr=0.3 (YAML values)")
    return p.parse_args(argv)


def _assign(cfg: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = value


def build_config(args: argparse.Namespace) -> dict:
    """DEFAULTS <- YAML (--config) <- flags <- --set, as one nested dict."""
    import copy

    import yaml

    cfg = copy.deepcopy(DEFAULTS)
    if args.config:
        from dkvb_nlp.runner.presets import resolve_preset

        with open(resolve_preset(args.config), encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{args.config}: unknown key(s) {unknown}; accepted: {', '.join(DEFAULTS)}")
        for key, value in loaded.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key].update(value)
            else:
                cfg[key] = value
    flat = {
        "dataset": args.dataset, "backbone": args.backbone, "output_dir": args.output_dir,
        "cache_dir": args.cache_dir, "data_dir": args.data_dir, "threads": args.threads,
        "backbone_options.image_size": args.image_size,
        "protocol.splits": args.splits, "protocol.epochs": args.epochs, "protocol.heads.epochs": args.head_epochs,
        "key_init.dataset": args.key_init_dataset, "key_init.max_images": args.key_init_max_images,
        "protocol.dkvb.num_codebooks": args.codebooks, "protocol.dkvb.num_keys": args.keys,
        "protocol.dkvb.key_dim": args.key_dim, "protocol.dkvb.value_trainer": args.value_trainer,
    }
    for key, value in flat.items():
        if value is not None:
            _assign(cfg, key, value)
    if args.random_weights:
        _assign(cfg, "backbone_options.pretrained", False)
    if args.download:
        cfg["download"] = True
    for name in ("modes", "methods"):
        raw = getattr(args, name)
        if raw is not None:
            _assign(cfg, f"protocol.{name}", [m.strip() for m in raw.split(",") if m.strip()])
    if args.seeds is not None:
        try:
            _assign(cfg, "protocol.seeds", [int(s) for s in args.seeds.split(",") if s.strip()])
        except ValueError:
            raise ValueError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. protocol.dkvb.lr=0.3")
        key, raw = item.split("=", 1)
        _assign(cfg, key.strip(), yaml.safe_load(raw))
    if not cfg["key_init"].get("dataset"):
        cfg["key_init"]["dataset"] = DEFAULT_KEY_INIT.get(cfg["dataset"], f"{cfg['dataset']}:train")
    return cfg


def sweep_variants(cfg: dict) -> list[tuple[dict, str]]:
    """(config, label) per value of cfg['sweep'] (label '' without a sweep)."""
    import copy

    sweep = cfg.get("sweep")
    if not sweep:
        return [(cfg, "")]
    if not isinstance(sweep, dict) or set(sweep) != {"option", "values"} or not sweep["values"]:
        raise ValueError(f"sweep={sweep!r}: expected {{option: dotted.path, values: [v1, v2, ...]}}")
    out = []
    for value in sweep["values"]:
        variant = copy.deepcopy(cfg)
        _assign(variant, sweep["option"], value)
        out.append((variant, f"{sweep['option'].rsplit('.', 1)[-1]}={value}"))
    return out


def main(argv=None) -> int:
    """Extract or read features, run the protocol (per sweep value), write the reports."""
    args = parse_args(argv)
    cfg = build_config(args)
    import torch

    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    from dkvb_nlp.report import make_results, write_report
    from dkvb_nlp.vision.pipeline import load_protocol_data
    from dkvb_nlp.vision.protocol import ProtocolConfig, run_protocol

    variants = sweep_variants(cfg)
    for variant, _ in variants:  # validate every variant before any extraction or training
        ProtocolConfig.from_dict(variant["protocol"])
    started = time.time()
    log = lambda msg: print(f"[{time.time() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    runs, walls = [], []
    for variant, label in variants:
        protocol = ProtocolConfig.from_dict(variant["protocol"])
        data = load_protocol_data(variant, progress=log)
        log(f"features ready{' for ' + label if label else ''}: train {data.train_x.shape}, "
            f"test {data.test_x.shape}, key init {data.key_init_name} {data.key_init_x.shape}")
        t = time.time()
        for run in run_protocol(data, protocol, progress=log, artifacts_dir=cfg["output_dir"]):
            if label:
                run["method"] = f"{run['method']}@{label}"
            runs.append(run)
        walls.append(round(time.time() - t, 1))
    config = {**cfg, "protocol": ProtocolConfig.from_dict(cfg["protocol"]).to_dict(),
              "protocol_seconds": walls, "wall_seconds": round(time.time() - started, 1)}
    write_report(make_results(runs, config), cfg["output_dir"])
    log(f"done; reports in {cfg['output_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
