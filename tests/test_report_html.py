"""report.html: one self-contained page (summary table, every plot embedded, nothing fetched),
written by write_report and so by `dkvb-nlp report`; rendered by headless Chromium where installed."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from dkvb_nlp.report import make_results, make_run, write_report
from dkvb_nlp.report.tables import table_rows
from dkvb_nlp.report.naming import REPORT_HTML

METHODS = ["dkvb", "a<b&c"]  # a label that must be escaped


class Page(HTMLParser):
    """Tags, table cells and image sources of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])
        self.urls += [v for k, v in attrs.items() if k in ("href", "src") and not v.startswith("data:")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rng = np.random.default_rng(0)
    runs = [make_run(m, seed, "class_il", "clinc150", np.tril(rng.uniform(0.3, 1.0, (2, 2))),
                     task_names=["t1", "t2"], train_seconds=1.5)
            for m in METHODS for seed in (0, 1)]
    results = make_results(runs, config={"scenario": "class_il", "dataset": "clinc150", "seeds": [0, 1]})
    out = tmp_path_factory.mktemp("report")
    paths = write_report(results, out, echo=False)
    return results, paths[REPORT_HTML], out


def test_report_html_holds_the_table_and_every_plot_and_fetches_nothing(report):
    results, path, out = report
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>") and "table" in page.tags
    assert page.rows == table_rows(results)  # the summary table, cell for cell (escaped names unescaped)
    assert "a&lt;b&amp;c" in text and "a<b&c" not in text
    assert len(page.images) == 1 + len(METHODS)  # the curves and one heatmap per method
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    curves = (out / "accuracy_curves.png").read_bytes()
    assert base64.b64encode(curves).decode() in text  # the same plot as the PNG file
    assert page.urls == [] and "http://" not in text and "https://" not in text
    assert not {"script", "link", "iframe"} & set(page.tags)


def test_report_command_writes_the_page(report, tmp_path, capsys):
    from dkvb_nlp.runner.cli import main

    _, path, out = report
    assert main(["report", str(out), "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / REPORT_HTML).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    assert "report.html" in capsys.readouterr().out


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium or Chrome on PATH (chromium, chromium-browser, "
                                             "google-chrome): the headless rendering check needs one")
def test_headless_chromium_renders_the_page(report, tmp_path):
    _, path, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", path.resolve().as_uri()], check=True, timeout=60,
                   capture_output=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000  # more than a blank page


def test_open_world_rows_get_their_own_table_and_the_dataset_is_named():
    from dkvb_nlp.report import report_html
    from dkvb_nlp.report.open_world_table import HEADER, open_world_rows

    oos = {"auroc": 0.9762, "fpr_at_95_tpr": 0.112, "closed_set_accuracy": 0.9531,
           "accuracy": {"threshold": 0.5, "oos_recall": 0.76, "in_scope_accuracy": 0.9422},
           "youden": {"threshold": 0.4, "oos_recall": 0.9, "in_scope_accuracy": 0.9191}}
    world = [{"unseen_auroc": 0.95}, {"oos": oos}]
    runs = [make_run("dkvb", 0, "class_il", "clinc150", np.tril(np.full((2, 2), 0.9)), task_names=["t1", "t2"],
                     open_world=world),
            make_run("nmc", 0, "class_il", "clinc150", np.tril(np.full((2, 2), 0.8)), task_names=["t1", "t2"])]
    results = make_results(runs, config={"scenario": "class_il", "dataset": None})
    rows = open_world_rows(results)
    assert rows == [list(HEADER), ["dkvb", "0", "msp", "95.31", "97.62", "11.20", "76.0 / 94.22", "90.0 / 91.91",
                                   "95.00", "-", "-", "-"]]
    from dkvb_nlp.report.plots import plot_pngs

    page = Page(report_html(results, plot_pngs(results)))
    assert rows[1] in page.rows and ["dataset"] not in page.rows
    assert "clinc150" in report_html(results, plot_pngs(results)).split("<h2>Summary")[0]
    assert open_world_rows(make_results(runs[1:], config={})) == []
    validated = {**oos, "score": "oos_class",
                 "validation": {"auroc": 0.985, "closed_set_accuracy": 0.958,
                                "accuracy": {"oos_recall": 0.83, "in_scope_accuracy": 0.948}}}
    run = make_run("dkvb", 0, "class_il", "clinc150", np.tril(np.full((2, 2), 0.9)), task_names=["t1", "t2"],
                   open_world=[{"unseen_auroc": 0.95}, {"oos": validated}])
    assert open_world_rows(make_results([run], config={}))[1][2:4] == ["oos_class", "95.31"]
    assert open_world_rows(make_results([run], config={}))[1][-3:] == ["95.80", "98.50", "83.0 / 94.80"]
