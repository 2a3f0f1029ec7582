"""report.html: a job's report on one self-contained page.

The page holds what the job was (scenario, dataset, encoder, seeds, tasks), the summary table
(the rows of summary.txt, as an HTML table) and every plot (the accuracy curves, then one
heatmap per method), each PNG embedded as a base64 `data:` URI. Nothing is fetched: no
scripts, no style sheets, no fonts, no links, so the file opens the same offline, attached to
an e-mail or from an archive. Every text from results.json is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from typing import Mapping

from .aggregate import aggregate
from .naming import CURVES_PNG, heatmap_png_name, slugs
from .open_world_table import open_world_rows
from .tables import table_rows

__all__ = ["report_html"]

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
img { max-width: 100%; height: auto; }
figure { margin: 1.5em 0; }
"""

# What the page says about the job, from results["config"], in this order when present.
_ABOUT = ("scenario", "dataset", "encoder", "methods", "seeds", "max_length", "task_names")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return "default" if v is None else str(v)


def _about(results: Mapping) -> str:
    config = dict(results.get("config") or {})
    if config.get("dataset") is None:  # the scenario's default: name what the runs used
        used = sorted({str(r["dataset"]) for r in results.get("runs", []) if r.get("dataset")})
        if used:
            config["dataset"] = ", ".join(used)
    items = [(k, config[k]) for k in _ABOUT if k in config]
    versions = results.get("versions") or {}
    if versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(_value(v))}</dd>" for k, v in items)
    return f"<dl>{rows}</dl>" if rows else ""


def _table(rows: list[list[str]]) -> str:
    """A header row and body rows as an HTML table (every column but the first holds numbers)."""
    header, *body = rows
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    number = ' class="num"'
    lines = ["<tr>" + "".join(f"<td{number if i else ''}>{html.escape(c)}</td>" for i, c in enumerate(r))
             + "</tr>" for r in body]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _open_world(results: Mapping) -> str:
    rows = open_world_rows(results)
    if not rows:
        return ""
    return ("<h2>Open world</h2>" + _table(rows) + "<p>After the last task, each method scored by the maximum "
            "softmax probability of its logits over the classes seen: out-of-scope texts against in-scope test texts (thresholds "
            "chosen on validation), and, class-incrementally, seen against not-yet-seen classes.</p>")


def report_html(results: Mapping, pngs: Mapping[str, bytes], title: str = "dkvb-nlp report") -> str:
    """The page as text: the job, the summary table, and the plots of `pngs` (plot_pngs' names)."""
    missing = [name for name in [CURVES_PNG] if name not in pngs]
    if missing:
        raise ValueError(f"report_html needs the plot(s) {missing}; got {sorted(pngs)}")
    summaries = aggregate(results)
    names = slugs(s.label for s in summaries)
    figures = [f"<figure>{_img(pngs[CURVES_PNG], 'accuracy over tasks, every method')}"
               "<figcaption>Accuracy on the tasks seen so far (left) and on all tasks (right) after each "
               "task; bands: ± one standard deviation over seeds.</figcaption></figure>"]
    for s in summaries:
        name = heatmap_png_name(names[s.label])
        if name not in pngs:
            raise ValueError(f"report_html: no heatmap {name!r} for method {s.label!r}")
        figures.append(f"<figure><h3>{html.escape(s.label)}</h3>{_img(pngs[name], f'accuracy matrix of {s.label}')}"
                       "</figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{_about(results)}"
            f"<h2>Summary</h2>{_table(table_rows(results))}"
            "<p>Accuracies in %, mean ± std over seeds; BWT and forgetting over the tasks learned; "
            "train time in seconds per run.</p>"
            f"{_open_world(results)}<h2>Plots</h2>{''.join(figures)}</body></html>\n")
