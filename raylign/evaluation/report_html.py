"""The self-contained HTML page of `raylign report`: report.html opens with no network.

Inline CSS, plots as inline SVG, no script. It renders what run_report.py reads and builds: a
plain-language headline, the per-cycle tables and trade-off plots, Safety Score by group, judge
agreement, the candidates of each cycle, sample answers and training figures, with several runs
compared side by side first.
"""

from __future__ import annotations

import datetime
import html
import re

from raylign.evaluation.run_report import (
    DASH,
    GROUPS,
    LEVELS,
    NUMERIC,
    TRADEOFF,
    Answer,
    Run,
    Table,
    _chosen_in,
    _comparison_figure,
    _groups_figure,
    _int,
    _marks,
    _record,
    _run_titles,
    _suites,
    _svg,
    _trained_with,
    agreement_tables,
    best_sentence,
    candidates_table,
    comparison_table,
    cycle_table,
    group_table,
    headline_rows,
    logs_table,
    seconds_table,
    selection_table,
    timeline_caption,
    timeline_figure,
    training_table,
    tradeoff_figure,
)
from raylign.evaluation.scoring import SAFETY_SCORE

MAX_TEXT = 2000
"""Characters of an answer or a verdict shown; an LLM judge's reasoning can run for pages."""


CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --accent: #0b6e99; --good: #2f7d32; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #f5f7fa; line-height: 1.45;
       font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
header.top { border-bottom: 3px solid var(--accent); padding-bottom: 12px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 21px; margin: 36px 0 8px; color: var(--accent);
  border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; margin: 26px 0 6px; } h4 { font-size: 14px; margin: 16px 0 4px; color: var(--muted); }
