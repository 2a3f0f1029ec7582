"""Performance of dkvb-nlp against named anchors, measured in the same run.

    python benchmarks/speed.py --section layer [--json benchmarks/out/speed_layer.json]
    python benchmarks/speed.py --section encode [--json benchmarks/out/speed_encode.json]
    python benchmarks/speed.py --section e2e [--json benchmarks/out/speed_e2e.json]
    python benchmarks/speed.py --section memory [--json benchmarks/out/speed_memory.json]
    python benchmarks/speed.py --section search [--json benchmarks/out/speed_search.json]

Sections (more are added as the project grows):
- layer: the bottleneck core.
  * forward + backward + SGD step at C=64, K=4096, key_dim=14, value_dim=10, B=16, pooled
    D=2048 inputs, ours vs the anchor `discrete-key-value-bottleneck-pytorch` (the public
    implementation of the paper; `pip install -e ".[bench]"`): throughput and peak memory;
  * the same at the paper's size (C=256, B=256): our peak memory (the anchor only with
    --anchor-paper-size, under a memory limit, since it needs > 10 GB);
  * training from cached indices at the paper's size (ValueSGD) against autograd
    `embedding_bag(sparse=True)` + `torch.optim.SGD` on the same indices;
  * key initialisation: one EMA epoch over 200,000 vectors of dimension 384, C=32 segments,
    K=4096 keys, ours vs vector-quantize-pytorch's EMA codebook (the paper's), the latter
    timed on its first --vq-batches batches and extrapolated (or all with --vq-full).

- encode: the floor of every text run, MiniLM over CLINC150's 15,000 training texts (the
  packaged copy): our length-sorted, dynamically padded batches against naive fixed-length
  (max_length=128) padded batches in the input order, both in fp32; and our default (bf16
  autocast where the CPU runs it natively) against the same anchor.

- e2e: the whole DKVB class_il run on CLINC150 (15 tasks x 10 intents, --e2e-epochs per task)
  from an empty feature cache, against its floor (one encoder pass over train, validation and
  test), and the same training done the reference code's way (the encoder in every training
  and evaluation step, key-init epochs through the encoder). The floor and our run alternate
  --repeats times (default 3); each is reported by its fastest run, all times are kept.

- memory: DKVB's key initialisation (one EMA epoch, blocks streamed from the memory-mapped
  feature cache) and index computation (`quantize_cached` into a memory-mapped int16 file) on
  synthetic clustered token states in the feature cache's format (float16, D=384, about 12
  tokens per text), for N texts and --memory-scale x N texts (default 20,000 and 200,000:
  240k and 2.4M token rows, C=16, K=4096; --memory-keys for a quick run). Reports time,
  ru_maxrss and the peak *anonymous* RSS (RssAnon, sampled every 20 ms): the memory-mapped
  states and indices are file-backed pages the kernel can write back and drop, anonymous
  memory is not, so that is the number that must stay flat as the data grows.

- search: exact nearest-key search, the inner loop of key initialisation and indexing: 20,000
  random queries x 16 codebooks against 4096 keys of 24 dims (MiniLM's 384 dims in 16
  segments). Our fused AVX2 kernel (the default on x86-64 CPUs), its AVX-512 and bf16-screen
  variants where the CPU has them (checked equal to it bit for bit), faiss (the fallback) and the
  matmul backend against the torch backend (the anchor: what we would run with none of them).

Each measurement runs in its own subprocess so peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

WORKERS = {}


def worker(fn):
    """Register a measurement that runs in a fresh subprocess and returns a dict."""
    WORKERS[fn.__name__] = fn
    return fn


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clustered_features(n: int, dim: int, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with class structure (a Gaussian mixture), like a frozen backbone's output."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen)
    y = torch.randint(classes, (n,), generator=gen)
    return centres[y] + 0.7 * torch.randn(n, dim, generator=gen), y


def ours(c: int, dim: int = 2048, k: int = 4096, key_dim: int = 14, dv: int = 10):
    """Our bottleneck at the given size, keys initialised (untimed) on clustered features."""
    from dkvb_nlp import KeyValueBottleneck

    model = KeyValueBottleneck(dim, c, k, num_classes=dv, split="random_projection", key_dim=key_dim,
                               sparse=True)
    x, _ = clustered_features(k + 1024, dim, seed=1)
    model.init_keys([x])
    return model


def timed_steps(step, steps: int, warmup: int = 2) -> float:
    """Seconds per call of step(), after warm-up."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


@worker
def fb_ours(c: int, batch: int, steps: int) -> dict:
    """Ours: forward from features (quantize + gather) + backward + SGD, per batch."""
    import torch.nn.functional as F

    model = ours(c)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = clustered_features(batch * 8, 2048, seed=2)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % 8
        xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb, label_smoothing=0.1).backward()
        opt.step()

    sec = timed_steps(step, steps)
    return {"seconds_per_batch": sec, "examples_per_s": batch / sec, "peak_rss_mb": peak_rss_mb()}


@worker
def fb_anchor(c: int, batch: int, steps: int) -> dict:
    """The anchor (discrete-key-value-bottleneck-pytorch), same sizes, same training step."""
    import torch.nn.functional as F
    from discrete_key_value_bottleneck_pytorch import DiscreteKeyValueBottleneck

    torch.manual_seed(0)
    model = DiscreteKeyValueBottleneck(14, num_memories=4096, dim_embed=2048, num_memory_codebooks=c,
                                       dim_memory=10, decay=0.95)
    # Its keys start initialised (the library's uniform init; kmeans_init is off by default).
    # Note: with current vector-quantize-pytorch, `heads` + `separate_codebook_per_head` give
    # each of the C codebooks keys of dim C*key_dim plus an input projection; that is how the
    # anchor runs as installed from PyPI.
    model.vq.eval()  # keys frozen while values train (the cheaper of its two modes)
    opt = torch.optim.SGD([model.values], lr=0.3)
    x, y = clustered_features(batch * 8, 2048, seed=2)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % 8
        xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
        opt.zero_grad(set_to_none=True)
        logits = model(xb.unsqueeze(1)).squeeze(1)
        F.cross_entropy(logits, yb, label_smoothing=0.1).backward()
        opt.step()

    sec = timed_steps(step, steps, warmup=1)
    return {"seconds_per_batch": sec, "examples_per_s": batch / sec, "peak_rss_mb": peak_rss_mb()}


