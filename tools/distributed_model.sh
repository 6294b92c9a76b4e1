#!/usr/bin/env bash
# Step time of data-parallel training at n nodes, modelled from this machine's compute
# (docs/distributed.md, "Step time at 2–64 nodes").
#
#   tools/distributed_model.sh [--softlab PATH] [--configs A.json,B.json] [--nodes 1,2,4,...]
#                              [--rounds R] [--steps S] [--threads T] [--gbit 10,25]
#                              [--latency-us L] [--link-efficiency E]
#
# For each config and each n it measures t_compute(B/n), the median time of one training
# step (forward, backward, clipping, AdamW) at the per-node batch B/n with
# `softlab bench CONFIG --mode train --set train.batch_size=B/n --threads T --json`
# (B = the config's train.batch_size; random inputs, no data set needed). The runs are
# interleaved: round by round, config by config, every n in turn; the figure is the median
# over the rounds of bench's step_ms (itself a median of S steps). A node is this machine
# running one rank of T threads.
#
# Then, for each link speed (Gbit/s), the ring-allreduce time of the gradients,
#   t_allreduce(n) = 2(n-1)/n * bytes / (E * link) + 2(n-1) * latency,  bytes = 4 * params
# and the step time with no overlap, T(n) = t_compute(B/n) + t_allreduce(n), and the
# fully overlapped bound max(t_compute(B/n), t_allreduce(n)); speedup = T(1) / T(n),
# efficiency = speedup / n. The summary also gives the best n with 2*log2(n) latency terms
# instead of 2(n-1) (recursive halving and doubling, what MPI libraries use for small sums).
# Prints Markdown on stdout, progress on stderr.
#
# Defaults: build-release/softlab (or $SOFTLAB), every configs/*.json, nodes 1..64 in powers
# of two, 3 rounds, 10 steps, 2 threads, 10 and 25 Gbit/s, 30 µs, efficiency 1.
set -euo pipefail
export DISTRIBUTED_MODEL_CALLER_DIR=$PWD  # paths given as arguments are relative to it
cd "$(dirname "$0")/.."
exec /usr/bin/python3 - "$@" <<'PYTHON'
import argparse, glob, json, math, os, statistics, subprocess, sys

ap = argparse.ArgumentParser(prog="tools/distributed_model.sh")
ap.add_argument("--softlab", default=os.environ.get("SOFTLAB", "build-release/softlab"))
ap.add_argument("--configs", default="", help="comma-separated config files (default: configs/*.json)")
ap.add_argument("--nodes", default="1,2,4,8,16,32,64")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--gbit", default="10,25", help="link speeds in Gbit/s")
ap.add_argument("--latency-us", type=float, default=30.0, help="per-message latency of the link")
ap.add_argument("--link-efficiency", type=float, default=1.0,
                help="fraction of the link speed an allreduce reaches (1 = line rate)")
a = ap.parse_args()

def caller_path(p):
    """A relative path as the caller meant it (the script runs from the repository root)."""
    q = os.path.join(os.environ.get("DISTRIBUTED_MODEL_CALLER_DIR", "."), p)
    return p if os.path.isabs(p) or not os.path.exists(q) else os.path.relpath(q)

a.softlab = caller_path(a.softlab)
configs = [caller_path(c) for c in a.configs.split(",") if c] or sorted(glob.glob("configs/*.json"))
nodes = sorted({int(x) for x in a.nodes.split(",") if x})
links = [float(x) for x in a.gbit.split(",") if x]
if 1 not in nodes:
    nodes = [1] + nodes  # speedups are over one node
if not os.access(a.softlab, os.X_OK):
    sys.exit(f"distributed_model: no {a.softlab} (build softlab_cli, or pass --softlab PATH)")

def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    name, flags = "?", ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("Flags:"):
            flags = line.split(":", 1)[1].split()
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(isa) if isa else 'no AVX-512'}; {'AMX' if 'amx_tile' in flags else 'no AMX'}), {os.cpu_count()} CPUs"

batch = {}
for c in configs:
    with open(c) as f:
        batch[c] = int(json.load(f)["train"]["batch_size"])

