"""The judge's figures: per-pair win/tie/loss from both orders, bootstrap intervals, position bias, the report."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def pair_key(x: str, y: str) -> str:
    return f"{x} vs {y}"


def prompt_outcomes(x: str, y: str, prompts: list[dict], verdicts: dict[tuple, dict]) -> list[dict[str, Any]]:
    """For each prompt, the two judgments of ``x`` vs ``y`` (x shown first, then y shown first) and x's score.

    Each judgment scores x 1 (x wins), 0.5 (tie) or 0 (y wins); the prompt's score is their mean, so
    a verdict that flips with the order ("A" both times) nets a tie, as in MT-Bench's pairwise mode.
    Unparsed judgments are left out; a prompt with none has no score.
    """
    out = []
    for p in prompts:
        xy, yx = verdicts.get((p["id"], x, y)), verdicts.get((p["id"], y, x))
        wins = [_x_score(v, x) for v in (xy, yx) if v is not None and v.get("winner")]
        score = float(np.mean(wins)) if wins else None
        both = xy is not None and yx is not None and xy.get("winner") and yx.get("winner")
        out.append(
            {
                "prompt_id": p["id"],
                "xy": xy,
                "yx": yx,
                "score": score,
                "outcome": None if score is None else "win" if score > 0.5 else "loss" if score < 0.5 else "tie",
                "flipped": bool(both and xy["winner"] != yx["winner"]),
                "both": bool(both),
            }
        )
    return out


def _x_score(v: dict, x: str) -> float:
    return 0.5 if v["winner"] == "tie" else 1.0 if v["winner"] == x else 0.0


def bootstrap_ci(outcomes: list[str], n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of the win, tie and loss shares and the win rate (ties count half),
    from resampling the prompts with replacement ``n_boot`` times."""
    if not outcomes or n_boot < 1:
        return {}
    codes = np.array([SCORE[o] for o in outcomes])
    idx = np.random.default_rng(seed).integers(0, len(codes), size=(n_boot, len(codes)))
    sample = codes[idx]
    stats = {
        "win": (sample == 1.0).mean(1),
        "tie": (sample == 0.5).mean(1),
        "loss": (sample == 0.0).mean(1),
        "win_rate": sample.mean(1),
    }
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in stats.items()}


