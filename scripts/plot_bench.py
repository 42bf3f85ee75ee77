#!/usr/bin/env python3
"""plot_bench.py — draw the JSON that `umrt-bench ... --json FILE` writes.

    scripts/plot_bench.py BENCH.json [-o docs/bench-sim.png]

One PNG with up to five panels, each from whatever scenarios the JSON holds:
  * prefetch throughput against the span per umrt_prefetch call (batch-sweep), both ways, with
    the full-range prefetch and its baselines (memcpy, the bare UFFDIO_COPY floor; on cuda raw
    pinned cudaMemcpyAsync and cudaMallocManaged + cudaMemPrefetchAsync) drawn as lines;
  * fault-seq / fault-rand throughput per variant (umrt, kernel first touch, bare handlers; on
    cuda cudaMallocManaged) and thread count;
  * the oversubscribed STREAM triad against working set / device memory (on cuda with the
    cudaMallocManaged peers, with and without prefetch);
  * single-page fault latency (p50 / p99) of umrt, the bare handler and the kernel;
  * the share of each protocol step (collect, unmap, copy, finalize) in umrt's batches, per
    scenario and direction, from the "steps" records (JSON written before they existed has
    none: the panel is then left out).
The `scale` scenario (issue 9) has its own script, scripts/plot_scale.py.
Error bars are the min..max of the measured repetitions; points are medians. A baseline that
failed (recorded with "failed": true) is left out of the picture.

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
    if not sweep and not pf:
        ax.set_visible(False)
        return
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
        n = pf.get("baseline_threads", pf["copy_engines"])
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
        gpu_lines = (
            ("cuda_pinned_memcpy", "raw cudaMemcpyAsync, pinned", "C5"),
            ("cuda_managed_prefetch", "cudaMallocManaged + cudaMemPrefetchAsync", "C6"),
        )
        for key, label, color in gpu_lines:
            g = pf.get(key)
            if not g or g.get("failed"):
                continue
            ax.axhline(med(g["h2d_gbps"]), color=color, linestyle="--", label=f"{label} h→d")
            ax.axhline(med(g["d2h_gbps"]), color=color, linestyle=":", label=f"{label} d→h")
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
            if k in vs and "gbps" in vs[k]:
                xs.append(g + (i - (len(variants) - 1) / 2) * width)
                ys.append(med(vs[k]["gbps"]))
                e = err(vs[k]["gbps"])
                es[0] += e[0]
                es[1] += e[1]
        label = {"umrt": "umrt", "kernel": "kernel anon first touch (write)",
                 "cuda_managed": "cudaMallocManaged, pages on the GPU"}.get(
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
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"umrt, {label}")
    peers = (("cuda_managed_prefetch", "cudaMallocManaged + prefetch per chunk"),
             ("cuda_managed_no_prefetch", "cudaMallocManaged, no prefetch"))
    for key, label in peers:
        got = [(p["oversubscription"], p["peers"][key]) for p in pts
               if key in p.get("peers", {}) and "gbps" in p["peers"][key]]
        if not got:
            continue
        ax.errorbar([x for x, _ in got], [med(f["gbps"]) for _, f in got],
                    yerr=[[med(f["gbps"]) - f["gbps"]["min"] for _, f in got],
                          [f["gbps"]["max"] - med(f["gbps"]) for _, f in got]],
                    marker="s", linestyle="--", capsize=3, label=f"{label}, end to end")
    ax.axvline(1.0, color="grey", linestyle=":", label="working set = device memory")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f"working set / device memory ({human(s['device_memory'])})")
    ax.set_ylabel("GB/s (log)")
    runner = "GPU kernel" if s.get("triad") == "gpu kernel" else f"{s['threads']} threads"
    ax.set_title(f"STREAM triad, {human(s['chunk_bytes_per_array'])} chunks per array, {runner}")
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


STEP_KEYS = (("collect_ns", "collect (+ lock)"), ("unmap_ns", "unmap"), ("copy_ns", "copy"),
             ("finalize_ns", "finalize"))


def step_records(sc):
    """(label, steps) for every umrt figure that has per-step times with at least one batch."""
    out = []

    def add(label, st):
        if st and st.get("batches", 0) > 0 and sum(st.get(k, 0) for k, _ in STEP_KEYS) > 0:
            out.append((label, st))

    pf = sc.get("prefetch")
    if pf and "steps" in pf:
        add("prefetch h→d", pf["steps"].get("h2d"))
        add("prefetch d→h", pf["steps"].get("d2h"))
    for name in ("fault-seq", "fault-rand"):
        s = sc.get(name)
        if not s:
            continue
        for th, vs in s["by_threads"].items():
            add(f"{name} {th} thr", vs.get("umrt", {}).get("steps"))
    fl = sc.get("fault-latency")
    if fl and "steps" in fl:
        add("fault-latency free", fl["steps"].get("free_running"))
        add("fault-latency 1 CPU", fl["steps"].get("one_cpu"))
    ov = sc.get("oversub")
    if ov and "points" in ov:
        for p in ov["points"]:
            add(f"oversub {p['oversubscription']:g}×", p.get("steps"))
    sw = sc.get("batch-sweep")
    if sw:
        for p in sw["points"]:
            st = p.get("steps", {})
            add(f"sweep {human(p['span_bytes'])} h→d", st.get("h2d"))
            add(f"sweep {human(p['span_bytes'])} d→h", st.get("d2h"))
    return out


def panel_steps(ax, recs):
    xs = range(len(recs))
    bottom = [0.0] * len(recs)
    for i, (key, label) in enumerate(STEP_KEYS):
        share = []
        for _, st in recs:
            total = sum(st.get(k, 0) for k, _ in STEP_KEYS)
            share.append(100.0 * st.get(key, 0) / total)
        ax.bar(xs, share, 0.7, bottom=bottom, color=f"C{i}", label=label)
        bottom = [b + v for b, v in zip(bottom, share)]
    for x, (_, st) in zip(xs, recs):
        us = st.get("ns_per_batch", 0) / 1e3
        txt = f"{us / 1e3:.1f} ms" if us >= 1000 else f"{us:.1f} µs"
        ax.text(x, 102, f"{txt}, {st.get('pages_per_batch', 0):.0f} pg", ha="center", va="bottom",
                fontsize=6, rotation=90)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([label for label, _ in recs], fontsize=7, rotation=50, ha="right",
                       rotation_mode="anchor")
    ax.set_xlim(-0.6, len(recs) - 0.4)
    ax.set_ylim(0, 145)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel("% of umrt's summed step time")
    ax.set_title("umrt protocol steps per batch (umrt_stats over the measured reps; "
                 "above each bar: step time per batch, pages per batch)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="file written by umrt-bench --json")
    ap.add_argument("-o", "--output", default="docs/bench-sim.png", help="PNG to write")
    a = ap.parse_args()
    with open(a.json) as f:
        d = json.load(f)
    sc = d.get("scenarios", {})
    if "scale" in sc:
        if len(sc) == 1:
            sys.exit(f"plot_bench.py: {a.json} holds only the scale scenario (issue 9), which "
                     f"scripts/plot_scale.py draws: scripts/plot_scale.py {a.json} -o OUT.png")
        print("plot_bench.py: the scale scenario is drawn by scripts/plot_scale.py; left out here",
              file=sys.stderr)
    recs = step_records(sc)
    if recs:
        fig = plt.figure(figsize=(15, 16))
        gs = fig.add_gridspec(3, 2, height_ratios=[1, 1, 0.75])
        axes = [[fig.add_subplot(gs[r, c]) for c in range(2)] for r in range(2)]
        panel_steps(fig.add_subplot(gs[2, :]), recs)
    else:
        fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    panel_prefetch(axes[0][0], sc)
    panel_faults(axes[0][1], sc)
    panel_oversub(axes[1][0], sc)
    panel_latency(axes[1][1], sc)
    m = d.get("machine", {})
    gpu = m.get("gpu")
    gpu_txt = f", GPU {gpu['name']}" if isinstance(gpu, dict) and "name" in gpu else ""
    fig.suptitle(f"umrt-bench, backend {d.get('backend')} — {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                 f"{m.get('kernel', '?')}{gpu_txt} — {d.get('date', '')}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(a.output, dpi=90)
    print(f"plot_bench.py: wrote {a.output}")


if __name__ == "__main__":
    main()
