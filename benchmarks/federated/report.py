"""The federated benchmark's table (rows as the --json list), Markdown and plot."""


def float32_bytes(params, cfg) -> int:
    """What every message of the run costs as float32: 4 bytes per parameter, up and down, per client."""
    return 2 * 4 * params * cfg.clients * cfg.rounds


def rows(runs, params, cfg) -> list:
    dense = float32_bytes(params, cfg)
    ref = next((r for r in runs if r.method == "float32"), None)
    ref_acc = ref.totals()["final_accuracy"] if ref else None
    out = []
    for r in runs:
        t = r.totals()
        total = t["bytes_up"] + t["bytes_down"]
        out.append({"method": r.method, "label": r.label, "final_accuracy": round(t["final_accuracy"], 2),
                    "rounds": t["rounds"], "bytes_up": t["bytes_up"], "bytes_down": t["bytes_down"],
                    "bytes_total": total, "ratio_vs_float32": round(dense / total, 1) if total else None,
                    "accuracy_vs_float32": round(t["final_accuracy"] - ref_acc, 2) if ref_acc is not None else None,
                    "seconds": round(r.seconds, 1), "options": r.options})
    return out


def markdown(rows, meta) -> str:
    c = meta["config"]
    lines = [f"{c['clients']} clients (Dirichlet alpha {c['alpha']}), {c['rounds']} rounds x {c['local_steps']} local "
             f"steps of batch {c['batch_size']}, {meta['parameters']} parameters; {meta['seconds']:.0f} s on "
             f"{meta['cpus']} CPUs ({meta['date']}).", "",
             "| method | final accuracy | vs float32 (points) | bytes up | bytes down | total | ratio vs float32 | s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = "-" if r["accuracy_vs_float32"] is None else f"{r['accuracy_vs_float32']:+.2f}"
        ratio = "-" if r["ratio_vs_float32"] is None else f"x{r['ratio_vs_float32']:,.1f}"
        lines.append(f"| {r['label']} | {r['final_accuracy']:.2f} % | {d} | {r['bytes_up']:,} | {r['bytes_down']:,} | "
                     f"{r['bytes_total']:,} | {ratio} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(runs, params, cfg, path):
    """Test accuracy against cumulative bytes (up + down), log scale, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        total, xs, ys = 0, [], []
        for s in r.rounds:
            total += s.bytes_up + s.bytes_down
            if s.accuracy is not None:
                xs.append(total)
                ys.append(100 * s.accuracy)
        ax.plot(xs, ys, marker=".", label=r.label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes (up + down, all clients)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