def summarize(
    labels: list[str], prompts: list[dict], verdicts: dict[tuple, dict], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """summary.json's body: ``kind`` "judge", a flat ``metrics`` dict (what `eval compare` reads), and
    the per-pair detail."""
    metrics: dict[str, float] = {}
    pairs, per_model = [], {m: [] for m in labels}
    judgments = first_wins = decisive = flips = both = unparsed = retried = 0
    for x, y in itertools.combinations(labels, 2):
        rows = prompt_outcomes(x, y, prompts, verdicts)
        scored = [r for r in rows if r["score"] is not None]
        outs = [r["outcome"] for r in scored]
        n = len(outs)
        shares = {k: (outs.count(k) / n if n else None) for k in ("win", "tie", "loss")}
        win_rate = float(np.mean([r["score"] for r in scored])) if n else None
        ci = bootstrap_ci(outs, n_boot, seed)
        pair_flips, pair_both = sum(r["flipped"] for r in rows), sum(r["both"] for r in rows)
        k = pair_key(x, y)
        for name, val in (
            ("win", shares["win"]),
            ("tie", shares["tie"]),
            ("loss", shares["loss"]),
            ("win_rate", win_rate),
        ):
            if val is not None:
                metrics[f"{name}[{k}]"] = round(val, 4)
        if "win_rate" in ci:
            metrics[f"win_rate_ci_low[{k}]"] = round(ci["win_rate"][0], 4)
            metrics[f"win_rate_ci_high[{k}]"] = round(ci["win_rate"][1], 4)
        if pair_both:
            metrics[f"position_bias_rate[{k}]"] = round(pair_flips / pair_both, 4)
        pairs.append(
            {
                "a": x,
                "b": y,
                "prompts": n,
                "counts": {o: outs.count(o) for o in ("win", "tie", "loss")},
                "shares": shares,
                "win_rate": win_rate,
                "ci95": {c: list(v) for c, v in ci.items()},
                "flipped": pair_flips,
                "judged_both_orders": pair_both,
                "unscored_prompts": len(rows) - n,
            }
        )
        per_model[x] += [r["score"] for r in scored]
        per_model[y] += [1.0 - r["score"] for r in scored]
        flips, both = flips + pair_flips, both + pair_both
        for r in rows:
            for v in (r["xy"], r["yx"]):
                if v is None:
                    continue
                judgments += 1
                unparsed += v.get("winner") is None
                retried += bool(v.get("retried"))
                if v.get("verdict") in ("A", "B"):
                    decisive += 1
                    first_wins += v["verdict"] == "A"
    for m, scores in per_model.items():
        if scores:
            metrics[f"win_rate[{m}]"] = round(float(np.mean(scores)), 4)
    if both:
        metrics["position_bias_rate"] = round(flips / both, 4)
    if decisive:
        metrics["first_position_share"] = round(first_wins / decisive, 4)
    if judgments:
        metrics["unparsed_rate"] = round(unparsed / judgments, 4)
    return {
        "kind": "judge",
        "metrics": metrics,
        "pairs": pairs,
        "judgments": {
            "total": judgments,
            "unparsed": unparsed,
            "retried": retried,
            "decisive": decisive,
            "first_position_wins": first_wins,
            "flipped_pairs": flips,
            "pairs_judged_both_orders": both,
        },
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown(
    summary: dict[str, Any],
    prompts: list[dict],
    answers: dict[tuple, dict],
    verdicts: dict[tuple, dict],
    n_examples: int = 3,
) -> str:
    """report.md: the pair table, per-model win rates, the judge's position bias, and example judgments."""
    m, j = summary["metrics"], summary["judgments"]
    lines = [
        f"# Pairwise judge: {', '.join(summary['models'])}",
        "",
        f"Judge: `{summary['judge']}`; prompts: `{summary['prompts']}` ({summary['num_prompts']}); each pair "
        "judged in both orders. Win rate counts a tie as half; 95% bootstrap intervals over prompts.",
        "",
        "| A vs B | prompts | A wins | ties | B wins | A's win rate (95% CI) | verdict flips with order |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in summary["pairs"]:
        ci = p["ci95"].get("win_rate")
        rate = _pct(p["win_rate"]) + (f" ({_pct(ci[0])} to {_pct(ci[1])})" if ci else "")
        flips = f"{p['flipped']}/{p['judged_both_orders']}" if p["judged_both_orders"] else "-"
        lines.append(
            f"| {p['a']} vs {p['b']} | {p['prompts']} | {p['counts']['win']} | {p['counts']['tie']} | "
            f"{p['counts']['loss']} | {rate} | {flips} |"
        )
    lines += ["", "| model | win rate over all its pairs |", "| --- | --- |"]
    lines += [f"| {name} | {_pct(m.get(f'win_rate[{name}]'))} |" for name in summary["models"]]
    lines += [
        "",
        "## The judge",
        "",
        f"- position-bias rate (the order-corrected verdict differs between the two orders): "
        f"{_pct(m.get('position_bias_rate'))} of {j['pairs_judged_both_orders']} prompt pairs",
        f"- the answer shown first won {_pct(m.get('first_position_share'))} of {j['decisive']} "
        "decisive judgments (50% is unbiased)",
        f"- unparsed verdicts: {j['unparsed']} of {j['total']} judgments ({j['retried']} retried once)",
        "",
    ]
    by_id = {p["id"]: p for p in prompts}
    lines += ["## Examples", ""]
    for p in summary["pairs"]:
        rows = prompt_outcomes(p["a"], p["b"], prompts, verdicts)
        picks = [r for r in rows if r["outcome"] in ("win", "loss")][:n_examples]
        picks += [r for r in rows if r["flipped"]][:1]
        for r in picks:
            lines += _example(by_id[r["prompt_id"]], p["a"], p["b"], r, answers)
    return "\n".join(lines) + "\n"


def _quote(text: str, limit: int) -> list[str]:
    text = text if len(text) <= limit else text[:limit] + " [...]"
    lines = (text or "(empty)").splitlines() or ["(empty)"]
    if sum(line.lstrip().startswith("```") for line in lines) % 2:  # a fence left open (cut, or by the model)
        lines.append("```")  # closed here, or the rest of the report would render as code
    return ["> " + line for line in lines]


def _example(prompt: dict, x: str, y: str, r: dict, answers: dict[tuple, dict]) -> list[str]:
    what = "the verdict flips with the order" if r["flipped"] else f"{x}: {r['outcome']}"
    out = [f"### {prompt['id']} ({x} vs {y}): {what}", ""] + _quote(prompt["prompt"], 600) + [""]
    for name in (x, y):
        ans = answers.get((name, prompt["id"]), {}).get("answer", "")
        out += [f"**{name}**:", ""] + _quote(ans, 1200) + [""]
    for v in (r["xy"], r["yx"]):
        if v is not None:
            out += [f"Judge, {v['first']} shown first: **{v['winner'] or 'unparsed'}**", ""]
            out += _quote(v.get("retry_raw") or v["raw"], 600) + [""]
    return out
