"""Tables, plots and the HTML report of closed-loop runs and sweeps."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from patchsim.closedloop.stats import RATE_OUTCOMES, episode_row, summarize_variant
from patchsim.runs import atomic_path, write_text

def headline_outcome(outcomes: list[dict[str, Any]]) -> str:
    """The outcome a variant is judged by: ``stopped_before_line`` where the road has a stop line,
    else ``lane_departure``."""
    return "stopped_before_line" if outcomes and outcomes[0].get("stopped_before_line") is not None \
        else "lane_departure"


def by_variant(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Summary of each variant (``clean`` first, then the patches in order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["job"]["variant"], []).append(r["outcome"])
    return {v: summarize_variant(outs) for v, outs in groups.items()}


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_runs(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Detection confidence against distance (sign scenarios) and lateral offset against time,
    each variant in its own colour, clean and patched overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colours = {}
    palette = ["tab:blue", "tab:red", "tab:orange", "tab:purple", "tab:green", "tab:brown"]
    for r in results:
        colours.setdefault(r["job"]["variant"], palette[len(colours) % len(palette)])
    if any("stop_score" in f for r in results for f in r.get("frames", [])[:1]):
        fig, ax = plt.subplots(figsize=(7, 3.6))
        seen = set()
        for r in results:
            v = r["job"]["variant"]
            pts = [(f["sign_distance_m"], f["stop_score"]) for f in r["frames"] if f.get("sign_in_view")]
            if not pts:
                continue
            d, s = zip(*pts)
            ax.plot(d, s, color=colours[v], alpha=0.6, lw=1, label=None if v in seen else v)
            seen.add(v)
        thr = results[0]["job"]["planner"]
        thr = dict(thr).get("min_score", 0.25) if thr else 0.25
        ax.axhline(thr, color="k", ls="--", lw=0.8, label=f"planner threshold {thr:g}")
        ax.set_xlabel("camera to sign (m)")
        ax.set_ylabel("stop-sign score")
        ax.invert_xaxis()
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        ax.set_title("Detection confidence during the approach")
        paths.append(save_figure(fig, out_dir / "detection_vs_distance.png"))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    seen = set()
    for r in results:
        v = r["job"]["variant"]
        t = [f["t_s"] for f in r["frames"]]
        off = [f["lateral_offset_m"] for f in r["frames"]]
        ax.plot(t, off, color=colours[v], alpha=0.6, lw=1, label=None if v in seen else v)
        seen.add(v)
    if results and results[0]["frames"]:
        from patchsim.closedloop.outcomes import departure_limit_m

        lim = departure_limit_m(results[0]["frames"][0]["lane_width_m"])
        for y in (lim, -lim):
            ax.axhline(y, color="k", ls="--", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("lateral offset (m, + left)")
    ax.legend(fontsize=8)
    ax.set_title("Lateral offset from the lane centre (dashed: a wheel leaves the lane)")
    paths.append(save_figure(fig, out_dir / "lateral_offset_vs_time.png"))
    return paths


def heatmaps(rows: list[dict[str, Any]], keys: list[str], outcome: str, out_dir: Path) -> list[Path]:
    """Outcome rate over the first two swept keys, one panel per variant (numeric keys are binned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if len(keys) < 2:
        return []
    kx, ky = keys[0], keys[1]
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    def axis(key: str) -> tuple[list[str], Any]:
        vals = [r[f"cond.{key}"] for r in rows]
        if all(isinstance(v, (int, float)) for v in vals) and len(set(vals)) > 5:
            edges = np.quantile(vals, np.linspace(0, 1, 5))
            edges[-1] += 1e-9
            labels = [f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(4)]
            return labels, lambda v: int(np.clip(np.searchsorted(edges, v, side="right") - 1, 0, 3))
        labels = [str(v) for v in dict.fromkeys(vals)]
        return labels, lambda v: labels.index(str(v))

    xl, xf = axis(kx)
    yl, yf = axis(ky)
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        k = np.zeros((len(yl), len(xl)))
        n = np.zeros_like(k)
        for r in rows:
            if r["variant"] != variant or r.get(outcome) is None:
                continue
            i, j = yf(r[f"cond.{ky}"]), xf(r[f"cond.{kx}"])
            k[i, j] += bool(r[outcome])
            n[i, j] += 1
        with np.errstate(invalid="ignore"):
            im = ax.imshow(np.where(n > 0, k / np.maximum(n, 1), np.nan), vmin=0, vmax=1, cmap="RdYlGn"
                           if outcome == "stopped_before_line" else "RdYlGn_r", aspect="auto")
        for i in range(len(yl)):
            for j in range(len(xl)):
                if n[i, j]:
                    ax.text(j, i, f"{int(k[i, j])}/{int(n[i, j])}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(xl)), xl, rotation=30, fontsize=7)
        ax.set_yticks(range(len(yl)), yl, fontsize=7)
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
        ax.set_title(f"{variant}: {outcome}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return [save_figure(fig, out_dir / f"heatmap_{outcome}.png")]


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    import polars as pl

    with atomic_path(path) as tmp:
        pl.DataFrame(rows, infer_schema_length=None).write_parquet(tmp)
    return path


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _fmt_rate(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return f"{r['rate']:.0%} ({r['k']}/{r['n']}; 95% CI {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%})"


def comparison_table(variants: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows of the clean-vs-patched table: outcome, then one column per variant."""
    names = list(variants)
    rows = [["outcome", *names]]
    for key in RATE_OUTCOMES:
        if any(key in v for v in variants.values()):
            rows.append([key + " rate", *[_fmt_rate(variants[n].get(key)) for n in names]])
    for key in ("mean_stop_line_overrun_m", "mean_first_detection_m", "mean_stop_confirmed_m", "never_detected",
                "mean_detection_rate", "mean_max_lateral_offset_m", "mean_time_to_departure_s"):
        if any(key in v for v in variants.values()):
            rows.append([key, *["-" if variants[n].get(key) is None else f"{variants[n][key]:g}" for n in names]])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_html(path: Path, title: str, intro: str, table: list[list[str]], images: list[Path],
               extra: str = "") -> Path:
    """One self-contained HTML page (images embedded)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table[1:])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><table><tr>{head}</tr>{body}</table>{extra}
{''.join(f'<h3>{html.escape(p.stem)}</h3>' + _img_tag(p) for p in images)}
<p><small>patchsim is for testing perception systems you own, in simulation and on closed courses.</small></p>
</body></html>"""
    return write_text(path, page)


def write_sweep_outputs(out: Path, spec, results: list[dict[str, Any]], report: bool = True) -> dict[str, Any]:
    """``episodes.parquet``, heatmaps and ``report.html`` of a finished sweep; returns its summary."""
    keys = list(spec.grid) + list(spec.random)
    rows = [episode_row(r, keys) for r in results]
    write_parquet(rows, out / "episodes.parquet")
    variants = by_variant(results)
    headline = headline_outcome([r["outcome"] for r in results])
    summary = {"name": spec.name, "scenario": spec.scenario, "episodes": len(results), "headline": headline,
               "conditions": len({r["job"]["condition"] for r in results}), "varied_keys": keys,
               "variants": variants}
    if report:
        plots_dir = out / "plots"
        plots_dir.mkdir(exist_ok=True)
        images = heatmaps(rows, keys, headline, plots_dir)
        images += plot_runs(results, plots_dir)
        table = comparison_table(variants)
        intro = (f"Scenario {spec.scenario}; {summary['conditions']} conditions x {spec.seeds} seeds; "
                 f"varied: {', '.join(keys) or 'nothing'}; each seed driven clean and with each patch.")
        write_html(out / "report.html", f"Sweep {spec.name}", intro, table, images)
    return summary