@worker
def train_indices(n: int, epochs: int) -> dict:
    """Training from cached indices at the paper's size: ValueSGD vs autograd + torch SGD."""
    import torch.nn.functional as F

    from dkvb_nlp.bottleneck.value_sgd import ValueSGD

    c, k, batch = 256, 4096, 256
    model = ours(c)
    x, y = clustered_features(n, 2048, seed=3)
    t0 = time.perf_counter()
    real = model.quantize(x)
    quantize_s = time.perf_counter() - t0
    uniform = torch.randint(k, (n, c), generator=torch.Generator().manual_seed(0))
    out = {"quantize_examples_per_s": n / quantize_s}
    for name, idx in (("quantized", real), ("uniform_random", uniform)):
        sgd = ValueSGD(model, lr=0.3, label_smoothing=0.1)
        sgd.epoch(idx[:2048], y[:2048], batch_size=batch)  # warm-up
        start = time.perf_counter()
        for e in range(epochs):
            sgd.epoch(idx, y, batch_size=batch, generator=torch.Generator().manual_seed(e))
        out[f"value_sgd_{name}_examples_per_s"] = epochs * n / (time.perf_counter() - start)
    # in-run anchor: the textbook path, sparse embedding_bag gradients + torch.optim.SGD
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for s in range(0, n, batch):
        b = order[s : s + batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(indices=real[b]), y[b], label_smoothing=0.1).backward()
        opt.step()
    out["autograd_sparse_sgd_examples_per_s"] = n / (time.perf_counter() - start)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def key_init_data(n: int = 200_000, dim: int = 384, batch: int = 8192) -> list[torch.Tensor]:
    x, _ = clustered_features(n, dim, classes=150, seed=4)
    return [x[i : i + batch] for i in range(0, n, batch)]


@worker
def key_init_ours() -> dict:
    """One EMA epoch, 200k x 384, C=32, K=4096, batches of 8192, our backend ('auto' search)."""
    from dkvb_nlp import KeyValueBottleneck

    batches = key_init_data()
    model = KeyValueBottleneck(384, 32, 4096, num_classes=10)
    start = time.perf_counter()
    model.init_keys(batches, epochs=1, backend="ema")
    sec = time.perf_counter() - start
    return {"seconds": sec, "shift_score": model.shift_score(torch.cat(batches[:4])), "peak_rss_mb": peak_rss_mb()}


@worker
def key_init_vq(batches_to_time: int) -> dict:
    """The same work with vector-quantize-pytorch's EMA codebook (the paper's implementation)."""
    from dkvb_nlp.bottleneck.key_init import VQPytorchKMeans
    from dkvb_nlp.bottleneck.splitters import SegmentSplitter

    batches = key_init_data()
    split = SegmentSplitter(384, 32)
    kmeans = VQPytorchKMeans(32, 4096, 12, decay=0.95)
    times = []
    for b in batches[:batches_to_time]:
        start = time.perf_counter()
        kmeans.update(split(b))
        times.append(time.perf_counter() - start)
    steady = times[-1] if len(times) > 1 else times[0]
    estimate = times[0] + steady * (len(batches) - 1)
    return {"batch_seconds": times, "batches_total": len(batches), "seconds": sum(times) if
            len(times) == len(batches) else estimate, "extrapolated": len(times) < len(batches)}


def run_worker(name: str, limit_gb: float | None = None, **kwargs) -> dict:
    """Run one registered measurement in a fresh interpreter; return its dict or its failure."""
    cmd = [sys.executable, __file__, "--worker", name, "--kwargs", json.dumps(kwargs)]
    env = dict(os.environ)
    preexec = None
    if limit_gb:
        def preexec():  # noqa: E306 - address-space cap so an oversized anchor fails, not the machine
            cap = int(limit_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=preexec)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"failed": True, "returncode": proc.returncode, "error": tail[0][:300]}
    return json.loads(lines[-1])


