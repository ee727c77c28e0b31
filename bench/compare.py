#!/usr/bin/python3
"""ringxfer against its baselines, measured in ONE run on the same path.

For loopback and (as root) for two network namespaces joined by a veth pair, it runs:
  - iperf3 with 1 MiB writes: one client/server pair, and two pairs in parallel (on
    veth also as many parallel streams as ringxfer has data connections);
  - a bare TCP ping-pong of 8-byte messages (bench/tcp_pingpong.cc): average round trip;
  - memcpy bandwidth at 1 MiB and 64 MiB (bench/baseline_bench.cc);
  - ringxfer-bench write and read at 1 MiB x 256, and 8 B x 256 with contiguous and
    strided offsets;
and prints each ringxfer figure as a ratio to its baseline, next to the targets of
issue 5, with CPU seconds per GB (both processes) and io_uring_enter calls per batch.

Usage: /usr/bin/python3 bench/compare.py [--build build-release] [--paths loopback,netns]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_busy():
    """Busy CPU seconds of the whole machine (/proc/stat: user, nice, system, irq,
    softirq). Counts softirq work that ksoftirqd or an unrelated task did, which
    getrusage of the measured processes misses (veth receives often run so)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


class Path:
    def __init__(self, name, host, target_prefix, initiator_prefix):
        self.name = name
        self.host = host
        self.t = target_prefix
        self.i = initiator_prefix


class Netns:
    """Two namespaces rx-cmp-a (10.77.1.1) and rx-cmp-b (10.77.1.2) over veth."""

    A, B = "rx-cmp-a", "rx-cmp-b"

    def __enter__(self):
        self.down()
        cmds = [
            ["ip", "netns", "add", self.A],
            ["ip", "netns", "add", self.B],
            ["ip", "link", "add", "rxc-va", "type", "veth", "peer", "name", "rxc-vb"],
            ["ip", "link", "set", "rxc-va", "netns", self.A],
            ["ip", "link", "set", "rxc-vb", "netns", self.B],
            ["ip", "-n", self.A, "addr", "add", "10.77.1.1/24", "dev", "rxc-va"],
            ["ip", "-n", self.B, "addr", "add", "10.77.1.2/24", "dev", "rxc-vb"],
            ["ip", "-n", self.A, "link", "set", "lo", "up"],
            ["ip", "-n", self.B, "link", "set", "lo", "up"],
            ["ip", "-n", self.A, "link", "set", "rxc-va", "up"],
            ["ip", "-n", self.B, "link", "set", "rxc-vb", "up"],
        ]
        for c in cmds:
            subprocess.run(c, check=True)
        return Path("netns (veth)", "10.77.1.2", ["ip", "netns", "exec", self.B],
                    ["ip", "netns", "exec", self.A])

    def down(self):
        for ns in (self.A, self.B):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)

    def __exit__(self, *exc):
        self.down()


