"""Continual-learning scenarios built from the packaged CLINC150 and the real data folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from dkvb_nlp.data import DATA_DIR_ENV, SCENARIOS, build_scenario, label_names, load_text_dataset, validate_stream
from dkvb_nlp.data.ordering import nth_permutation
from dkvb_nlp.data.scenarios import GLUE_TASKS

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """The real data folder: $DKVB_DATA_DIR, else <repo>/../shared/data; None when absent (fresh CI clone)."""
    for candidate in (os.environ.get(DATA_DIR_ENV), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "dsc").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def real_data():
    """Point DKVB_DATA_DIR at the real data folder for this module, or skip."""
    root = shared_data()
    if root is None:
        pytest.skip("needs the real data folder ../shared/data (or $DKVB_DATA_DIR); absent in a fresh clone")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def clinc_stream():
    return build_scenario("class_il")  # packaged CLINC150: runs without ../shared


def train_ids(task):
    return np.asarray(task.train["label_id"])


def tiny(domains=("a", "b"), labels=("x", "y"), per=3, test_domains=None) -> DatasetDict:
    """An in-memory dataset with every (domain, label) pair `per` times per split."""
    def split(doms):
        rows = [(f"{d}-{lab}-{i}", lab, d) for d in doms for lab in labels for i in range(per)]
        return Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows],
                                  "domain": [r[2] for r in rows]})
    return DatasetDict({"train": split(domains), "validation": split(domains),
                        "test": split(domains if test_domains is None else test_domains)})


# --- class-incremental --------------------------------------------------------------------------


def test_class_il_clinc150_default_is_15_disjoint_tasks_of_10_intents(clinc_stream):
    s = clinc_stream
    assert (s.num_tasks, s.num_heads, s.classes_per_head, s.task_id_at_test) == (15, 1, (150,), False)
    groups = [set(t.label_names) for t in s]
    assert all(len(g) == 10 for g in groups) and len(set().union(*groups)) == 150
    assert all(a.isdisjoint(b) for i, a in enumerate(groups) for b in groups[i + 1:])
    assert [(len(t.train), len(t.validation), len(t.test)) for t in s] == [(1000, 200, 300)] * 15
    # seed 0 keeps the canonical (sorted) class order; ids are global positions in arrival order.
    assert list(s.class_order) == label_names(load_text_dataset("clinc150")) == list(s.heads[0])
    assert set(train_ids(s[3])) == set(range(30, 40)) and s[3].label_ids == tuple(range(30, 40))
    assert s[1].train.features["label_id"].names == list(s.heads[0])
    assert s.seen_label_ids(1) == tuple(range(20))


def test_class_il_seed_gives_a_reproducible_other_order(clinc_stream):
    a, b = (build_scenario("class_il", seed=7, max_train_per_class=3) for _ in range(2))
    assert [t.label_names for t in a] == [t.label_names for t in b]
    assert a[0].train["text"] == b[0].train["text"]
    assert a.class_order != clinc_stream.class_order and sorted(a.class_order) == sorted(clinc_stream.class_order)
    assert all(np.bincount(train_ids(t)).max() == 3 and len(t.train) == 30 for t in a)


def test_class_il_cap_keeps_the_same_examples_whatever_the_order():
    a = build_scenario("class_il", seed=1, max_train_per_class=4)
    b = build_scenario("class_il", seed=2, max_train_per_class=4)
    def texts(stream):
        return {name: sorted(text for text, label in zip(t.train["text"], t.train["label"]) if label == name)
                for t in stream for name in t.label_names[:1]}

    ta, tb = texts(a), texts(b)
    assert all(ta[k] == tb[k] for k in ta.keys() & tb.keys())
    c = build_scenario("class_il", seed=1, max_train_per_class=4, data_seed=1)
    assert texts(c) != ta


def test_class_il_multi_head_and_domain_groups():
    s = build_scenario("class_il", multi_head=True, max_train_per_class=2)
    assert (s.num_heads, s.classes_per_head, s.task_id_at_test) == (15, (10,) * 15, True)
    assert all(set(train_ids(t)) == set(range(10)) and t.head == t.task_id for t in s)
    d = build_scenario("class_il", class_groups="domain", max_train_per_class=2)
    assert (d.num_tasks, {len(t.label_names) for t in d}) == (10, {15})
    assert d[0].name == "domain auto_and_commute"


def test_class_il_20newsgroups_and_r8(real_data):
    ng = build_scenario("class_il", dataset="20newsgroups")
    assert (ng.num_tasks, ng.classes_per_head) == (10, (20,))
    assert sum(len(t.train) + len(t.validation) for t in ng) == 11314 and sum(len(t.test) for t in ng) == 7532
    assert ng.split_sources["20newsgroups"]["test"] == "test"
    r8 = build_scenario("class_il", dataset="r8")
    assert (r8.num_tasks, r8.classes_per_head, [len(t.label_names) for t in r8]) == (4, (8,), [2] * 4)
    assert sum(len(t.train) + len(t.validation) for t in r8) == 5485 and sum(len(t.test) for t in r8) == 2189
    # the carved validation is about 10% of every class, R8's smallest (grain, 41 rows) included
    val = np.bincount(np.concatenate([np.asarray(t.validation["label_id"]) for t in r8]))
    train = np.bincount(np.concatenate([train_ids(t) for t in r8]))
    assert np.all(np.abs(val / (val + train) - 0.1) < 0.02)
    assert build_scenario("class_il", dataset="r8", seed=3).class_order != r8.class_order


# --- domain-incremental -------------------------------------------------------------------------


def test_domain_il_dsc(real_data):
    s = build_scenario("domain_il", max_train_per_class=20)
    assert (s.num_tasks, s.heads, s.task_id_at_test) == (10, (("negative", "positive"),), False)
    assert len({t.name for t in s}) == 10 and all(t.label_names == ("negative", "positive") for t in s)
    assert all(set(t.train["domain"]) == {t.name} == set(t.test["domain"]) for t in s)
    assert all(len(t.train) == 40 and len(t.validation) == 500 for t in s)
    assert sum(len(t.test) for t in s) == 4666
    full = build_scenario("domain_il")
    # the shared copy's validation was rebuilt disjoint from train (dsc/SOURCE.md: 250 negative
    # training reviews per domain moved to validation), so train holds 34,826 and no text is in both
    assert sum(len(t.train) for t in full) == 34826
    assert all(not set(t.train["text"]) & set(t.validation["text"]) for t in full)
    again = build_scenario("domain_il", seed=4, max_train_per_class=20)
    assert [t.name for t in again] == [t.name for t in build_scenario("domain_il", seed=4, max_train_per_class=20)]
    assert [t.name for t in again] != [t.name for t in s]
    paper = sorted((t.name for t in s), reverse=True)
    assert [t.name for t in build_scenario("domain_il", order=paper, max_train_per_class=1)] == paper


# --- task-type-incremental ----------------------------------------------------------------------


def test_task_type_il_glue(real_data):
    s = build_scenario("task_type_il", max_train_per_class=10)
    assert [t.name for t in s] == list(GLUE_TASKS) and s.classes_per_head == (2, 2, 2, 2)
    assert s.task_id_at_test and [t.head for t in s] == [0, 1, 2, 3]
    assert {t.name: len(t.test) for t in s} == {"glue/rte": 277, "glue/mrpc": 1725, "glue/qqp": 7600,
                                               "glue/sst2": 1821}
    assert {t.name: s.split_sources[t.name]["test"] for t in s} == {
        "glue/rte": "validation", "glue/mrpc": "test", "glue/qqp": "test", "glue/sst2": "test"}
    assert [t.has_pairs for t in s] == [True, True, True, False]
    assert all(len(t.train) == 20 and set(train_ids(t)) == {0, 1} for t in s)
    other = build_scenario("task_type_il", seed=1, max_train_per_class=10)
    assert [t.name for t in other] == list(nth_permutation(GLUE_TASKS, 1)) != list(GLUE_TASKS)


def test_task_type_seeds_enumerate_all_24_orders():
    assert len({tuple(nth_permutation(GLUE_TASKS, seed)) for seed in range(24)}) == 24
    assert nth_permutation(GLUE_TASKS, 24) == list(GLUE_TASKS)


def test_task_type_il_on_in_memory_datasets():
    s = build_scenario("task_type_il", datasets={"one": tiny(), "two": tiny(labels=("p", "q", "r"))}, seed=1)
    assert [t.name for t in s] == ["two", "one"] and s.classes_per_head == (3, 2)


# --- errors -------------------------------------------------------------------------------------


def test_unknown_scenario_and_unknown_option():
    with pytest.raises(ValueError, match=r"unknown scenario 'online'; accepted: class_il, domain_il, stream_il, task_type_il"):
        build_scenario("online")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['tasks'\]; accepted: dataset, .*seed"):
        build_scenario("class_il", tasks=3)
    assert SCENARIOS.names() == ["class_il", "domain_il", "stream_il", "task_type_il"]


def test_domain_il_needs_domains_that_share_labels():
    with pytest.raises(ValueError, match=r"domain_il needs a 'domain' column; dataset '<in-memory>' has \['text', "):
        build_scenario("domain_il", dataset=DatasetDict({"train": tiny()["train"].remove_columns("domain")}))
    with pytest.raises(ValueError, match=r"share the label set \(150 labels: accept_reservations, .*domain "
                                         r"'auto_and_commute' of 'clinc150' has 15: .*class_groups='domain'"):
        build_scenario("domain_il", dataset="clinc150")


def test_class_groups_must_fit_the_classes():
    with pytest.raises(ValueError, match=r"classes_per_task=7 does not divide the 150 classes.*accepted: \[1, 2, 3, 5"):
        build_scenario("class_il", classes_per_task=7)
    with pytest.raises(ValueError, match=r"class order repeats \['x'\]"):
        build_scenario("class_il", dataset=tiny(), class_groups=[["x"], ["x", "y"]])
    with pytest.raises(ValueError, match=r"unknown value\(s\) \['z'\]; accepted: \['x', 'y'\]"):
        build_scenario("class_il", dataset=tiny(), class_order=["z", "x"])
    with pytest.raises(ValueError, match=r"multi_head=True needs at least 2 classes per task"):
        build_scenario("class_il", dataset=tiny(), classes_per_task=1, multi_head=True)
    with pytest.raises(ValueError, match=r"max_train_per_class=0; accepted: a positive integer"):
        build_scenario("class_il", dataset=tiny(), max_train_per_class=0)
    with pytest.raises(ValueError, match=r"seed=-1; accepted: a non-negative integer"):
        build_scenario("class_il", dataset=tiny(), seed=-1)
    with pytest.raises(ValueError, match=r"task_type_il takes several datasets"):
        build_scenario("task_type_il", datasets="glue/rte")


def test_uneven_groups_are_explicit_and_a_subset_is_allowed():
    s = build_scenario("class_il", dataset=tiny(labels=("x", "y", "z")), class_groups=[["z"], ["x", "y"]])
    assert s.heads == (("z", "x", "y"),) and [len(t.train) for t in s] == [6, 12]


def test_an_empty_task_is_reported():
    with pytest.raises(ValueError, match=r"task 1 \('b'\) has an empty test split"):
        build_scenario("domain_il", dataset=tiny(test_domains=("a",)))


def test_carving_needs_a_sane_fraction():
    data = DatasetDict({k: v for k, v in tiny(per=4).items() if k != "validation"})
    task = build_scenario("class_il", dataset=data, validation_fraction=0.25)[0]
    assert (len(task.train), len(task.validation)) == (12, 4)  # one of each (label, domain) stratum of 4
    with pytest.raises(ValueError, match=r"validation_fraction=1.5; accepted: a number strictly between 0 and 1"):
        build_scenario("class_il", dataset=data, validation_fraction=1.5)


def test_validate_stream_rejects_a_label_in_two_class_incremental_tasks():
    s = build_scenario("class_il", dataset=tiny(labels=("w", "x", "y", "z")))
    bad = dataclasses.replace(s, tasks=(s[0], dataclasses.replace(s[0], task_id=1)))
    with pytest.raises(ValueError, match=r"label 'w' occurs in tasks 0 and 1"):
        validate_stream(bad)