def section_layer(args) -> dict:
    """The bottleneck core against its anchors; prints a table of ratios."""
    res = {}
    res["fb_small_ours"] = run_worker("fb_ours", c=64, batch=16, steps=args.steps)
    res["fb_small_anchor"] = run_worker("fb_anchor", c=64, batch=16, steps=max(3, args.steps // 20))
    res["fb_paper_ours"] = run_worker("fb_ours", c=256, batch=256, steps=max(5, args.steps // 4))
    if args.anchor_paper_size:
        res["fb_paper_anchor"] = run_worker("fb_anchor", limit_gb=args.memory_limit_gb, c=256, batch=256, steps=2)
    res["train_indices"] = run_worker("train_indices", n=args.train_examples, epochs=args.train_epochs)
    res["key_init_ours"] = run_worker("key_init_ours")
    res["key_init_vq"] = run_worker("key_init_vq", batches_to_time=10**6 if args.vq_full else args.vq_batches)

    def get(key, field):
        return res[key].get(field, float("nan"))

    rows = []
    rows.append(("fwd+bwd C=64 B=16: throughput (ex/s)", get("fb_small_ours", "examples_per_s"),
                 get("fb_small_anchor", "examples_per_s"), "ours/anchor >= 20x"))
    rows.append(("fwd+bwd C=64 B=16: peak memory (MB)", get("fb_small_ours", "peak_rss_mb"),
                 get("fb_small_anchor", "peak_rss_mb"), "ours/anchor <= 0.2"))
    anchor_paper = res.get("fb_paper_anchor", {})
    rows.append(("fwd+bwd C=256 B=256: throughput (ex/s)", get("fb_paper_ours", "examples_per_s"),
                 anchor_paper.get("examples_per_s", float("nan")), "(anchor: --anchor-paper-size)"))
    rows.append(("fwd+bwd C=256 B=256: peak memory (MB)", get("fb_paper_ours", "peak_rss_mb"),
                 anchor_paper.get("peak_rss_mb", float("nan")), "ours <= 2048 MB"))
    t = res["train_indices"]
    rows.append(("cached-index training C=256 (ex/s), quantized idx", t.get("value_sgd_quantized_examples_per_s", float("nan")),
                 t.get("autograd_sparse_sgd_examples_per_s", float("nan")), ">= 150,000 ex/s"))
    rows.append(("cached-index training C=256 (ex/s), uniform idx", t.get("value_sgd_uniform_random_examples_per_s", float("nan")),
                 t.get("autograd_sparse_sgd_examples_per_s", float("nan")), "(worst case for caches)"))
    rows.append(("key init, 1 EMA epoch 200k x 384 (s)", get("key_init_ours", "seconds"),
                 get("key_init_vq", "seconds"), "ours <= 10 s"))
    print(f"\n{'measurement':52s} {'ours':>12s} {'anchor':>12s} {'ratio':>9s}  target")
    for name, mine, theirs, target in rows:
        ratio = mine / theirs if theirs == theirs and theirs else float("nan")
        print(f"{name:52s} {mine:12,.1f} {theirs:12,.1f} {ratio:9.3f}  {target}")
    print("anchors: fwd+bwd -> discrete-key-value-bottleneck-pytorch; cached-index training -> autograd "
          "embedding_bag(sparse) + torch.optim.SGD; key init -> vector-quantize-pytorch EMA codebook"
          + (" (extrapolated from its first batches)" if res["key_init_vq"].get("extrapolated") else ""))
    if anchor_paper.get("failed"):
        print(f"anchor at the paper's size failed under a {args.memory_limit_gb} GB limit: {anchor_paper['error']}")
    return res


def clinc_train_texts(limit: int | None = None) -> list[str]:
    """CLINC150's training texts from the copy shipped inside the package."""
    import gzip

    import dkvb_nlp

    path = Path(dkvb_nlp.__file__).parent / "data" / "packaged" / "clinc150" / "train.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[:limit] if limit else texts


@worker
def encode_texts(mode: str, autocast: str, limit: int | None = None, batch_size: int = 64) -> dict:
    """Encode CLINC150 train with MiniLM: 'sorted' (ours) or 'naive' (fixed-length padding)."""
    from dkvb_nlp.encoders import DEFAULT_ENCODER, iter_encoded, load_encoder, load_tokenizer
    from dkvb_nlp.encoders.load import autocast_dtype

    texts = clinc_train_texts(limit)
    encoder, tok = load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER)
    warm = tok(texts[:batch_size], padding=True, return_tensors="pt")
    with torch.inference_mode():
        encoder(**warm)
    start = time.perf_counter()
    tokens = 0
    if mode == "sorted":
        for batch in iter_encoded(encoder, tok, texts, max_length=128, batch_size=batch_size, autocast=autocast,
                                  progress=False):
            tokens += int(batch.mask.sum())
    elif mode == "naive":
        dtype = autocast_dtype(autocast)
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            for i in range(0, len(texts), batch_size):
                enc = tok(texts[i : i + batch_size], padding="max_length", truncation=True, max_length=128,
                          return_tensors="pt")
                out = encoder(**enc).last_hidden_state.float()
                tokens += int(enc["attention_mask"].sum())
    else:
        raise ValueError(mode)
    seconds = time.perf_counter() - start
    return {"texts": len(texts), "tokens": tokens, "seconds": seconds, "texts_per_s": len(texts) / seconds,
            "peak_rss_mb": peak_rss_mb()}


def section_encode(args) -> dict:
    """Length-sorted dynamic padding vs naive fixed-length batches; prints the ratios."""
    limit = args.encode_texts or None
    res = {
        "naive_fp32": run_worker("encode_texts", mode="naive", autocast="off", limit=limit),
        "sorted_fp32": run_worker("encode_texts", mode="sorted", autocast="off", limit=limit),
        "sorted_default": run_worker("encode_texts", mode="sorted", autocast="auto", limit=limit),
    }
    anchor = res["naive_fp32"].get("texts_per_s", float("nan"))
    print(f"\n{'MiniLM on CLINC150 train':44s} {'texts/s':>10s} {'seconds':>9s} {'vs naive':>9s}  target")
    for key, label, target in (("naive_fp32", "naive: fixed length 128, input order, fp32", "(anchor)"),
                               ("sorted_fp32", "ours: length-sorted, dynamic padding, fp32", ">= 1.5x"),
                               ("sorted_default", "ours: + bf16 autocast where native (default)", "")):
        r = res[key]
        print(f"{label:44s} {r.get('texts_per_s', float('nan')):10,.0f} {r.get('seconds', float('nan')):9.1f} "
              f"{r.get('texts_per_s', float('nan')) / anchor:8.2f}x  {target}")
    return res


def _clinc_stream():
    from dkvb_nlp.data import build_scenario

    return build_scenario("class_il", dataset="clinc150")


@worker
def e2e_floor() -> dict:
    """One encoder pass over every split of CLINC150 (train, validation, test): the floor."""
    from dkvb_nlp.data import load_text_dataset
    from dkvb_nlp.encoders import DEFAULT_ENCODER, iter_encoded, load_encoder, load_tokenizer

    data = load_text_dataset("clinc150")
    encoder, tok = load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER)
    start = time.perf_counter()
    texts = 0
    for split in ("train", "validation", "test"):
        for batch in iter_encoded(encoder, tok, data[split]["text"], max_length=128, progress=False):
            texts += batch.states.shape[0]
    return {"texts": texts, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


@worker
def e2e_ours(epochs: int, options: dict | None = None) -> dict:
    """The whole DKVB class_il run on CLINC150 from an empty feature cache."""
    import tempfile

    from dkvb_nlp.encoders import DEFAULT_ENCODER, load_encoder, load_tokenizer
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache
    from dkvb_nlp.engine.loop import run_continual
    from dkvb_nlp.strategies.dkvb import DKVBStrategy

    stream = _clinc_stream()
    encoder, tok = load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER)
    with tempfile.TemporaryDirectory() as tmp, PhaseClock() as clock:
        start = time.perf_counter()
        cache = FeatureCache(encoder, tok, tmp, progress=False)
        ctx = RunContext(stream, cache, 0, DEFAULT_ENCODER, progress=False)
        for t in range(stream.num_tasks):
            ctx.split(t, "train").features()
            ctx.split(t, "test").features()
        encoded = time.perf_counter()
        run = run_continual(ctx, DKVBStrategy(ctx, {"epochs": epochs, **(options or {})}), dataset="clinc150",
                            log=lambda m: None)
        total = time.perf_counter() - start
    return {"seconds": total, "encode_seconds": encoded - start, "final_accuracy": run["final_accuracy"],
            "train_seconds": run["train_seconds"], "eval_seconds": run["eval_seconds"], "peak_rss_mb": peak_rss_mb(),
            **clock.split(run["train_seconds"], run["eval_seconds"])}


class PhaseClock:
    """Times key init (`init_keys`) and indexing (`quantize` outside key init) during a run, the indexing
    split by whether evaluation (the loop's `predict`) asked for it; patched in for the run only."""

    def __init__(self):
        self.seconds = {"keys": 0.0, "index_train": 0.0, "index_eval": 0.0}
        self.phase, self._saved = "train", []

    def _wrap(self, owner, name: str, phase: str | None, slot) -> None:
        """Run owner.name in `phase` (None: keep the phase), adding its time to slot(phase) unless that is None."""
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            outer = self.phase
            self.phase = phase or outer
            key, start = slot(outer), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if key is not None:
                    self.seconds[key] += time.perf_counter() - start
                self.phase = outer
        self._saved.append((owner, name, original))
        setattr(owner, name, wrapper)

    def __enter__(self):
        from dkvb_nlp.bottleneck import KeyValueBottleneck
        from dkvb_nlp.engine import loop

        self._wrap(KeyValueBottleneck, "init_keys", "keys", lambda outer: None if outer == "keys" else "keys")
        self._wrap(KeyValueBottleneck, "quantize", None, lambda outer: None if outer == "keys" else f"index_{outer}")
        self._wrap(loop, "predict", "eval", lambda outer: None)
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)

    def split(self, train_seconds: float, eval_seconds: float) -> dict:
        """keys, index (train + eval), value training and evaluation without their indexing, in seconds."""
        s = self.seconds
        return {"keys_seconds": s["keys"], "index_seconds": s["index_train"] + s["index_eval"],
                "values_seconds": train_seconds - s["keys"] - s["index_train"],
                "eval_only_seconds": eval_seconds - s["index_eval"]}


@worker
def e2e_reference(epochs: int, options: dict | None = None) -> dict:
    """The same DKVB training the way the NLP paper's code runs it: the encoder in every step.

    Key-init epochs encode the texts again, every training batch goes through the encoder
    before the (identical) value update, and every evaluation encodes the test sets again.
    """
    import numpy as np

    from dkvb_nlp.bottleneck import ValueSGD
    from dkvb_nlp.encoders import DEFAULT_ENCODER, iter_encoded, load_encoder, load_tokenizer
    from dkvb_nlp.metrics import accuracy
    from dkvb_nlp.strategies.dkvb import DKVBOptions

    o = DKVBOptions(epochs=epochs, **(options or {}))
    stream = _clinc_stream()
    encoder, tok = load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER)
    from dkvb_nlp.bottleneck import KeyValueBottleneck

    start = time.perf_counter()
    first = len(stream[0].label_names)
    model = KeyValueBottleneck(encoder.config.hidden_size, o.num_codebooks, o.num_keys, num_classes=first, seed=0)
    train_texts = [text for task in stream for text in task.train["text"]]

    class Rows:  # one encoder pass over the key-init texts per k-means epoch
        epoch = -1

        def __iter__(self):
            # The texts in the same seeded order as the strategy's cached path, so both build
            # the same keys (up to the cache's fp16 rounding): the comparison is about speed.
            Rows.epoch += 1
            order = np.random.default_rng(17 + Rows.epoch).permutation(len(train_texts)).tolist()
            batches = iter_encoded(encoder, tok, [train_texts[i] for i in order], sort_by_length=False,
                                   progress=False)
            return texts_to_blocks((b.states[j][b.mask[j]] for b in batches for j in range(len(b.positions))),
                                   o.key_init_batch_rows)

    model.init_keys(Rows(), epochs=o.key_init_epochs, decay=o.ema_decay)

    def encode_indices(texts):
        out = [None] * len(texts)
        for b in iter_encoded(encoder, tok, texts, batch_size=len(texts), sort_by_length=False, progress=False):
            idx = model.quantize(b.states, b.mask)
            for j, p in enumerate(b.positions.tolist()):
                out[p] = idx[j]
        return torch.nn.utils.rnn.pad_sequence(out, batch_first=True, padding_value=-1)

    final = None
    for t, task in enumerate(stream):
        seen = max(stream.seen_label_ids(t)) + 1
        if seen > model.num_classes:
            model.add_classes(seen - model.num_classes)
        texts, labels = list(task.train["text"]), torch.tensor(task.train["label_id"])
        sgd = ValueSGD(model, lr=o.lr, length_free=o.lr_scale == "length_free")
        gen = torch.Generator().manual_seed(t)
        for _ in range(o.epochs):
            order = torch.randperm(len(texts), generator=gen).tolist()
            for i in range(0, len(order), o.batch_size):
                rows = order[i : i + o.batch_size]
                sgd.step(encode_indices([texts[r] for r in rows]), labels[rows])
        accs = []
        for j, other in enumerate(stream):  # evaluate every task, encoding its test set again
            test = list(other.test["text"])
            logits = torch.cat([model(indices=encode_indices(test[i : i + 128])) for i in range(0, len(test), 128)])
            accs.append(accuracy(logits[:, :seen].argmax(1).numpy(), np.asarray(other.test["label_id"])))
        final = float(np.mean(accs))
    return {"seconds": time.perf_counter() - start, "final_accuracy": final, "peak_rss_mb": peak_rss_mb()}