def iperf(path, pairs, streams=1, seconds=5, window=0):
    ports = [5391 + i for i in range(pairs)]
    servers = [subprocess.Popen(path.t + ["iperf3", "-s", "-1", "-B", path.host, "-p", str(p)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    time.sleep(0.5)
    cpu0, m0 = children_cpu(), machine_busy()
    clients = [subprocess.Popen(path.i + ["iperf3", "-c", path.host, "-p", str(p), "-l", "1M",
                                          "-t", str(seconds), "-P", str(streams), "-J",
                                          *(["-w", str(window)] if window else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for p in ports]
    results = [json.loads(c.communicate()[0]) for c in clients]
    machine = machine_busy() - m0
    for s in servers:
        s.wait(timeout=30)
    cpu = children_cpu() - cpu0
    total = sum(r["end"]["sum_received"]["bytes"] for r in results)
    rate = sum(r["end"]["sum_received"]["bits_per_second"] for r in results) / 8e9
    return {"gbps": rate, "cpu_s_per_gb": cpu / (total / 1e9),
            "machine_cpu_s_per_gb": machine / (total / 1e9)}


def stream(path, exe, pairs=2, footprint=256 << 20, sockbuf=0, gigabytes=8):
    """Bare TCP streams (bench/tcp_stream.cc) walking through `footprint` bytes each side."""
    ports = [str(5381 + i) for i in range(pairs)]
    common = ["--footprint", str(footprint), *(["--sockbuf", str(sockbuf)] if sockbuf else [])]
    servers = [subprocess.Popen(path.t + [exe, "--server", p, "--host", path.host, *common],
                                stdout=subprocess.PIPE, text=True) for p in ports]
    for s in servers:
        s.stdout.readline()  # READY, once its buffer is touched
    cpu0, m0 = children_cpu(), machine_busy()
    clients = [subprocess.Popen(path.i + [exe, "--client", path.host, p, "--bytes",
                                          str(gigabytes << 30), *common],
                                stdout=subprocess.PIPE, text=True) for p in ports]
    rate = sum(float(c.communicate()[0]) for c in clients)
    for s in servers:
        s.communicate(timeout=30)
    cpu, machine = children_cpu() - cpu0, machine_busy() - m0
    gb = pairs * (gigabytes << 30) / 1e9
    return {"gbps": rate, "cpu_s_per_gb": cpu / gb, "machine_cpu_s_per_gb": machine / gb}


def pingpong(path, exe, iters=20000):
    port = "5389"
    server = subprocess.Popen(path.t + [exe, "--server", port, "--host", path.host],
                              stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    out = subprocess.run(path.i + [exe, "--client", path.host, port, "--iters", str(iters)],
                         check=True, capture_output=True, text=True).stdout.split()
    server.wait(timeout=30)
    return {"avg_us": float(out[0]), "min_us": float(out[1])}


def memcpy(exe):
    out = subprocess.run([exe, "--benchmark_filter=BM_Memcpy/(1048576|67108864)$",
                          "--benchmark_format=json", "--benchmark_min_time=0.3"],
                         check=True, capture_output=True, text=True).stdout
    res = {b["name"]: b["bytes_per_second"] / 1e9 for b in json.loads(out)["benchmarks"]}
    return {"1MiB": res["BM_Memcpy/1048576"], "64MiB": res["BM_Memcpy/67108864"]}


def ringxfer(path, exe, op, size, stride=0, batch=256, iters=64, extra=()):
    flags = [f"--op={op}", f"--min_size={size}", f"--max_size={size}", f"--batch={batch}",
             f"--iters={iters}", f"--stride={stride}", "--json", "--stats", *extra]
    env = dict(os.environ, RINGXFER_LOG="warn")
    if not path.t:
        out = subprocess.run([exe, "--loopback", f"--host={path.host}", *flags], check=True,
                             capture_output=True, text=True, env=env).stdout
    else:
        # A fresh port per run: a killed target's io_uring (and with it its listening
        # socket) is torn down asynchronously by the kernel.
        global _next_port
        _next_port += 1
        port = str(_next_port)
        target = subprocess.Popen(path.t + [exe, "--role=target", f"--host={path.host}",
                                            f"--port={port}", f"--batch={batch}",
                                            f"--max_size={size}", f"--stride={stride}", *extra],
                                  stdout=subprocess.PIPE, text=True, env=env)
        target.stdout.readline()  # READY
        try:
            out = subprocess.run(path.i + [exe, "--role=initiator", f"--host={path.host}",
                                           f"--port={port}", *flags], check=True,
                                 capture_output=True, text=True, env=env).stdout
        finally:
            target.kill()
            target.wait()
    row, stats = None, None
    for line in out.splitlines():
        d = json.loads(line)
        if "stats" in d:
            stats = d["stats"]
        else:
            row = d
    return {**row, **stats}


_next_port = 40100


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-release"))
    ap.add_argument("--paths", default="loopback,netns")
    # The library's defaults (include/ringxfer/config.h).
    ap.add_argument("--rings", type=int, default=2)
    ap.add_argument("--stripes", type=int, default=2)
    ap.add_argument("--buffer", type=int, default=1 << 20,
                    help="SO_SNDBUF/SO_RCVBUF of ringxfer's connections (0: autotuning); "
                         "iperf3 and tcp_stream also run with it as a second ceiling")
    args = ap.parse_args()
    bench = os.path.join(args.build, "tools", "ringxfer-bench")
    pp = os.path.join(args.build, "tools", "tcp_pingpong")
    ts = os.path.join(args.build, "tools", "tcp_stream")
    base = os.path.join(args.build, "bench", "baseline_bench")
    for f in (bench, pp, ts, base):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: build it first (tools/quickstart builds build-release)")
    extra = [f"--rings={args.rings}", f"--stripes={args.stripes}",
             f"--send_buffer={args.buffer}", f"--recv_buffer={args.buffer}"]

    print(f"machine: {os.cpu_count()} cpus, kernel {os.uname().release}; "
          f"ringxfer: {args.rings} ring thread(s), {args.stripes} stripes, "
          f"socket buffers {args.buffer} B")
    mc = memcpy(base)
    print(f"memcpy: 1 MiB {mc['1MiB']:.1f} GB/s, 64 MiB {mc['64MiB']:.1f} GB/s")
    for name in args.paths.split(","):
        if name == "netns" and os.geteuid() != 0:
            print("netns: skipped (needs root)")
            continue
        ctx = Netns() if name == "netns" else None
        path = ctx.__enter__() if ctx else Path("loopback", "127.0.0.1", [], [])
        try:
            one = iperf(path, 1)
            two = iperf(path, 2)
            two_w = iperf(path, 2, window=args.buffer) if args.buffer else None
            many = iperf(path, 1, streams=args.stripes) if ctx else None
            bare = stream(path, ts, sockbuf=args.buffer)
            ping = pingpong(path, pp)
            r = {
                "w1m": ringxfer(path, bench, "write", 1 << 20, extra=extra),
                "r1m": ringxfer(path, bench, "read", 1 << 20, extra=extra),
                # The footprint iperf3 has: every message to and from the same 1 MiB.
                "w1c": ringxfer(path, bench, "write", 1 << 20, extra=[*extra, "--footprint=1048576"]),
                "r1c": ringxfer(path, bench, "read", 1 << 20, extra=[*extra, "--footprint=1048576"]),
                "w8": ringxfer(path, bench, "write", 8, iters=512, extra=extra),
                "r8": ringxfer(path, bench, "read", 8, iters=512, extra=extra),
                "w8s": ringxfer(path, bench, "write", 8, stride=64, iters=512, extra=extra),
                "r8s": ringxfer(path, bench, "read", 8, stride=64, iters=512, extra=extra),
            }
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
        print(f"\n== {path.name}")
        print(f"iperf3 1 MiB writes: 1 pair {one['gbps']:.2f} GB/s at {one['cpu_s_per_gb']:.3f} CPU-s/GB "
              f"({one['machine_cpu_s_per_gb']:.3f} whole machine); "
              f"2 pairs {two['gbps']:.2f} GB/s" +
              (f"; 2 pairs with -w {args.buffer} {two_w['gbps']:.2f} GB/s" if two_w else "") +
              (f"; 1 pair x {args.stripes} streams {many['gbps']:.2f} GB/s" if many else ""))
        print(f"tcp_stream, 2 pairs over 256 MiB each side (ringxfer's footprint), socket buffers "
              f"{args.buffer or 'autotuned'}: {bare['gbps']:.2f} GB/s at {bare['cpu_s_per_gb']:.3f} CPU-s/GB "
              f"({bare['machine_cpu_s_per_gb']:.3f} whole machine)")
        print(f"TCP ping-pong 8 B: avg {ping['avg_us']:.1f} us, min {ping['min_us']:.1f} us")
        # The stricter of iperf3's two-pair figures, with and without ringxfer's buffers.
        ceiling = max(two["gbps"], two_w["gbps"] if two_w else 0)
        print(f"{'figure':40} {'value':>12} {'ratio':>8}  {'vs':28} {'target':>8}  met")
        def line(label, value, unit, rat, vs, target, ok):
            rs = "-" if rat != rat else f"{rat:.2f}"
            print(f"{label:40} {value:>9.2f} {unit:<2} {rs:>8}  {vs:28} {target:>8}  {'yes' if ok else 'no'}")
        for key, label in (("w1m", "write 1 MiB x 256 avg BW"), ("r1m", "read 1 MiB x 256 avg BW")):
            rr = ratio(r[key]["avg_bw_gbps"], ceiling)
            line(label, r[key]["avg_bw_gbps"], "GB", rr, "iperf3 2 pairs (best)", ">= 0.9", rr >= 0.9)
            rs = ratio(r[key]["avg_bw_gbps"], bare["gbps"])
            line(f"  same, vs bare TCP over 256 MiB", r[key]["avg_bw_gbps"], "GB", rs,
                 "tcp_stream 2 pairs", ">= 0.9", rs >= 0.9)
            cached = r[key.replace("1m", "1c")]
            rcc = ratio(cached["avg_bw_gbps"], ceiling)
            line(f"  same over iperf3's 1 MiB footprint", cached["avg_bw_gbps"], "GB", rcc,
                 "iperf3 2 pairs (best)", ">= 0.9", rcc >= 0.9)
            if many:
                rm = ratio(r[key]["avg_bw_gbps"], many["gbps"])
                line(f"  same, vs iperf3 x{args.stripes} streams", r[key]["avg_bw_gbps"], "GB", rm,
                     f"iperf3 {args.stripes} streams", ">= 0.95", rm >= 0.95)
            rc = ratio(r[key]["cpu_s_per_gb"], one["cpu_s_per_gb"])
            line(f"  CPU-s per GB (both processes)", r[key]["cpu_s_per_gb"], "s", rc,
                 "iperf3 1 pair CPU-s/GB", "<= 1.1", rc <= 1.1)
            rmc = ratio(r[key]["machine_cpu_s_per_gb"], one["machine_cpu_s_per_gb"])
            line(f"  same, whole machine (/proc/stat)", r[key]["machine_cpu_s_per_gb"], "s", rmc,
                 "iperf3 1 pair, whole machine", "<= 1.1", rmc <= 1.1)
            line(f"  io_uring_enter per batch", r[key]["enters_per_batch"], "", float("nan"),
                 "(both processes)", "<= 53", r[key]["enters_per_batch"] <= 53)
        for key, label in (("w8", "write 8 B x 256 contiguous avg lat"), ("r8", "read 8 B x 256 contiguous avg lat"),
                           ("w8s", "write 8 B x 256 strided avg lat"), ("r8s", "read 8 B x 256 strided avg lat")):
            rl = ratio(r[key]["avg_lat_us"], ping["avg_us"])
            line(label, r[key]["avg_lat_us"], "us", rl, "ping-pong avg RTT", "<= 1.5", rl <= 1.5)
            line(f"  io_uring_enter per batch", r[key]["enters_per_batch"], "", float("nan"),
                 "(both processes)", "<= 6", r[key]["enters_per_batch"] <= 6)
        print(f"memcpy ratios: write 1 MiB x 256 is {ratio(r['w1m']['avg_bw_gbps'], mc['64MiB']):.3f} of "
              f"memcpy at 64 MiB, {ratio(r['w1m']['avg_bw_gbps'], mc['1MiB']):.3f} of memcpy at 1 MiB")


if __name__ == "__main__":
    main()