def bench(cfg, b):
    cmd = [a.softlab, "bench", cfg, "--mode", "train", "--set", f"train.batch_size={b}",
           "--threads", str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"distributed_model: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])

times = {}   # (cfg, n) -> [step_ms per round]
params, name, loads = {}, {}, []
for rnd in range(1, a.rounds + 1):
    for c in configs:
        for n in nodes:
            B = batch[c]
            if B % n:
                continue
            print(f"round {rnd}/{a.rounds}: {c} batch {B // n} (n = {n})", file=sys.stderr, flush=True)
            j = bench(c, B // n)
            times.setdefault((c, n), []).append(j["step_ms"])
            params[c], name[c] = int(j["params"]), j["config"]
            loads.append(float(j["loadavg_before"].split()[0]))
            loads.append(float(j["loadavg_after"].split()[0]))

t_comp = {k: statistics.median(v) for k, v in times.items()}
lat = a.latency_us * 1e-6

def allreduce_ms(c, n, gbit, hops=None):
    """Ring allreduce: 2(n-1) messages in turn; hops=2*log2(n) gives the latency term of
    recursive halving and doubling (Rabenseifner), which MPI libraries use for small sums."""
    if n == 1:
        return 0.0
    bytes_ = 4 * params[c]
    bw = a.link_efficiency * gbit * 1e9 / 8
    return 1e3 * (2 * (n - 1) / n * bytes_ / bw + (2 * (n - 1) if hops is None else hops) * lat)

def fmt(x):
    return f"{x:.3g}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"

print(f"CPU: {cpu_name()}; a node = one rank x {a.threads} threads; "
      f"{a.rounds} interleaved rounds of `softlab bench --mode train --steps {a.steps}`, "
      f"load average {min(loads):.2f}–{max(loads):.2f}")
print(f"Link model: ring allreduce, latency {a.latency_us:g} µs per message, "
      f"{a.link_efficiency:g} × line rate\n")

summary = []
for gbit in links:
    print(f"### {gbit:g} Gbit/s\n")
    for c in configs:
        if (c, 1) not in t_comp:
            continue
        mib = 4 * params[c] / 2**20
        t1 = t_comp[(c, 1)]
        print(f"**{name[c]}** (`{c}`): {params[c]:,} parameters, {mib:.2f} MiB of gradients, "
              f"batch {batch[c]}\n")
        print("| nodes | batch/node | compute ms | allreduce ms | step ms (no overlap) | speedup | efficiency "
              "| step ms (overlapped) | speedup |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        best, best_log = (1, 1.0), (1, 1.0)
        for n in nodes:
            if (c, n) not in t_comp:
                continue
            tc, ta = t_comp[(c, n)], allreduce_ms(c, n, gbit)
            T, To = tc + ta, max(tc, ta)
            s, so = t1 / T, t1 / To
            if s > best[1]:
                best = (n, s)
            s_log = t1 / (tc + allreduce_ms(c, n, gbit, 2 * math.log2(n) if n > 1 else 0))
            if s_log > best_log[1]:
                best_log = (n, s_log)
            print(f"| {n} | {batch[c] // n} | {fmt(tc)} | {fmt(ta)} | {fmt(T)} | {s:.2f} | {s / n:.2f} "
                  f"| {fmt(To)} | {so:.2f} |")
        print()
        summary.append((gbit, c, best, best_log))

print("### Best node count (no overlap)\n")
print("Best n and its speedup with the ring's 2(n-1) latency terms; in brackets, with 2·log2(n) "
      "latency terms (recursive halving and doubling).\n")
print("| config | parameters | gradient MiB | compute ms at B | allreduce ms at 64 nodes, "
      + ", ".join(f"{g:g} Gbit/s" for g in links) + " | "
      + " | ".join(f"best n: speedup at {g:g} Gbit/s" for g in links) + " |")
print("|---|---:|---:|---:|---:|" + "---:|" * len(links))
for c in configs:
    if (c, 1) not in t_comp:
        continue
    ar = ", ".join(fmt(allreduce_ms(c, 64, g)) for g in links)
    bests = " | ".join(f"{b[0]}: {b[1]:.2f}× ({bl[0]}: {bl[1]:.2f}×)" for g, cc, b, bl in summary if cc == c)
    print(f"| {name[c]} | {params[c]:,} | {4 * params[c] / 2**20:.2f} | {fmt(t_comp[(c, 1)])} | {ar} | {bests} |")
PYTHON
