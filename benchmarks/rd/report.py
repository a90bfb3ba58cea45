"""The benchmark's Markdown tables and plots (metric against bits per parameter, every curve)."""
import os


def _f(v, spec=".4f", none="n/a"):
    return none if v is None else format(v, spec)


def _setting(mode, v):
    return f"qp {v}" if mode.get("axis", "qp") == "qp" else f"{v:.4f} bpp"


def _saving(s, how, bound, unreached="not reached"):
    """'−12.3 %' with the bound the interpolation allows ('≥' / '≤' where a curve ends)."""
    if s is None:
        return unreached if how == "not reached" else "n/a"
    return f"{bound if how == 'at or below' else ''}{s:+.1f} %"


def summary_table(r):
    """Savings per mode at the reference's qp -30 and -36 points: against the point as measured and
    against the reference's own envelope at that metric."""
    qps = list(r["summary"])
    cols = " | ".join(f"bits/param at ref qp {q} metric | saving vs ref qp {q} point | vs ref envelope" for q in qps)
    lines = [f"| mode | {cols} |", "|---|" + "---|---|---|" * len(qps)]
    who = "reference (NNCodec 2.1.3)" if r.get("reference", {}).get("points") else "reference's bytes (nnr default)"
    lines.append(f"| {who} | " + " | ".join(
        f"{_f(row['ref_bpp'])} (metric {_f(row['ref_metric'])}; envelope {_f(row.get('ref_env_bpp'))}) | - | -"
        for row in r["summary"].values()) + " |")
    for key, m in r["modes"].items():
        if "unavailable" in m:
            lines.append(f"| {m['label']} | " + " | ".join("n/a | n/a | n/a" for _ in qps) + " |")
            continue
        cells = []
        for row in r["summary"].values():
            e = row["modes"].get(key)
            if e is None:
                cells.append("n/a | n/a | n/a")
                continue
            bits = _f(e["bpp"], none="not reached")
            if e["how"] == "at or below":
                bits = "≤ " + bits
            cells.append(f"{bits} | {_saving(e['saving_pct'], e['how'], '≥ ')} | "
                         f"{_saving(e.get('saving_env_pct'), e['how'], '≥ ')}")
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overview(results):
    """One row per model and mode that ran: the savings at the reference's qp -30 and -36 points."""
    lines = ["| model | mode | qp -30: bits/param (ref) | saving vs point | vs envelope | qp -36: bits/param (ref) "
             "| saving vs point | vs envelope |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key, m in r["modes"].items():
            if "unavailable" in m:
                continue
            cells = []
            for q in ("-30", "-36"):
                row = r["summary"].get(q)
                e = row and row["modes"].get(key)
                if not e:
                    cells.append("n/a | n/a | n/a")
                    continue
                bits = ("≤ " if e["how"] == "at or below" else "") + _f(e["bpp"], ".3f", "not reached")
                cells.append(f"{bits} ({row['ref_bpp']:.3f}) | {_saving(e['saving_pct'], e['how'], '≥ ')} | "
                             f"{_saving(e.get('saving_env_pct'), e['how'], '≥ ')}")
            lines.append(f"| {r['name']} | {m['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_table(r):
    """Every point: setting, size, metric, encode time, and the reference's bits at the same metric."""
    lines = ["| curve | setting | bytes | bits/param | metric | encode s | ref bits/param at same metric | saving |",
             "|---|---|---|---|---|---|---|---|"]
    ref = r.get("reference", {})
    for p in ref.get("points", []):
        lines.append(f"| reference (NNCodec 2.1.3) | qp {p['setting']} | {p['bytes']} | {p['bpp']:.4f} | "
                     f"{p['metric']:.4f} | {p['encode_s']:.2f} | - | - |")
    for key, m in r["modes"].items():
        for p in m.get("points", []):
            if key == "reference" and p.get("same_as_reference"):
                continue                # the reference's row above, byte for byte
            if "error" in p:
                lines.append(f"| {m['label']} | {_setting(m, p['setting'])} | error: {p['error'][:80]} | | | | | |")
                continue
            extra = ""
            if key == "reference" and "same_as_reference" in p:
                extra = " (same bytes)" if p["same_as_reference"] else " (DIFFERENT bytes)"
            fit = f" (fit {p['fit_pct']:+.2f} %)" if "fit_pct" in p else ""
            rb = _f(p.get("ref_bpp_same_metric"), none="beyond the reference's curve")
            if p.get("ref_how") == "at or below":
                rb = "≤ " + rb
            lines.append(f"| {m['label']}{extra} | {_setting(m, p['setting'])}{fit} | {p['bytes']} | {p['bpp']:.4f} | "
                         f"{p['metric']:.4f} | {p['encode_s']:.2f} | {rb} | "
                         f"{_saving(p.get('saving_pct'), p.get('ref_how'), '≤ ', 'n/a')} |")
    return "\n".join(lines)


def model_section(r, plot=None):
    md = [f"### {r['title']}\n",
          f"Metric: {r['metric_name']} ({'higher' if r['higher_is_better'] else 'lower'} is better); float model "
          f"{r['float_metric']:.4f}. {r['params']} floating-point parameters in {r['tensors']} tensors (integer "
          f"buffers are not coded). Data: {r['data']}.\n"]
    md += [f"{n}\n" for n in r.get("notes", [])]
    ref = r.get("reference", {})
    if "points" in ref:
        same = [p.get("same_as_reference") for p in r["modes"].get("reference", {}).get("points", [])]
        chk = ref.get("decoder_check", {})
        md.append(f"nnr's default streams equal the reference's at {sum(1 for s in same if s)} of {len(same)} QPs "
                  f"(SHA-256); the reference's decoder on its qp {chk.get('qp')} stream gives "
                  f"{'the same tensors as nnr.decode' if chk.get('identical') else 'DIFFERENT tensors or failed'}.\n")
    elif "error" in ref:
        md.append(f"The reference failed: {ref['error'].strip().splitlines()[-1]}\n")
    else:
        md.append("The reference was not run; its columns are nnr's default streams (the reference's bytes).\n")
    if r.get("importance"):
        i = r["importance"]
        md.append(f"Importance: {i['source']} ({i['method']}, one probe per calibration batch, {i['batches']} "
                  f"batches, {i['tensors']} tensors) in {i['seconds']:.1f} s.\n")
    if r.get("kl_importance"):
        i = r["kl_importance"]
        md.append(f"KL importance: {i['source']} (kl, {i['probes']} probes per calibration batch, {i['batches']} "
                  f"batches, {i['tensors']} tensors) in {i['seconds']:.1f} s.\n")
    md += ["Bits at equal metric (the mode's upper envelope interpolated at the reference's metric there; ≥: the "
           "mode already reaches it at its cheapest point; \"vs ref envelope\": against the fewest bits at which "
           "the reference's own curve reaches that metric):\n", summary_table(r), ""]
    na = {}
    for m in r["modes"].values():
        if "unavailable" in m:
            na.setdefault(m["unavailable"], []).append(m["label"])
    for reason, labels in na.items():
        md.append(f"Not run ({reason}): {', '.join(labels)}.\n")
    fits = []
    for m in r["modes"].values():
        f = [p["fit_pct"] for p in m.get("points", []) if "fit_pct" in p]
        if f:
            fits.append(f"{m['label']} {min(f):+.2f} to {max(f):+.2f} %")
    if fits:
        md.append("Budget fit (stream size against the budget, over the mode's budgets): " + "; ".join(fits) + ".\n")
    if plot:
        md.append(f"![{r['title']}]({plot})\n")
    t = r["timings"]
    times = [f"setup {t['setup_s']:.0f} s"]
    if "reference_s" in t:
        times.append(f"reference sweep {t['reference_s']:.0f} s")
    times += [f"{m['label']} {m['seconds']:.0f} s" for m in r["modes"].values() if "seconds" in m]
    md += [f"Wall time {t['total_s']:.0f} s ({', '.join(times)}).\n",
           "All points (nnr's default streams that equal the reference's are its rows):\n", points_table(r), ""]
    return "\n".join(md)


def plot(r, path):
    """metric against bits/param, one line per curve, the reference's qp -30 / -36 points marked; the
    right panel zooms in on the metrics of those points and of the float model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ref = r.get("reference", {}).get("points")
    f = r["float_metric"]
    for i, ax in enumerate(axes):
        if ref:
            ax.plot([p["bpp"] for p in ref], [p["metric"] for p in ref], "k-o", lw=2.5, ms=4,
                    label="reference (NNCodec 2.1.3) = nnr default")
            for p in ref:
                if str(p["setting"]) in r["summary"]:
                    ax.annotate(f"qp {p['setting']}", (p["bpp"], p["metric"]), textcoords="offset points",
                                xytext=(4, -12), fontsize=8)
        for key, m in r["modes"].items():
            pts = sorted((p["bpp"], p["metric"]) for p in m.get("points", []) if "metric" in p)
            if pts and not (key == "reference" and ref):
                ax.plot(*zip(*pts), "-o", ms=3, label=m["label"])
        ax.axhline(f, color="grey", ls=":", lw=1, label="float model")
        ax.set_xlabel("bits per parameter")
        ax.set_ylabel(r["metric_name"])
        if not r["higher_is_better"] and i == 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if i == 1:
            marks = [row["ref_metric"] for row in r["summary"].values()] + [f]
            lo, hi = min(marks), max(marks)
            pad = 0.5 * (hi - lo) + 0.005 * abs(f)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_title("around the reference's qp -30 / -36 points and the float model")
        else:
            ax.set_title(r["title"])
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