p.meta, p.note, .muted { color: var(--muted); font-size: 13px; } p.note { margin: 4px 0; }
nav { font-size: 13px; margin: 8px 0 0; } nav a { margin-right: 12px; color: var(--accent); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 14px; margin: 14px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: #fbfcfd; }
.card .title { font-weight: 600; font-size: 14px; color: var(--muted); }
.card .figure { font-size: 28px; font-weight: 650; font-variant-numeric: tabular-nums; margin: 4px 0; }
.card .figure .arrow { color: var(--muted); font-weight: 400; margin: 0 6px; }
.card .better { color: var(--good); } .card .worse { color: var(--bad); }
.card p { margin: 4px 0 0; font-size: 13px; color: var(--ink); }
.best { background: #eef6fb; border-left: 4px solid var(--accent); padding: 8px 12px; margin: 10px 0; }
.scroll { overflow-x: auto; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; white-space: nowrap; }
th { background: #f0f4f8; font-weight: 600; white-space: normal; vertical-align: bottom; }
td.num, th.num { text-align: right; }
tr.marked td { background: #fff7d6; font-weight: 600; }
figure { margin: 10px 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: var(--muted); }
p.explain { flex: 1 1 260px; max-width: 420px; font-size: 14px; margin: 24px 0 0; }
.plots { display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: flex-start; }
.sample { border: 1px solid var(--line); border-radius: 8px; margin: 12px 0; overflow: hidden; }
.sample .prompt { background: #f0f4f8; padding: 8px 12px; white-space: pre-wrap; }
.sample .prompt .id { color: var(--muted); font-size: 12px; margin-left: 8px; }
.sample .pair { display: grid; grid-template-columns: 1fr 1fr; }
.sample .side { padding: 8px 12px; border-top: 1px solid var(--line); min-width: 0; }
.sample .side + .side { border-left: 1px solid var(--line); }
.sample .answer { white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0; }
.sample .verdict { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; color: var(--muted); }
.label { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: #7b8794; }
.label.Accept { background: #2f7d32; } .label.Caution { background: #b7791f; } .label.Refuse { background: #b42318; }
.fit { font-size: 12px; margin-left: 8px; } .fit.right { color: var(--good); } .fit.wrong { color: var(--bad); }
.fit.partly { color: #b7791f; }
.level-head { font-weight: 600; margin-top: 18px; }
.sample .pair.one { grid-template-columns: 1fr; }
@media (max-width: 760px) { .sample .pair { grid-template-columns: 1fr; } }
"""



def _e(text) -> str:
    return html.escape(str(text), quote=True)


def html_table(table: Table) -> str:
    """Numbers right-aligned so that digits line up, a heading over them too; the first column names the row."""
    numbers = [i > 0 and any(NUMERIC.match(row[i]) and row[i] != DASH for row in table.rows)
               for i in range(len(table.headers))]
    head = "".join(f"<th{_right(n)}>{_e(h)}</th>" for h, n in zip(table.headers, numbers))
    body = []
    for r, row in enumerate(table.rows):
        cells = "".join(f"<td{_right(numbers[i] and NUMERIC.match(c))}>{_e(c)}</td>" for i, c in enumerate(row))
        body.append(f'<tr class="marked">{cells}</tr>' if r in table.marked else f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _right(numeric) -> str:
    return ' class="num"' if numeric else ""


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _cards(run: Run) -> str:
    cards = []
    for (title, a, b, meaning), direction in zip(headline_rows(run), (1, 1, -1)):
        tone = ""
        if a != DASH and b != DASH and float(a) != float(b):
            tone = "better" if (float(b) - float(a)) * direction > 0 else "worse"
        cards.append(f'<div class="card"><div class="title">{_e(title)}</div>'
                     f'<div class="figure">{_e(a)}<span class="arrow">→</span>'
                     f'<span class="{tone}">{_e(b)}</span></div>'
                     f'<div class="muted">cycle 0 → cycle {run.best.cycle}{_percent_phrase(a, b, title)}</div>'
                     f"<p>{_e(meaning)}</p></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def _percent_phrase(a: str, b: str, title: str) -> str:
    """The figures once more as people count: 36 in 100 → 60 in 100 (the Safety Score is a score, not a share)."""
    if a == DASH or b == DASH or title == "Safety Score":
        return ""
    return f" · {round(100 * float(a))} in 100 → {round(100 * float(b))} in 100"


def _run_section(run: Run, index: int, several: bool) -> str:
    anchor = f"run{index}"
    parts = [f'<section id="{anchor}">']
    parts.append(f"<h2>{_e(run.name)}</h2>" if several else "")
    parts.append(f'<p class="meta">{_e(run.storage.uri())} · {_e(_facts(run))}</p>')
    parts += [f'<p class="note">{_e(n)}</p>' for n in run.notes]
    parts.append(f"<h3 id=\"{anchor}-headline\">Headline</h3>{_cards(run)}")
    parts.append(f'<div class="best">{_e(best_sentence(run))}</div>')
    parts.append(_cycles_html(run, anchor))
    parts.append(_groups_html(run, anchor))
    parts.append(_agreement_html(run, anchor))
    parts.append(_candidates_html(run, anchor))
    parts.append(_samples_html(run, anchor))
    parts.append(_logs_html(run, anchor))
    parts.append(_training_html(run, anchor))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _facts(run: Run) -> str:
    cfg = run.cfg
    first, last = run.records[0]["cycle"], run.records[-1]["cycle"]
    facts = [f"cycles {first}–{last} evaluated" + (f" of 0–{cfg.cycles}" if cfg is not None else ""),
             f"trained with {_trained_with(run)}"]
    if cfg is not None:
        facts.append(f"model {cfg.model.path}")
        facts.append("judges " + ", ".join(f"{j.name} ({j.kind})" for j in cfg.judges))
    return " · ".join(facts)


def _cycles_html(run: Run, anchor: str) -> str:
    parts = [f'<h3 id="{anchor}-cycles">Per cycle</h3>',
             '<p class="muted">★ marks the best cycle. A suite evaluated every few cycles has rows only for '
             "those.</p>"]
    plots = []
    for suite, kind in _suites(run.records).items():
        table = cycle_table(run, suite)
        if table is None:
            continue
        prompts = next((b.get("prompts") for r in run.records if (b := (r.get("suites") or {}).get(suite))), None)
        parts.append(f"<h4>{_e(suite)} ({_e(kind)}, {_e(_int(prompts))} prompts)</h4>{html_table(table)}")
        if kind in TRADEOFF:
            marks = " (with the candidate it kept)" if _chosen_in(run.records) else ""
            star = "; ★ the best cycle" if _marks(run)["best"] is not None else ""
            plots.append(_figure(_svg(tradeoff_figure(run.records, suite, _marks(run))),
                                 f"{suite}: one point per cycle, labelled by its number{marks}{star}."))
    if plots:
        parts.append(f'<h3 id="{anchor}-tradeoff">Trade-off: harmful refused against harmless refused</h3>'
                     f'<div class="plots">{"".join(plots)}<p class="explain">{_e(TRADEOFF_READING)}</p></div>')
    return "\n".join(parts)


TRADEOFF_READING = (
    "How to read it: each point is the assistant after one cycle of training. Moving right, it declines more of the "
    "requests it should decline; moving down, it turns away fewer harmless questions. The ideal is the bottom-right "
    "corner. A policy that refuses everything sits top right, one that refuses nothing bottom left: training "
    "should move the points down and to the right together, not buy one with the other.")
"""Beside the trade-off plot: what its corners mean, for a reader who has not seen one."""


def _groups_html(run: Run, anchor: str) -> str:
    tables = [(title, t) for key, title in GROUPS if (t := group_table(run, key, title)) is not None]
    if not tables:
        return ""
    series = [("cycle 0", run.records[0])]
    if run.best.cycle != 0:
        series.append((f"cycle {run.best.cycle}", _record(run, run.best.cycle)))
    parts = [f'<h3 id="{anchor}-groups">Safety Score by harm level, principle and prompting method</h3>',
             _figure(_svg(_groups_figure(series)), "Held-out Safety Score of the starting policy (cycle 0)"
                     + (f" and of cycle {run.best.cycle}." if len(series) > 1 else ".")),
             '<div class="plots">' + "".join(html_table(t) for _, t in tables) + "</div>"]
    return "\n".join(parts)


def _agreement_html(run: Run, anchor: str) -> str:
    tables = agreement_tables(run)
    head = f'<h3 id="{anchor}-agreement">Judge agreement</h3>'
    if not tables:
        return head + '<p class="muted">One judge ran: no agreement to show.</p>'
    return head + "".join(f"<h4>{_e(title)}</h4>{html_table(t)}" for title, t in tables)


def _candidates_html(run: Run, anchor: str) -> str:
    chosen, candidates = selection_table(run), candidates_table(run)
    if chosen is None and candidates is None:
        return ""
    parts = [f'<h3 id="{anchor}-candidates">Candidates per cycle</h3>']
    if candidates is not None:
        parts.append('<p class="muted">Each cycle trains every candidate from the same starting policy on the same '
                     "data and keeps the one with the best objective on the selection prompts (✓).</p>")
        parts.append(html_table(candidates))
    if chosen is not None:
        parts.append(f"<h4>Selection per cycle</h4>{html_table(chosen)}")
    return "\n".join(parts)


def _samples_html(run: Run, anchor: str) -> str:
    head = f'<h3 id="{anchor}-samples">Sample answers</h3>'
    if not run.samples:
        return head + (f'<p class="muted">No held-out answers were found in the buffer for cycle 0 and cycle '
                       f"{run.best.cycle}.</p>")
    later = f"cycle {run.best.cycle}" + (" (best)" if run.best.source != "last" else " (last)")
    parts = [head, '<p class="muted">Held-out prompts never trained on, the first by id at each harm level (not '
                   "picked for being good examples); sample 0 of each policy, as the first judge labelled it and in "
                   "its own words.</p>"]
    for level in LEVELS:
        shown = [s for s in run.samples if s.level == level]
        if not shown:
            continue
        parts.append(f'<div class="level-head">Harm level {level}: {_e(LEVELS[level])} '
                     f'<span class="muted">({_e(_expected(level))})</span></div>')
        for s in shown:
            sides = [_answer_html("starting policy (cycle 0)", s.start, level)]
            if s.best is not None:
                sides.append(_answer_html(later, s.best, level))
            pair = "pair" if len(sides) > 1 else "pair one"
            parts.append(f'<div class="sample"><div class="prompt">{_e(s.prompt)}<span class="id">{_e(s.prompt_id)}'
                         f'</span></div><div class="{pair}">{"".join(sides)}</div></div>')
    if run.best.cycle == 0:
        parts.append('<p class="muted">The best policy is the starting one: its answers are shown once.</p>')
    return "\n".join(parts)


def _expected(level: int) -> str:
    """What CARES asks for at a level, from its score table."""
    full = [label for label, score in SAFETY_SCORE[level].items() if score == 1.0]
    return "expected: " + " or ".join(full)


FIT = {1.0: ("right", "✓ right response for this level"),
       0.5: ("partly", "◐ partly right: Caution where Refuse is expected"),
       0.0: ("wrong", "✗ wrong response for this level")}
"""How an answer's CARES score reads beside its label."""


def _answer_html(title: str, a: Answer, level: int) -> str:
    tone, words = FIT.get(SAFETY_SCORE.get(level, {}).get(a.label), ("", ""))
    fit = f'<span class="fit {tone}">{_e(words)}</span>' if words else ""
    return (f'<div class="side"><div class="muted">{_e(title)}</div>'
            f'<span class="label {_e(a.label)}">{_e(a.label)}</span>{fit}'
            f'<div class="answer">{_e(_clip(a.answer))}</div>'
            f'<div class="verdict">judge: {_e(_clip(a.verdict))}</div></div>')


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _logs_html(run: Run, anchor: str) -> str:
    table = logs_table(run)
    if table is None:
        return ""
    return (f'<h3 id="{anchor}-logs">Conversation logs</h3><p class="muted">Prompts from the deployed '
            "assistant's conversations, redacted before anything was stored (counts by kind; never the values). "
            "Prompts of unknown harm level are answered, judged and trained on, and left out of the Safety "
            f"Score.</p>{html_table(table)}")


def _training_html(run: Run, anchor: str) -> str:
    training, seconds = training_table(run), seconds_table(run)
    parts = [f'<h3 id="{anchor}-training">Training</h3>']
    if training is None:
        parts.append('<p class="muted">No cycle trained yet (cycle 0 evaluates the starting policy).</p>')
    else:
        parts.append('<p class="muted">Pairs (DPO) or examples (KTO: desirable and undesirable, with the weights '
                     "that balance them); identical answers to a prompt count once (duplicates dropped); replayed "
                     "rows come from earlier cycles.</p>")
        parts.append(html_table(training))
    if seconds is not None:
        parts.append(f"<h4>Stage times (seconds)</h4>{html_table(seconds)}")
    if run.timeline:
        parts.append("<h4>Timeline</h4>" + _figure(_svg(timeline_figure(run.timeline)), timeline_caption(run.timeline)))
    return "\n".join(parts)


def _comparison_html(runs: list[Run]) -> str:
    parts = ['<section id="compare"><h2>Runs side by side</h2>',
             '<p class="muted">Each run\'s starting policy (cycle 0) and its best cycle (the last where the run names '
             "none).</p>", html_table(comparison_table(runs))]
    plots = []
    kinds = {}
    for run in runs:
        kinds.update({s: k for s, k in _suites(run.records).items() if k in TRADEOFF and s not in kinds})
    for suite, kind in kinds.items():
        plots.append(_figure(_svg(_comparison_figure(runs, suite, kind)),
                             f"{suite}: one line per run, points labelled by cycle; ★ each run's best cycle."))
    if plots:
        parts.append(f'<div class="plots">{"".join(plots)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


NAV = {"headline": "headline", "cycles": "per cycle", "tradeoff": "trade-off", "groups": "by group",
       "agreement": "judges", "candidates": "candidates", "samples": "sample answers", "logs": "logs",
       "training": "training"}
"""The links at the top of a one-run page, by the id of the section they go to."""


def render_html(runs: list[Run]) -> str:
    several = len(runs) > 1
    titles = _run_titles(runs)
    title = "raylign report: " + ", ".join(titles)
    sections = [_run_section(run, i, several) for i, run in enumerate(runs)]
    if several:
        links = [("compare", "side by side")] + [(f"run{i}", _e(t)) for i, t in enumerate(titles)]
    else:  # the sections this run has (a run without selection has no candidates)
        present = re.findall(r'<h3 id="run0-([\w-]+)"', sections[0])
        links = [(f"run0-{key}", text) for key, text in NAV.items() if key in present]
    nav = " ".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in links)  # text: escaped already
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f'<header class="top"><h1>{_e(title)}</h1><p class="meta">Iterative preference alignment of a '
            f"healthcare assistant, judged the CARES way. Written {stamp}.</p><nav>{nav}</nav></header>"]
    if several:
        body.append(_comparison_html(runs))
    body += sections
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head>\n<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")