def texts_to_blocks(rows, size: int):
    """Whole texts' token rows gathered into blocks of at least `size` rows (as the strategy)."""
    block, count = [], 0
    for r in rows:
        block.append(r)
        count += r.shape[0]
        if count >= size:
            yield torch.cat(block)
            block, count = [], 0
    if block:
        yield torch.cat(block)


def section_e2e(args) -> dict:
    """The whole class_il run on CLINC150 against its floor and the reference code's way.

    The floor and our run alternate `--repeats` times and each is reported by its fastest
    run (the least disturbed by other load; these machines are shared and noisy), with every
    run's time kept in the results.
    """
    floors, ours_runs = [], []
    for _ in range(args.repeats):
        floors.append(run_worker("e2e_floor"))
        ours_runs.append(run_worker("e2e_ours", epochs=args.e2e_epochs))
    seconds = lambda r: r.get("seconds", float("nan"))  # noqa: E731
    res = {"floor": min(floors, key=seconds), "ours": min(ours_runs, key=seconds),
           "floor_seconds_all": [seconds(r) for r in floors], "ours_seconds_all": [seconds(r) for r in ours_runs]}
    if not args.skip_reference:
        res["reference"] = run_worker("e2e_reference", epochs=args.e2e_epochs)
    floor, ours = seconds(res["floor"]), res["ours"]
    from dkvb_nlp.bottleneck.machine import describe, machine_kind
    from dkvb_nlp.bottleneck.search_auto import explain

    res["machine"] = machine_kind()
    print(f"machine: {describe(res['machine'])}")
    print(explain("cpu"))
    runs = f"best of {args.repeats}" if args.repeats > 1 else "one run"
    print(f"\n{'CLINC150 class_il, DKVB, ' + str(args.e2e_epochs) + ' epochs/task (' + runs + ')':60s} {'seconds':>9s} "
          f"{'ratio':>8s} {'final acc':>9s}  target")
    print(f"{'floor: one encoder pass over train+validation+test':60s} {floor:9.1f} {1.0:8.2f} {'':>9s}  (anchor)")
    print(f"{'ours: whole run, empty cache (encode+keys+train+eval)':60s} {seconds(ours):9.1f} "
          f"{seconds(ours) / floor:8.2f} {100 * ours.get('final_accuracy', float('nan')):8.2f}%  <= 1.2x floor (issue 20)")
    if "keys_seconds" in ours:
        print(f"time split of ours (s): encode {ours['encode_seconds']:.1f}, keys {ours['keys_seconds']:.1f}, "
              f"index {ours['index_seconds']:.1f}, train {ours['values_seconds']:.1f}, "
              f"eval {ours['eval_only_seconds']:.1f} (index: key indices of every split, train and test)")
    if args.repeats > 1:
        print("all runs (s): floor " + ", ".join(f"{x:.1f}" for x in res["floor_seconds_all"])
              + "; ours " + ", ".join(f"{x:.1f}" for x in res["ours_seconds_all"]))
    if "reference" in res:
        ref = res["reference"]
        print(f"{'reference way: encoder in every step':60s} {seconds(ref):9.1f} "
              f"{seconds(ref) / seconds(ours):7.1f}x "
              f"{100 * ref.get('final_accuracy', float('nan')):8.2f}%  ~10x ours, accuracy within 0.5")
    return res


