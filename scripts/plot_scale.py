#!/usr/bin/env python3
"""plot_scale.py — draw the JSON that `umrt-bench scale --json FILE` writes (issue 9).

    scripts/plot_scale.py SCALE.json [-o /tmp/scale.png]

One PNG with four panels:
  * umrt_malloc + umrt_free of one more allocation against the live allocations held (log x):
    pair p50 (p90 as the error bar's top), malloc p50, free p50 and the mean time to create one
    live allocation; VmRSS growth per live allocation on the right axis; a level that was not
    reached (limit or time budget) is drawn hollow, with the limit as a vertical line;
  * umrt_malloc(size) + umrt_free against the reserved size (log x): malloc, free and the pair
    (medians, min..max bars), the one-page touch, and the RSS growth after malloc and after the
    touch on the right axis; the 10 ms target as a line;
  * fault-seq against reader threads: umrt / kernel first touch at the same thread count, with
    both throughputs on the right axis, the 1.2x target (2 readers) as a line;
  * cold and warm host->device prefetch as ratios to memcpy, with their targets.

Needs matplotlib: `pip install matplotlib` (or Debian: `apt-get install python3-matplotlib`).
"""
import argparse
import json
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(
        "plot_scale.py needs matplotlib: install it with `pip install matplotlib` "
        "(or on Debian/Ubuntu `apt-get install python3-matplotlib`), then run again."
    )


def human_bytes(b):
    for unit, div in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= div and b % div == 0:
            return f"{b // div}{unit}"
    return str(b)


