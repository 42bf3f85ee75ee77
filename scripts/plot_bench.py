#!/usr/bin/env python3
"""plot_bench.py — draw the JSON that `umrt-bench ... --json FILE` writes.

    scripts/plot_bench.py BENCH.json [-o docs/bench-sim.png]

One PNG with up to four panels, each from whatever scenarios the JSON holds:
  * prefetch throughput against the span per umrt_prefetch call (batch-sweep), both ways, with
    the full-range prefetch and its baselines (memcpy, the bare UFFDIO_COPY floor) drawn as lines;
  * fault-seq / fault-rand throughput per variant (umrt, kernel first touch, bare handlers) and
    thread count;
  * the oversubscribed STREAM triad against working set / device memory;
  * single-page fault latency (p50 / p99) of umrt, the bare handler and the kernel.
Error bars are the min..max of the measured repetitions; points are medians.

Needs matplotlib: `pip install matplotlib` (or Debian: `apt-get install python3-matplotlib`).
"""
import argparse
import json
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except ImportError:
    sys.exit(
        "plot_bench.py needs matplotlib: install it with `pip install matplotlib` "
        "(or on Debian/Ubuntu `apt-get install python3-matplotlib`), then run again."
    )


def med(x):
    return x["median"]


def err(x):
    return [[x["median"] - x["min"]], [x["max"] - x["median"]]]


def human(b):
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= div and b % div == 0:
            return f"{b // div}{unit}"
    return str(b)


def panel_prefetch(ax, sc):
    sweep, pf = sc.get("batch-sweep"), sc.get("prefetch")
    if sweep:
        xs = [p["span_bytes"] for p in sweep["points"]]
        for key, label, color in (("h2d_gbps", "umrt h→d", "C0"), ("d2h_gbps", "umrt d→h", "C1")):
            ys = [p[key]["median"] for p in sweep["points"]]
            lo = [p[key]["median"] - p[key]["min"] for p in sweep["points"]]
            hi = [p[key]["max"] - p[key]["median"] for p in sweep["points"]]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", color=color, capsize=3,
                        label=f"{label}, batch-sweep ({human(sweep['total_bytes'])} total)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([human(x) for x in xs], rotation=45)
    if pf:
        n = pf["copy_engines"]
        lines = (
            ("memcpy_1thread_gbps", "memcpy, 1 thread (h→d limit)", "C2", "--"),
            ("memcpy_nthreads_gbps", f"memcpy, {n} threads", "C2", ":"),
            ("memcpy_dontneed_1thread_gbps", "memcpy + MADV_DONTNEED source, 1 thread", "C4", "--"),
            ("uffd_copy_floor_nthreads_gbps", f"UFFDIO_COPY floor, {n} threads (d→h)", "C3", "--"),
            ("uffd_copy_floor_1thread_gbps", "UFFDIO_COPY floor, 1 thread", "C3", ":"),
        )
        for key, label, color, style in lines:
            if key not in pf:
                continue
            ax.axhline(med(pf[key]), color=color, linestyle=style, label=label)
        for key, label, color in (("umrt_h2d_gbps", "h→d", "C0"), ("umrt_d2h_gbps", "d→h", "C1")):
            ax.axhline(med(pf[key]), color=color, linestyle="-.", alpha=0.7,
                       label=f"umrt {label}, one call over {human(pf['bytes'])}")
    ax.set_xlabel("bytes per umrt_prefetch call")
    ax.set_ylabel("GB/s")
    ax.set_title("prefetch throughput against batch size")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def panel_faults(ax, sc):
    groups = []
    for name in ("fault-seq", "fault-rand"):
        s = sc.get(name)
        if not s:
            continue
        for th, vs in s["by_threads"].items():
            groups.append((f"{name}\n{th} thr", vs))
    if not groups:
        ax.set_visible(False)
        return
    variants = []
    for _, vs in groups:
        for k, v in vs.items():
            if isinstance(v, dict) and "gbps" in v and k not in variants:
                variants.append(k)
    order = {"umrt": 0, "kernel": 1}
    variants.sort(key=lambda k: (order.get(k, 2), k))
    width = 0.8 / len(variants)
    for i, k in enumerate(variants):
        xs, ys, es = [], [], [[], []]
        for g, (_, vs) in enumerate(groups):
            if k in vs:
                xs.append(g + (i - (len(variants) - 1) / 2) * width)
                ys.append(med(vs[k]["gbps"]))
                e = err(vs[k]["gbps"])
                es[0] += e[0]
                es[1] += e[1]
        label = {"umrt": "umrt", "kernel": "kernel anon first touch (write)"}.get(
            k, k.replace("bare_uffd_w", "bare uffd handler, window ") + " pages")
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g for g, _ in groups], fontsize=8)
    ax.set_ylabel("GB/s (one byte read per 4 KiB page)")
    ax.set_title("CPU faults on device-resident data")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the bars
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)


def panel_oversub(ax, sc):
    s = sc.get("oversub")
    if not s:
        ax.set_visible(False)
        return
    pts = s["points"]
    xs = [p["oversubscription"] for p in pts]
    for key, label in (("gbps", "end to end (prefetch + triad)"), ("kernel_only_gbps", "triad only")):
        ys = [p[key]["median"] for p in pts]
        lo = [p[key]["median"] - p[key]["min"] for p in pts]
        hi = [p[key]["max"] - p[key]["median"] for p in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.axvline(1.0, color="grey", linestyle=":", label="working set = device memory")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f"working set / device memory ({human(s['device_memory'])})")
    ax.set_ylabel("GB/s (log)")
    ax.set_title(f"STREAM triad, {human(s['chunk_bytes_per_array'])} chunks per array, {s['threads']} threads")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def panel_latency(ax, sc):
    s = sc.get("fault-latency")
    if not s:
        ax.set_visible(False)
        return
    names = [("umrt", "umrt\nfree running"), ("bare_uffd_w1", "bare uffd handler\nfree running"),
             ("umrt_one_cpu", "umrt\none CPU"), ("bare_uffd_w1_one_cpu", "bare uffd handler\none CPU"),
             ("kernel_first_touch_write", "kernel first touch\n(reference)")]
    names = [n for n in names if n[0] in s]
    xs = range(len(names))
    p50 = [s[k]["p50_us"] for k, _ in names]
    p99 = [s[k]["p99_us"] for k, _ in names]
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    for x, a, b in zip(xs, p50, p99):
        ax.text(x - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
        ax.text(x + 0.2, b, f"{b:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([n for _, n in names], fontsize=8)
    ax.set_ylabel("µs per single-page fault")
    ax.set_title(f"single-page fault latency, device→host, window 1 ({s['faults_per_rep']} faults per rep)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="file written by umrt-bench --json")
    ap.add_argument("-o", "--output", default="docs/bench-sim.png", help="PNG to write")
    a = ap.parse_args()
    with open(a.json) as f:
        d = json.load(f)
    sc = d.get("scenarios", {})
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    panel_prefetch(axes[0][0], sc)
    panel_faults(axes[0][1], sc)
    panel_oversub(axes[1][0], sc)
    panel_latency(axes[1][1], sc)
    m = d.get("machine", {})
    fig.suptitle(f"umrt-bench, backend {d.get('backend')} — {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                 f"{m.get('kernel', '?')} — {d.get('date', '')}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(a.output, dpi=90)
    print(f"plot_bench.py: wrote {a.output}")


if __name__ == "__main__":
    main()
