#!/usr/bin/env python3
"""plot_trace.py — where each allocation's 2 MiB blocks were over time, from a UMRT_TRACE file.

    UMRT_TRACE=/tmp/t.json ./build/samples/oversubscribe --device-memory 16M
    scripts/plot_trace.py /tmp/t.json -o residency.svg

One row per block (rows grouped by allocation, labelled with its address), time to the right.
A block's colour is where its pages went last: host (blue), device (orange), storage (green:
pushed out by the host budget, or a file's pages dropped); white before its first move. Ticks:
a CPU fault batch on the block (black, top half), an eviction from the device (red, bottom
half). The picture answers "why is this slow": faults on blocks that just left the device,
blocks bouncing between host and device, evictions of what is about to be used.

Plain Python 3, no packages: it writes SVG. With more blocks than --max-rows, neighbouring
blocks share a row (the last move among them wins).
"""
import argparse
import json
import sys
from collections import defaultdict

COLORS = {"host": "#4c78a8", "device": "#f58518", "storage": "#54a24b"}
BLOCK_PAGES = 512


def load(path):
    with open(path) as f:
        text = f.read().strip()
    if not text.endswith("]"):  # a process that did not shut down: the array is still open
        text = text.rstrip(",\n ") + "]"
    data = json.loads(text)
    return data["traceEvents"] if isinstance(data, dict) else data


def moves(events):
    """(ts_us, range, block, where, mark) per batch that moved pages, in time order."""
    out = []
    for e in events:
        a = e.get("args") or {}
        name, r = e.get("name", ""), a.get("range")
        if r is None or "first_page" not in a:
            continue
        block = int(a["first_page"]) // BLOCK_PAGES
        end = e["ts"] + e.get("dur", 0)
        if name in ("batch to device", "batch to host"):
            where = "device" if name == "batch to device" else "host"
            mark = {"fault": "fault", "fault_write": "fault", "evict": "evict"}.get(a.get("why"))
            if a.get("published", 0) > 0 or mark:
                out.append((end, r, block, where if a.get("published", 0) > 0 else None, mark))
        elif name in ("spill to swap", "spill to file") and a.get("left", 0) > 0:
            out.append((end, r, block, "storage", None))
    out.sort(key=lambda m: m[0])
    return out


def svg(moves_, title, max_rows, width=1200):
    if not moves_:
        raise SystemExit("plot_trace.py: no batches in the trace (was UMRT_TRACE set?)")
    t0, t1 = moves_[0][0], moves_[-1][0]
    span = max(t1 - t0, 1.0)
    blocks = defaultdict(set)
    for _, r, b, _, _ in moves_:
        blocks[r].add(b)
    ranges = sorted(blocks, key=lambda r: int(r, 16))
    total = sum(max(blocks[r]) + 1 for r in ranges)
    per_row = max(1, -(-total // max_rows))  # blocks per row
    rows, row_of = [], {}
    for r in ranges:
        for b in range(0, max(blocks[r]) + 1, per_row):
            for k in range(b, b + per_row):
                row_of[(r, k)] = len(rows)
            rows.append((r, b))
    left, top, rh = 150, 40, max(3, min(14, 600 // max(1, len(rows))))
    plot_w = width - left - 20
    height = top + rh * len(rows) + 50
    x = lambda t: left + (t - t0) / span * plot_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="16" font-size="14">{title}</text>']
    state = {}  # row -> (where, since)
    ticks = []  # drawn over the blocks' colours
    def close(row, until):
        where, since = state[row]
        if where:
            out.append(f'<rect x="{x(since):.1f}" y="{top + row * rh}" width="{max(0.5, x(until) - x(since)):.1f}" '
                       f'height="{rh}" fill="{COLORS[where]}"/>')
    for t, r, b, where, mark in moves_:
        row = row_of[(r, b)]
        if where:
            if row in state:
                close(row, t)
            state[row] = (where, t)
        if mark:
            y = top + row * rh + (0 if mark == "fault" else rh / 2)
            ticks.append(f'<rect x="{x(t):.1f}" y="{y:.1f}" width="1.5" height="{rh / 2:.1f}" '
                         f'fill="{"black" if mark == "fault" else "red"}"/>')
    for row in state:
        close(row, t1)
    out.extend(ticks)
    last = None
    for i, (r, b) in enumerate(rows):  # labels: an allocation's address at its first row
        if r != last:
            out.append(f'<text x="4" y="{top + i * rh + rh}" >{r}</text>')
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + i * rh}" y2="{top + i * rh}" stroke="#bbb"/>')
            last = r
    yb = top + rh * len(rows) + 16
    out.append(f'<text x="{left}" y="{yb}">0 ms</text><text x="{left + plot_w - 60}" y="{yb}">{span / 1000:.1f} ms</text>')
    lx = left + 120
    for name, c in list(COLORS.items()) + [("CPU fault", "black"), ("eviction", "red")]:
        out.append(f'<rect x="{lx}" y="{yb + 10}" width="10" height="10" fill="{c}"/><text x="{lx + 14}" y="{yb + 19}">{name}</text>')
        lx += 110
    out.append(f'<text x="{lx + 20}" y="{yb + 19}">{per_row} block(s) of 2 MiB per row, {len(rows)} rows</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", help="a UMRT_TRACE file (Chrome trace JSON)")
    ap.add_argument("-o", "--output", default="residency.svg", help="SVG file to write (default residency.svg)")
    ap.add_argument("--max-rows", type=int, default=200, help="rows at most (default 200)")
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    m = moves(load(a.trace))
    with open(a.output, "w") as f:
        f.write(svg(m, a.title or f"umrt residency: {a.trace}", a.max_rows))
    faults = sum(1 for x in m if x[4] == "fault")
    evicts = sum(1 for x in m if x[4] == "evict")
    print(f"plot_trace.py: {len(m)} batches, {faults} fault batches, {evicts} evictions -> {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