def human_count(n):
    for unit, div in (("M", 1000000), ("K", 1000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def us(ns):
    return ns / 1e3


def panel_live(ax, live):
    lv = [l for l in live.get("levels", []) if "pair_ns" in l and l["pair_ns"].get("n", 0) > 0]
    if not lv:
        ax.text(0.5, 0.5, "no live-allocation levels measured", ha="center", transform=ax.transAxes)
        return
    xs = [max(1, l["live"]) for l in lv]
    full = [l["reached"] for l in lv]

    def series(key, stat, label, color, marker, bar_top=None):
        ys = [us(l[key][stat]) for l in lv]
        if bar_top:
            tops = [us(l[key][bar_top]) - y for l, y in zip(lv, ys)]
            ax.errorbar(xs, ys, yerr=[[0] * len(ys), tops], color=color, capsize=3, linestyle="-",
                        label=label)
        else:
            ax.plot(xs, ys, color=color, linestyle="-", label=label)
        for x, y, f in zip(xs, ys, full):
            ax.plot([x], [y], marker=marker, color=color, markerfacecolor=color if f else "white")

    series("pair_ns", "median", "malloc+free pair p50 (bar: p90)", "C0", "o", bar_top="p90")
    series("malloc_ns", "median", "umrt_malloc p50", "C1", "s")
    series("free_ns", "median", "umrt_free p50", "C2", "^")
    cx = [max(1, l["live"]) for l in lv if l.get("created", 0) > 0]
    cy = [us(l["create_ns_per_alloc"]) for l in lv if l.get("created", 0) > 0]
    if cx:
        ax.plot(cx, cy, color="C4", linestyle=":", marker="x", label="creating the level: mean per allocation")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([human_count(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"live {human_bytes(live.get('alloc_bytes', 4096))} allocations held (log)")
    ax.set_ylabel("µs")
    lim = live.get("limit")
    if lim:
        ax.axvline(max(1, lim["live_allocations"]), color="red", linestyle="--",
                   label=f"limit: {lim['status']} at {lim['live_allocations']}")
    g = live.get("growth")
    gtxt = f" — pair {g['pair_p50']}, {human_count(g['to_live'])} vs {human_count(g['from_live'])}" if g else ""
    ax.set_title(f"malloc+free of one more allocation against live allocations{gtxt}", fontsize=9)
    ax2 = ax.twinx()
    # from 100 live up: below that the heap's growth steps dominate
    rx = [x for x, l in zip(xs, lv) if l["live"] >= 100]
    ry = [l["vmrss_growth_kib"] * 1024 / l["live"] for l in lv if l["live"] >= 100]
    ax2.plot(rx, ry, color="grey", linestyle="--", marker=".", label="VmRSS growth per live allocation (B, >= 100 live)")
    ax2.set_ylabel("bytes of VmRSS per live allocation", color="grey")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    if not all(full):
        ax.text(0.99, 0.02, "hollow: level not reached (" + (live.get("stopped") or "")[:70] + ")",
                transform=ax.transAxes, ha="right", fontsize=6)
    ax.grid(alpha=0.3, which="both")


def panel_sizes(ax, rs):
    pts = [p for p in rs.get("points", []) if not p.get("failed")]
    failed = [p for p in rs.get("points", []) if p.get("failed")]
    if not pts:
        ax.text(0.5, 0.5, "no reserved size measured", ha="center", transform=ax.transAxes)
        return
    xs = [p["bytes"] for p in pts]
    for key, label, color, marker in (("pair_ns", "malloc+free", "C0", "o"), ("malloc_ns", "umrt_malloc", "C1", "s"),
                                      ("free_ns", "umrt_free", "C2", "^"),
                                      ("touch_one_page_ns", "first touch of one middle page", "C4", "x")):
        ys = [us(p[key]["median"]) for p in pts]
        lo = [us(p[key]["median"] - p[key]["min"]) for p in pts]
        hi = [us(p[key]["max"] - p[key]["median"]) for p in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=label)
    ax.axhline(10000, color="red", linestyle="--", label="target: malloc+free(1 TiB) < 10 ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([human_bytes(x) for x in xs])
    ax.set_xlabel("reserved size (log)")
    ax.set_ylabel("µs (log)")
    g = rs.get("growth")
    gtxt = f" — pair {g['pair']}" if g else ""
    ax.set_title(f"umrt_malloc(size) + umrt_free against the reserved size{gtxt}", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(xs, [p["vmrss_growth_kib"]["median"] for p in pts], color="grey", linestyle="--", marker=".",
             label="VmRSS growth after malloc (KiB)")
    ax2.plot(xs, [p["vmrss_growth_after_touch_kib"]["median"] for p in pts], color="black", linestyle=":",
             marker=".", label="VmRSS growth after one touch (KiB)")
    ax2.axhline(1024, color="grey", linestyle="-.", linewidth=0.8, label="target: < 1 MiB RSS growth")
    ax2.set_ylabel("KiB", color="grey")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    if failed:
        ax.text(0.99, 0.02, "failed: " + ", ".join(human_bytes(p["bytes"]) for p in failed), transform=ax.transAxes,
                ha="right", fontsize=7, color="red")
    ax.grid(alpha=0.3, which="both")


def panel_faults(ax, fs):
    pts = fs.get("points", [])
    if not pts:
        ax.text(0.5, 0.5, "no fault-seq figures", ha="center", transform=ax.transAxes)
        return
    xs = [p["threads"] for p in pts]
    ax.plot(xs, [p["ratio_umrt_over_kernel"] for p in pts], color="C0", marker="o", linewidth=2,
            label="umrt / kernel first touch, same threads")
    ax.axhline(1.2, color="red", linestyle="--", label="target (2 readers): >= 1.2x")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"reader threads ({fs.get('usable_cpus', '?')} usable CPUs)")
    ax.set_ylabel("ratio")
    ax.set_title(f"fault-seq ({human_bytes(fs.get('fault_seq', {}).get('bytes', 0))}) against reader threads",
                 fontsize=9)
    ax2 = ax.twinx()
    for key, label, color in (("umrt_gbps", "umrt GB/s", "C1"), ("kernel_gbps", "kernel first touch GB/s", "C2")):
        ys = [p[key]["median"] for p in pts]
        lo = [p[key]["median"] - p[key]["min"] for p in pts]
        hi = [p[key]["max"] - p[key]["median"] for p in pts]
        ax2.errorbar(xs, ys, yerr=[lo, hi], color=color, linestyle="--", marker=".", capsize=2, label=label)
    ax2.set_ylabel("GB/s")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)


def panel_prefetch(ax, pf):
    if not pf or pf.get("ratio_cold_vs_memcpy") is None:
        ax.text(0.5, 0.5, "prefetch not measured" + (f": {pf.get('error')}" if pf else ""), ha="center",
                transform=ax.transAxes)
        return
    names = ["cold h→d\n(first prefetch)", "warm h→d\n(again)"]
    ratios = [pf["ratio_cold_vs_memcpy"], pf["ratio_warm_vs_memcpy"]]
    wants = [0.6, 0.8]
    bars = ax.bar([0, 1], ratios, 0.5, color=["C0", "C1"])
    for x, r, w, b in zip([0, 1], ratios, wants, bars):
        ax.hlines(w, x - 0.35, x + 0.35, color="red", linestyle="--")
        ax.text(x, r, f"{r:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(x + 0.36, w, f"target {w}", va="center", fontsize=7, color="red")
    ax.set_xticks([0, 1])
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, max(1.1, max(ratios) * 1.2))
    ax.set_ylabel("GB/s / memcpy 1 thread (same size)")
    mc = pf["memcpy_1thread_gbps"]["median"]
    ax.set_title(f"prefetch host→device of {human_bytes(pf['bytes'])} (device memory "
                 f"{human_bytes(pf['device_memory'])}) against memcpy {mc:.2f} GB/s", fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="file written by umrt-bench scale --json")
    ap.add_argument("-o", "--output", default="scale.png", help="PNG to write")
    a = ap.parse_args()
    with open(a.json) as f:
        d = json.load(f)
    s = d.get("scenarios", {}).get("scale")
    if not s:
        sys.exit(f"plot_scale.py: {a.json} has no scale scenario (run `umrt-bench scale --json FILE`)")
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    panel_live(axes[0][0], s.get("live_allocations", {}))
    panel_sizes(axes[0][1], s.get("reserved_size", {}))
    panel_faults(axes[1][0], s.get("fault_seq_threads", {}))
    panel_prefetch(axes[1][1], s.get("prefetch_cold_warm", {}))
    m = d.get("machine", {})
    tg = [t for t in d.get("targets", []) if t.get("issue") == 9]
    npass = sum(1 for t in tg if t.get("pass") is True)
    nmiss = sum(1 for t in tg if t.get("pass") is False)
    fig.suptitle(f"umrt-bench scale, backend {d.get('backend')} — {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                 f"{m.get('kernel', '?')} — {d.get('date', '')}\nissue-9 targets: {npass} PASS, {nmiss} MISS, "
                 f"{len(tg) - npass - nmiss} not measured", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(a.output, dpi=90)
    print(f"plot_scale.py: wrote {a.output}")


if __name__ == "__main__":
    main()