# ------------------------------------------------------------------ memory: data larger than memory

MEMORY_DIM = 384


class AnonPeak:
    """Samples this process's RssAnon and RssFile (/proc/self/status) every `interval` s."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start_anon, self.start_file = self.read()
        self.peak_anon, self.peak_file = self.start_anon, self.start_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> tuple[float, float]:
        """(RssAnon, RssFile) now, in MB."""
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    name, value = line.split(":")
                    fields[name] = int(value.split()[0]) / 1024  # kB
        return fields.get("RssAnon", float("nan")), fields.get("RssFile", float("nan"))

    def sample(self) -> None:
        anon, file = self.read()
        self.peak_anon, self.peak_file = max(self.peak_anon, anon), max(self.peak_file, file)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def open_synthetic_features(folder: str):
    """The synthetic entry written by `memory_data`, opened as the feature cache opens entries."""
    import numpy as np

    from dkvb_nlp.engine.feature_cache import CachedFeatures

    folder = Path(folder)
    return CachedFeatures(np.load(folder / "states.npy", mmap_mode="r"), np.load(folder / "offsets.npy"),
                          np.load(folder / "pooled.npy", mmap_mode="r"), "synthetic")


@worker
def memory_data(folder: str, texts: int, dim: int = MEMORY_DIM, seed: int = 0, block_texts: int = 2048) -> dict:
    """Write synthetic clustered token states in the feature cache's format, block by block.

    Each text has a topic (64) and each token a word cluster (2,048): state = word centre +
    0.5 x topic centre + noise, 4 to 20 tokens per text (about 12). Written straight into the
    .npy memmaps (states float16, pooled float32, offsets int64), never whole in memory.
    """
    import numpy as np

    start = time.perf_counter()
    with AnonPeak() as mem:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, 21, texts)
        offsets = np.zeros(texts + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        np.save(out / "offsets.npy", offsets)
        words = rng.standard_normal((2048, dim), dtype=np.float32)
        topics = rng.standard_normal((64, dim), dtype=np.float32)
        states = np.lib.format.open_memmap(out / "states.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), dim))
        pooled = np.lib.format.open_memmap(out / "pooled.npy", mode="w+", dtype=np.float32, shape=(texts, dim))
        for s in range(0, texts, block_texts):
            e = min(texts, s + block_texts)
            n_tok = int(offsets[e] - offsets[s])
            topic = np.repeat(rng.integers(64, size=e - s), lengths[s:e])
            x = words[rng.integers(2048, size=n_tok)]
            x += 0.5 * topics[topic]
            x += 0.3 * rng.standard_normal((n_tok, dim), dtype=np.float32)
            x16 = x.astype(np.float16)
            states[offsets[s] : offsets[e]] = x16
            pooled[s:e] = np.add.reduceat(x16.astype(np.float32), offsets[s:e] - offsets[s]) / lengths[s:e, None]
        states.flush()
        pooled.flush()
        del states, pooled
    size = sum(p.stat().st_size for p in out.glob("*.npy"))
    return {"texts": texts, "tokens": int(offsets[-1]), "bytes_on_disk": size, "seconds": time.perf_counter() - start,
            "peak_anon_mb": mem.peak_anon, "peak_rss_mb": peak_rss_mb()}


@worker
def memory_run(folder: str, codebooks: int, keys: int, batch_rows: int = 8192) -> dict:
    """DKVB's key init (1 EMA epoch) + index computation, streamed from the memmaps in `folder`.

    The strategy's own code path: `key_init_blocks` (what `DKVBStrategy._key_init_rows`
    yields) into `KeyValueBottleneck.init_keys`, then `quantize_cached` into a memory-mapped
    temporary file in the entry's folder (as `DKVBStrategy.indices` does in the cache folder).
    """
    import numpy as np

    from dkvb_nlp import KeyValueBottleneck
    from dkvb_nlp.bottleneck.search import faiss_available
    from dkvb_nlp.bottleneck.index_store import Reiterable, key_init_blocks, quantize_cached

    if faiss_available():
        import faiss  # noqa: F401 - loaded before the baseline is taken, as torch is

    feats = open_synthetic_features(folder)
    before = set(Path(folder).iterdir())
    with AnonPeak() as mem:
        model = KeyValueBottleneck(MEMORY_DIM, codebooks, keys, num_classes=10, seed=0)
        t0 = time.perf_counter()
        model.init_keys(Reiterable(lambda: key_init_blocks([feats], model.pooling, batch_rows, seed=17)),
                        epochs=1, decay=0.95)
        t1 = time.perf_counter()
        mem.sample()
        keys_peak_anon = mem.peak_anon
        idx = quantize_cached(model, feats, folder=folder)
        t2 = time.perf_counter()
        # Touch the result as training would (every row once, a block at a time).
        used = 0
        for s in range(0, idx.shape[0], 4096):
            used += int((idx[s : s + 4096, :, 0] >= 0).sum())
        end_anon = mem.read()[0]
    left = sorted(p.name for p in set(Path(folder).iterdir()) - before)
    return {"texts": len(feats), "tokens": int(feats.offsets[-1]), "key_init_seconds": t1 - t0,
            "index_seconds": t2 - t1, "index_shape": list(idx.shape), "index_dtype": str(idx.dtype),
            "index_bytes": idx.numel() * idx.element_size(), "index_bytes_int32": idx.numel() * 4,
            "valid_tokens_seen": used, "files_left_behind": left, "start_anon_mb": mem.start_anon,
            "key_init_peak_anon_mb": keys_peak_anon, "peak_anon_mb": mem.peak_anon,
            "end_anon_mb": end_anon, "peak_file_mb": mem.peak_file, "peak_rss_mb": peak_rss_mb()}


def section_memory(args) -> dict:
    """Key init + index computation at N and scale x N texts: peak anonymous memory must stay flat."""
    scales = (1, args.memory_scale)
    tokens = args.memory_texts * scales[-1] * 12
    root = Path(tempfile.mkdtemp(prefix="dkvb-speed-memory-", dir=args.memory_dir))
    free = shutil.disk_usage(root).free
    need = tokens * MEMORY_DIM * 2 * 1.2
    if free < need:
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit(f"--section memory needs about {need / 1e9:.1f} GB free in {root.parent}, "
                         f"{free / 1e9:.1f} GB are; use --memory-dir or fewer --memory-texts")
    res = {}
    try:
        for scale in scales:
            folder = root / f"x{scale}"
            res[f"data_x{scale}"] = run_worker("memory_data", folder=str(folder), texts=args.memory_texts * scale)
            res[f"run_x{scale}"] = run_worker("memory_run", folder=str(folder), codebooks=args.memory_codebooks,
                                              keys=args.memory_keys)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    a, b = (res[f"run_x{s}"] for s in scales)
    da, db = (res[f"data_x{s}"] for s in scales)
    nan = float("nan")

    def row(label, x, y, target="", fmt="12,.1f"):
        ratio = y / x if x == x and y == y and x else nan
        print(f"{label:46s} {x:{fmt}} {y:{fmt}} {ratio:8.2f}  {target}")

    mb = 1024 ** 2
    print(f"\nDKVB key init (1 EMA epoch) + key indices, streamed from memmaps: C={args.memory_codebooks}, "
          f"K={args.memory_keys}, D={MEMORY_DIM}, fp16 states")
    print(f"{'measurement':46s} {'N':>12s} {str(scales[-1]) + 'N':>12s} {'ratio':>8s}  target")
    row("texts", a.get("texts", nan), b.get("texts", nan), fmt="12,.0f")
    row("token rows", a.get("tokens", nan), b.get("tokens", nan), fmt="12,.0f")
    row("synthetic states + pooled on disk (MB)", da.get("bytes_on_disk", nan) / mb, db.get("bytes_on_disk", nan) / mb)
    row("key indices, memmap file (MB)", a.get("index_bytes", nan) / mb, b.get("index_bytes", nan) / mb,
        f"{a.get('index_dtype', '?')}; before: int32 in anonymous memory")
    row("  (the same as int32 in memory, before) (MB)", a.get("index_bytes_int32", nan) / mb,
        b.get("index_bytes_int32", nan) / mb)
    row("key init, 1 EMA epoch (s)", a.get("key_init_seconds", nan), b.get("key_init_seconds", nan),
        "~linear (noisy: shared machine)")
    row("index computation (s)", a.get("index_seconds", nan), b.get("index_seconds", nan), "~linear")
    row("peak RSS, ru_maxrss (MB)", a.get("peak_rss_mb", nan), b.get("peak_rss_mb", nan),
        "includes reclaimable file-backed pages")
    row("peak file-backed RSS, RssFile (MB)", a.get("peak_file_mb", nan), b.get("peak_file_mb", nan))
    row("anonymous RSS at start (torch, faiss) (MB)", a.get("start_anon_mb", nan), b.get("start_anon_mb", nan))
    row("peak anonymous RSS, key init (MB)", a.get("key_init_peak_anon_mb", nan), b.get("key_init_peak_anon_mb", nan))
    row("peak anonymous RSS, key init + indices (MB)", a.get("peak_anon_mb", nan), b.get("peak_anon_mb", nan),
        "~1.0 (flat)")
    row("  above the start (MB)", a.get("peak_anon_mb", nan) - a.get("start_anon_mb", nan),
        b.get("peak_anon_mb", nan) - b.get("start_anon_mb", nan), "~1.0 (flat)")
    row("anonymous RSS at the end, indices held (MB)", a.get("end_anon_mb", nan), b.get("end_anon_mb", nan),
        "~1.0 (flat)")
    row("peak anonymous RSS, writing the data (MB)", da.get("peak_anon_mb", nan), db.get("peak_anon_mb", nan),
        "~1.0 (streamed)")
    left = a.get("files_left_behind", []) + b.get("files_left_behind", [])
    print(f"index temp files left behind: {left or 'none'}")
    for key, r in res.items():
        if r.get("failed"):
            print(f"{key} failed (rc {r['returncode']}): {r['error']}")
    return res


@worker
def search_time(backend: str, n: int = 20_000, c: int = 16, k: int = 4096, dk: int = 24, repeats: int = 3,
                precision: str | None = None) -> dict:
    """Best of `repeats` exact searches of n x c queries against c x k keys (`precision`: matmul's)."""
    from functools import partial

    from dkvb_nlp.bottleneck import search as search_mod
    from dkvb_nlp.bottleneck.native import nearest_bf16
    from dkvb_nlp.bottleneck.search_matmul import matmul_search

    gen = torch.Generator().manual_seed(0)
    heads, keys = torch.randn(n, c, dk, generator=gen), torch.randn(c, k, dk, generator=gen)
    stats: dict = {}
    fn = partial(matmul_search, precision=precision, stats=stats) if precision else search_mod.SEARCHES.get(backend)
    if backend == "avx512_bf16":
        fn = partial(nearest_bf16, stats=stats)
    reference = search_mod.SEARCHES.get("torch")(heads[:2000], keys)[1]
    agree = (fn(heads[:2000], keys)[1] == reference).double().mean().item()
    if agree < 0.999:  # exact searches differ only on float near-ties
        raise AssertionError(f"{backend}: only {agree:.2%} of indices equal the torch backend's")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(heads, keys)
        times.append(time.perf_counter() - start)
    out = {"seconds": min(times), "queries": n, "codebooks": c, "keys": k, "key_dim": dk}
    if "reranked" in stats:  # the matmul backend's rows whose candidates needed the float64 re-rank, last run
        out["reranked_fraction"] = stats["reranked"] / max(1, stats["rows"])
    if "searched_again" in stats:  # the bf16 screen's rows left to the full float32 search, last run
        out["searched_again_fraction"] = stats["searched_again"] / max(1, stats["rows"])
    if backend in ("avx512", "avx512_bf16"):  # they promise the AVX2 kernel's result bit for bit
        out["equal_to_avx2"] = all(torch.equal(a, b) for a, b in zip(fn(heads, keys), search_mod.SEARCHES.get("avx2")(heads, keys)))
    return out


def section_search(args) -> dict:
    """Exact nearest-key search: our fused AVX2 kernel, faiss and the matmul backend against torch."""
    from dkvb_nlp.bottleneck.machine import describe, native_bf16
    from dkvb_nlp.bottleneck.native import bf16_unavailable_reason, load_kernel, unavailable_reason
    from dkvb_nlp.bottleneck.search_auto import explain
    from dkvb_nlp.bottleneck.search_matmul import default_precision

    runs = {"torch": {}, "faiss": {}}
    if load_kernel() is not None:
        runs["avx2"] = {}
        if load_kernel("avx512") is not None:
            runs["avx512"] = {}
        if bf16_unavailable_reason() is None:
            runs["avx512_bf16"] = {}
    here = default_precision(torch.device("cpu"))
    runs[f"matmul {here}"] = {"backend": "matmul", "precision": here}
    if here != "bfloat16" and args.search_bf16:  # emulated bf16: slow, shown only on request
        runs["matmul bfloat16"] = {"backend": "matmul", "precision": "bfloat16"}
    res = {name: run_worker("search_time", **({"backend": name} | kw)) for name, kw in runs.items()}
    anchor, shape = res["torch"]["seconds"], res["torch"]
    print(f"machine: {describe()}")
    title = (f"exact search, {shape['queries']:,} x {shape['codebooks']} queries, {shape['keys']} keys "
             f"of {shape['key_dim']} dims")
    print(f"{title:62s} {'seconds':>8s} {'ratio':>6s}")
    bf16 = "native" if native_bf16() else "emulated: no native bf16 here"
    labels = {"torch": "torch baddbmm + argmin (anchor)", "faiss": "faiss IndexFlatL2 (BLAS, then argmin)",
              "avx2": "fused AVX2 kernel (ours)",
              "avx512": "fused kernel on AVX-512 registers (ours, = avx2)",
              "avx512_bf16": "bf16 screen + float32 re-rank (ours, = avx2)",
              "matmul float32": "matmul float32 scores + bound + float64 re-rank",
              "matmul bfloat16": f"matmul bf16 scores ({bf16}) + bound + re-rank"}
    for key in runs:
        r = res[key]
        if r.get("failed"):
            print(f"{labels[key]:62s} failed (rc {r['returncode']}): {r['error']}")
            continue
        extra = f"  re-ranked rows {100 * r['reranked_fraction']:.2f}%" if "reranked_fraction" in r else ""
        if "searched_again_fraction" in r:
            extra += f"  rows searched again {100 * r['searched_again_fraction']:.2f}%"
        if "equal_to_avx2" in r:
            extra += "  = avx2 bit for bit" if r["equal_to_avx2"] else "  DIFFERS FROM avx2"
        print(f"{labels[key]:62s} {r['seconds']:8.3f} {r['seconds'] / anchor:6.2f}{extra}")
    if "avx2" in res:
        print(f"fused kernel vs faiss: {res['faiss']['seconds'] / res['avx2']['seconds']:.2f}x faster")
        for name in ("avx512", "avx512_bf16"):
            if name in res and not res[name].get("failed"):
                print(f"{name} vs avx2: {res['avx2']['seconds'] / res[name]['seconds']:.2f}x faster")
    else:
        print(f"fused kernel not measured: {unavailable_reason()}")
    print(explain("cpu"))
    return res


@worker
def values_cost(rule: str, codebooks: int = 16, keys: int = 4096, classes: int = 150, tasks: int = 15,
                per_task: int = 1000, tokens: int = 12, test: int = 4500, ridge_features: int = 4096) -> dict:
    """Time and peak memory of an order-free value rule at CLINC150's size, on synthetic indices."""
    from dkvb_nlp.bottleneck import KeyValueBottleneck, attach_values_rule

    gen = torch.Generator().manual_seed(0)
    dim = codebooks * 24
    front = KeyValueBottleneck(dim, codebooks, keys, num_classes=classes // tasks)
    front.keys.copy_(torch.randn(codebooks, keys, 24, generator=gen))
    front.keys_initialized.fill_(True)
    start_mb = peak_rss_mb()
    attach_values_rule(front, rule, ridge_features=ridge_features)
    fit, solve = [], []
    for t in range(tasks):
        if t:
            front.add_classes(classes // tasks)
        idx = torch.randint(0, keys, (per_task, tokens, codebooks), generator=gen)
        labels = torch.randint(t * classes // tasks, (t + 1) * classes // tasks, (per_task,), generator=gen)
        begin = time.perf_counter()
        front.values_rule.partial_fit(idx, labels)
        fit.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        if front.values_rule.readout is not None:
            front.values_rule.readout.weight()
        solve.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    front(indices=torch.randint(0, keys, (test, tokens, codebooks), generator=gen))
    return {"rule": rule, "fit_seconds_per_task": sum(fit) / tasks, "solve_seconds_per_task": sum(solve) / tasks,
            "eval_seconds": time.perf_counter() - begin, "peak_above_start_mb": peak_rss_mb() - start_mb,
            "statistics_mb": sum(b.numel() * b.element_size() for b in front.values_rule.buffers()) / 1024 ** 2}


def section_values(args) -> dict:
    """Order-free value rules at CLINC150's size: update and solve time per task, peak memory."""
    m = args.ridge_features
    res = {rule: run_worker("values_cost", rule=rule, codebooks=args.memory_codebooks, keys=args.memory_keys,
                            ridge_features=m)
           for rule in ("counts", "ridge", "counts+ridge")}
    print(f"order-free value rules, C={args.memory_codebooks} x K={args.memory_keys}, 150 classes, 15 tasks x "
          f"1,000 examples x 12 tokens, M={m} ridge features")
    print(f"{'rule':14s} {'update/task s':>13s} {'solve/task s':>12s} {'eval 4500 s':>11s} {'statistics MB':>13s} "
          f"{'peak above start MB':>19s}")
    for rule, r in res.items():
        if r.get("failed"):
            print(f"{rule:14s} failed (rc {r['returncode']}): {r['error']}")
            continue
        print(f"{rule:14s} {r['fit_seconds_per_task']:13.2f} {r['solve_seconds_per_task']:12.2f} "
              f"{r['eval_seconds']:11.2f} {r['statistics_mb']:13.0f} {r['peak_above_start_mb']:19.0f}")
    return res


SECTIONS = {"layer": section_layer, "encode": section_encode, "e2e": section_e2e, "memory": section_memory,
            "search": section_search, "values": section_values}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=sorted(SECTIONS), default="layer")
    parser.add_argument("--steps", type=int, default=100, help="timed batches of our fwd+bwd")
    parser.add_argument("--train-examples", type=int, default=12_000)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--vq-batches", type=int, default=2, help="vector-quantize-pytorch batches timed")
    parser.add_argument("--vq-full", action="store_true", help="time vector-quantize-pytorch on all batches")
    parser.add_argument("--anchor-paper-size", action="store_true", help="also try the anchor at C=256, B=256")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--e2e-epochs", type=int, default=10, help="epochs per task in the e2e section")
    parser.add_argument("--skip-reference", action="store_true", help="e2e: skip the slow reference-style run")
    parser.add_argument("--repeats", type=int, default=3, help="e2e: floor and our run alternate this many times")
    parser.add_argument("--encode-texts", type=int, default=0, help="encode only the first N texts (0: all)")
    parser.add_argument("--memory-texts", type=int, default=20_000, help="memory: N, texts of the smaller set")
    parser.add_argument("--memory-scale", type=int, default=10, help="memory: the larger set has this x N texts")
    parser.add_argument("--memory-keys", type=int, default=4096, help="memory: K (fewer for a quick run)")
    parser.add_argument("--search-bf16", action="store_true",
                        help="search: also time the matmul backend in bf16 where bf16 is only emulated (slow)")
    parser.add_argument("--ridge-features", type=int, default=4096, help="values: M, the ridge readout's features")
    parser.add_argument("--memory-codebooks", type=int, default=16, help="memory: C (must divide 384)")
    parser.add_argument("--memory-dir", help="memory: where the synthetic data goes (default: the temp dir)")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.kwargs))))
        return None
    result = {"section": args.section, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "results": SECTIONS[args.section](args)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.json)
    return result


if __name__ == "__main__":
    main()
