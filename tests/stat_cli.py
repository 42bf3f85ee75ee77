#!/usr/bin/env python3
"""stat_cli.py UMRT_STAT OVERSUBSCRIBE — umrt-stat against a running sample (ctest stat.cli).

Starts `oversubscribe --passes` in the background (three 16 MiB arrays over 16 MiB of sim device
memory: evictions and refetches all the time), waits until `umrt-stat` lists it, checks the
`--json` snapshot's fields and the per-interval lines of `umrt-stat PID`, then kills the sample
with SIGKILL and checks that its segment, left behind, is reported stale (exit status 1) and not
listed. Also: a process not using umrt, a pid that does not exist, a sample that ends normally
(its segment is gone). Prints what failed and exits 1 on the first failure.
"""
import json
import os
import signal
import subprocess
import sys
import time

STAT, SAMPLE = sys.argv[1], sys.argv[2]
MiB = 1 << 20
ENV = dict(os.environ, UMRT_BACKEND="sim")
ENV.pop("UMRT_STAT", None)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg)


def stat(*args, timeout=60):
    return subprocess.run([STAT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def start_sample(passes):
    return subprocess.Popen([SAMPLE, "--device-memory", "16M", "--chunk", "2M", "--threads", "2",
                             "--passes", str(passes)], stdout=subprocess.DEVNULL, env=ENV)


def main():
    seg = None
    sample = start_sample(1000000)
    try:
        pid = sample.pid
        seg = f"/dev/shm/umrt.{pid}"
        # Listed once umrt is up (the sample's first umrt call) and its arrays are allocated.
        deadline = time.time() + 60
        listed = None
        while time.time() < deadline and listed is None:
            if sample.poll() is not None:
                fail(f"the sample exited early with status {sample.returncode}")
            out = stat()
            check_rc = out.returncode
            for line in out.stdout.splitlines():
                f = line.split()
                if f and f[0] == str(pid) and f[3] == "3":  # its three arrays allocated
                    listed = f
            if listed is None:
                time.sleep(0.1)
        check(check_rc == 0 and listed is not None, f"umrt-stat lists the sample (pid {pid})")
        check(listed[1] == "oversubscribe" and listed[2] == "sim" and listed[3] == "3",
              f"list line: command, backend, 3 allocations: {listed}")
        mode = os.stat(seg).st_mode & 0o777
        check(mode == 0o400, f"{seg} has mode 0400 (got {oct(mode)})")

        # Evictions and refetches under way: refetches only come with the second pass, which a
        # slow build (TSan) reaches after seconds. Snapshots until every counter has moved.
        deadline = time.time() + 60
        while True:
            out = stat(pid, "--json")
            check(out.returncode == 0, f"umrt-stat {pid} --json exits 0 ({out.stderr.strip()})")
            j = json.loads(out.stdout)
            moved = j["refetches"] > 0 and all(a["evictions"] > 0 for a in j["allocations"])
            if moved or time.time() > deadline:
                break
            time.sleep(0.2)
        check(j["pid"] == pid and j["command"] == "oversubscribe" and j["backend"] == "sim",
              "json: pid, command, backend")
        check(j["layout_version"] == 1 and j["allocations_live"] == 3 and j["allocated_bytes"] == 48 * MiB,
              "json: layout version, 3 live allocations of 48 MiB in all")
        check(j["age_ms"] < 2000 and j["updates"] >= 2, f"json: updated recently (age {j['age_ms']} ms)")
        s = j["stats"]
        for k in ("cpu_faults", "bytes_to_device", "bytes_to_host", "evictions", "batches",
                  "device_bytes_in_use", "device_capacity", "host_pages", "swap_outs", "pages_dropped_clean"):
            check(k in s, f"json: stats.{k}")
        check(s["device_capacity"] == 16 * MiB and s["bytes_to_device"] > 0 and s["evictions"] > 0,
              "json: 16 MiB device, bytes moved, evictions")
        check(j["refetches"] > 0, "json: evicted blocks came back (refetches, thrashing)")
        allocs = j["allocations"]
        check(len(allocs) == 3, "json: 3 allocation rows")
        for a in allocs:
            check(a["size"] == 16 * MiB and a["address"] % (2 * MiB) == 0 and not a["file"] and not a["packed"],
                  f"json: row {a['address']:#x}: 16 MiB, 2 MiB aligned, anonymous")
            check(0 < a["host_bytes"] + a["device_bytes"] <= a["size"] and a["storage_bytes"] == 0,
                  f"json: row {a['address']:#x}: residency {a['host_bytes']} host + {a['device_bytes']} device")
            check(a["evictions"] > 0 and "faults" in a and "refetches" in a, f"json: row {a['address']:#x}: counters")
        check(sum(a["device_bytes"] for a in allocs) <= 16 * MiB, "json: no more on the device than it holds")

        out = stat(pid, "--count", 2, "--interval", 0.5, "--top", 3)
        lines = out.stdout.splitlines()
        check(out.returncode == 0 and lines[0].startswith(f"umrt-stat: pid {pid} (oversubscribe)"),
              f"watch: header ({lines[:1]})")
        check(lines[1].split()[:3] == ["time", "faults/s", "toDev_MB/s"], "watch: column names")
        rates = [l for l in lines if len(l) > 8 and l[2] == ":" and l[5] == ":"]
        check(len(rates) == 2, f"watch: --count 2 gives two lines ({len(rates)})")
        check(all(float(l.split()[2]) > 0 for l in rates), "watch: MB/s to the device > 0 on each line")
        rows = [l for l in lines if l.strip().startswith("0x")]
        check(len(rows) == 6, f"watch: 3 allocation rows under each line ({len(rows)})")

        # SIGKILL: the segment stays, and is stale. (Tests run in parallel: another process's
        # umrt_init may sweep it at once; then it is put back as it was, to be read as stale.)
        with open(seg, "rb") as f:
            saved = f.read()
        sample.send_signal(signal.SIGKILL)
        sample.wait()
        if not os.path.exists(seg):
            print("note: the stale segment was swept by another umrt process; restored")
            fd = os.open(seg, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o400)
            os.write(fd, saved)
            os.close(fd)
        check(os.path.exists(seg), "after SIGKILL the segment is still there (nobody removed it)")
        out = stat(pid, "--json")
        check(out.returncode == 1 and "stale" in out.stderr, f"umrt-stat PID on it: stale, status 1 ({out.stderr.strip()})")
        out = stat()
        check(out.returncode == 0 and not any(l.split()[:1] == [str(pid)] for l in out.stdout.splitlines())
              and "stale" in out.stderr, "umrt-stat lists it as stale on stderr only")
    finally:
        if sample.poll() is None:
            sample.kill()
            sample.wait()
        if seg and os.path.exists(seg):
            os.unlink(seg)

    out = stat(os.getpid())
    check(out.returncode == 1 and "not using umrt" in out.stderr, f"a process without umrt ({out.stderr.strip()})")
    out = stat(2**22 + 12345)
    check(out.returncode == 1 and "no such process" in out.stderr, f"a pid that does not exist ({out.stderr.strip()})")
    out = stat("--json")
    check(out.returncode == 2, "--json without a PID: status 2")

    # A sample that ends by itself removes its segment.
    short = start_sample(1)
    check(short.wait(timeout=120) == 0, "a one-pass sample succeeds")
    check(not os.path.exists(f"/dev/shm/umrt.{short.pid}"), "its segment is gone after it exited")
    print("all passed")


main()
