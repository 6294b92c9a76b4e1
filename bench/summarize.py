#!/usr/bin/env python3
"""Markdown tables from bench/run_benchmarks.sh output (JSON with aggregates).

    python3 bench/summarize.py <results-dir> [<baseline-results-dir>]

Figures use the fastest repetition ("min", the least disturbed on a shared machine; rates
are work / min time); ratios are also given from the medians. All ratios compare times
from the same run (same process, randomly interleaved repetitions): op / sgemm > 1 means
the op layer is slower.
With a baseline dir, also prints a before/after table of the op and kernels variants.
"""
import json
import os
import re
import sys
from collections import defaultdict


def load_runs(path):
    """{name: {"time_us", "gflops", "bps", "cv"}} from one JSON file (median aggregates)."""
    with open(path) as f:
        data = json.load(f)
    out = defaultdict(dict)
    for b in data["benchmarks"]:
        if b.get("run_type") != "aggregate":
            continue
        name = re.sub(r"(/min_time:[^/]+)?/real_time$", "", b["run_name"])
        agg = b["aggregate_name"]
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        if agg == "median":
            out[name]["median_us"] = b["real_time"] * scale
            # Work per iteration, to turn the minimum time into a rate.
            if "flop_per_iter" in b:
                out[name]["flop"] = b["flop_per_iter"]
            if "bytes_per_iter" in b:
                out[name]["bytes"] = b["bytes_per_iter"]
            for c in ("op_over_sgemm", "op_over_kernels"):  # paired_* benchmarks
                if c in b:
                    out[name][c] = b[c]
        elif agg == "min":
            out[name]["time_us"] = b["real_time"] * scale
        elif agg == "cv":
            out[name]["cv"] = b["real_time"]  # a fraction, reported in the time field
    for r in out.values():
        if "time_us" not in r and "median_us" in r:
            r["time_us"] = r["median_us"]
        if "flop" in r:
            r["gflops"] = r["flop"] / (r["time_us"] * 1e-6) / 1e9
        if "bytes" in r:
            r["gbps"] = r["bytes"] / (r["time_us"] * 1e-6) / 1e9
    return out, data.get("context", {})


def load_text(path):
    try:
        with open(path) as f:
            return [l.strip() for l in f if l.strip()]
    except OSError:
        return []


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


# The op variant of each layout and the kernels / sgemm variants with the same operand layout.
# Last: the oneDNN matmul primitive pinned to its gemm:jit implementation, same layout.
PAIRS = [
    ("op_linear_nt", "kernels_nt", "sgemm_nt", "onednn_gemm_nt"),
    ("op_linear_nt_bias", "kernels_nt", "sgemm_nt", None),
    ("op_matmul_nn", "kernels_nn", "sgemm_nn", "onednn_gemm_nn"),
    ("op_matmul_tn", "kernels_tn", "sgemm_tn", "onednn_gemm_tn"),
    ("op_matmul_nt", "kernels_nt", "sgemm_nt", "onednn_gemm_nt"),
    ("op_linear_fwd_bwd", None, "sgemm_fwd_bwd", None),
]


MODELS = ["tiny", "mnist", "cifar"]
KINDS = ["qkv_dW", "qkv_", "mlp_up", "mlp_down", "attn_qk", "attn_pv"]


def rank(text, keys):
    return next((i for i, k in enumerate(keys) if k in text), len(keys))


def order_of(shape):  # forward products first, then the weight gradient, then attention
    return [1, 0, 2, 3, 4, 5, 6][rank(shape, KINDS)]


def shapes_of(runs):
    seen = {name.split("/")[1] for name in runs if name.startswith("matmul/")}
    return sorted(seen, key=lambda s: (rank(s, MODELS), order_of(s), s))


def matmul_tables(runs, ctx, load, threads):
    lines = []
    lines.append(f"#### {threads} thread(s)\n")
    lines.append(f"CPU: {ctx.get('cpu_model', '?')}; softlab threads {ctx.get('softlab_threads', '?')}; "
                 f"OMP_WAIT_POLICY {ctx.get('OMP_WAIT_POLICY', '?')}; "
                 f"/proc/loadavg before: `{load[0] if load else '?'}`, after: `{load[-1] if load else '?'}`\n")
    lines.append("| shape (M×K×N [×batch]) | op variant | op GFLOP/s | kernels::gemm GFLOP/s | dnnl_sgemm GFLOP/s "
                 "| primitive pinned to gemm:jit GFLOP/s | op / sgemm (paired) | op / kernels (paired) "
                 "| op / sgemm (min) | op / sgemm (median) | op time µs (min) | max cv |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in shapes_of(runs):
        for op, kern, sg, pin in PAIRS:
            o = runs.get(f"matmul/{shape}/{op}")
            if not o:
                continue
            k = runs.get(f"matmul/{shape}/{kern}") if kern else None
            s = runs.get(f"matmul/{shape}/{sg}")
            g = runs.get(f"matmul/{shape}/{pin}", {}) if pin else {}
            cvs = [r.get("cv") for r in (o, k, s) if r and r.get("cv") is not None]
            p = runs.get(f"matmul/{shape}/paired_{op}", {})
            lines.append(
                f"| {shape} | {op} | {fmt(o.get('gflops'))} | {fmt(k.get('gflops')) if k else '–'} | "
                f"{fmt(s.get('gflops')) if s else '–'} | {fmt(g.get('gflops'))} | "
                f"{fmt(p.get('op_over_sgemm'), 3)} | {fmt(p.get('op_over_kernels'), 3)} | "
                f"{fmt(o['time_us'] / s['time_us'], 3) if s else '–'} | "
                f"{fmt(o['median_us'] / s['median_us'], 3) if s else '–'} | {fmt(o['time_us'])} | "
                f"{fmt(100 * max(cvs), 0) + '%' if cvs else '–'} |")
        # The brief's literal baseline: sgemm with B stored [K, N] ('N','N'), against the linear op.
        o = runs.get(f"matmul/{shape}/op_linear_nt")
        s = runs.get(f"matmul/{shape}/sgemm_nn")
        if o and s:
            lines.append(f"| {shape} | op_linear_nt vs sgemm_nn | {fmt(o.get('gflops'))} | – | {fmt(s.get('gflops'))} | – | "
                         f"– | – | {fmt(o['time_us'] / s['time_us'], 3)} | {fmt(o['median_us'] / s['median_us'], 3)} | "
                         f"{fmt(o['time_us'])} | – |")
    return "\n".join(lines) + "\n"


def norm_table(by_threads):
    names = sorted({n for runs, _, _ in by_threads.values() for n in runs},
                   key=lambda n: (rank(n, ["copy/", "log_softmax/", "softmax/", "layer_norm/"]),
                                  int(n.split("/")[1].split("x")[1]), n))
    ts = sorted(by_threads)
    head = "| benchmark | " + " | ".join(f"{t} thr: time µs (min) | {t} thr: GB/s | {t} thr: cv" for t in ts) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(ts)]
    for n in names:
        row = f"| {n} |"
        for t in ts:
            r = by_threads[t][0].get(n, {})
            row += f" {fmt(r.get('time_us'))} | {fmt(r.get('gbps'), 2)} | {fmt(100 * r['cv'], 0) + '%' if 'cv' in r else '–'} |"
        lines.append(row)
    for t in ts:
        load = by_threads[t][2]
        lines.append("")
        lines.append(f"{t} thread(s): /proc/loadavg before `{load[0] if load else '?'}`, after `{load[-1] if load else '?'}`")
    return "\n".join(lines) + "\n"


def collect(d, prog):
    res = {}
    for fn in sorted(os.listdir(d)):
        m = re.fullmatch(re.escape(prog) + r"\.t(\d+)\.json", fn)
        if m:
            t = int(m.group(1))
            runs, ctx = load_runs(os.path.join(d, fn))
            res[t] = (runs, ctx, load_text(os.path.join(d, f"{prog}.t{t}.load")))
    return res


def before_after(base, new):
    lines = ["| threads | shape | variant | before µs (min) | after µs (min) | after / before |",
             "|---|---|---|---:|---:|---:|"]
    for t in sorted(new):
        if t not in base:
            continue
        b, a = base[t][0], new[t][0]
        for name in sorted(a, key=lambda n: (rank(n, MODELS), order_of(n.split("/")[1]), n)):
            v = name.split("/")[-1]
            if name in b and (v.startswith("op_") or v.startswith("kernels_") or v.startswith("sgemm_")):
                lines.append(f"| {t} | {name.split('/')[1]} | {v} | {fmt(b[name]['time_us'])} | "
                             f"{fmt(a[name]['time_us'])} | {fmt(a[name]['time_us'] / b[name]['time_us'], 3)} |")
    return "\n".join(lines) + "\n"


def attention_tables(d):
    """bench_attention: per module and shape, forward and forward+backward time (fastest
    repetition, or the median when the run has no "min" statistic) and the peak tensor
    memory of one call, against one B x H x N x N tensor."""
    out = []
    for fn in sorted(os.listdir(d)):
        m = re.fullmatch(r"bench_attention\.t(\d+)\.json", fn)
        if not m:
            continue
        with open(os.path.join(d, fn)) as f:
            data = json.load(f)
        rows = defaultdict(dict)  # (type, shape) -> values
        for b in data["benchmarks"]:
            if b.get("run_type") != "aggregate" or b["aggregate_name"] not in ("min", "median"):
                continue
            # Times: the fastest repetition when the run recorded it, else the median.
            parts = re.sub(r"/real_time$", "", b["run_name"]).split("/")
            typ, mode, shape = parts[0], parts[1], tuple(int(x) for x in parts[2:5])
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
            r = rows[(typ, shape)]
            if b["aggregate_name"] == "min":
                r[mode + "_ms"] = b["real_time"] * scale
            else:
                r.setdefault(mode + "_ms", b["real_time"] * scale)
                r[mode + "_MB"] = b.get("peak_MB")
                r["N2_MB"] = b.get("N2_MB")
        types = []
        for typ, _ in rows:
            if typ not in types:
                types.append(typ)
        shapes = sorted({s for _, s in rows}, key=lambda s: (s[1] == 1, s[0]))
        load = load_text(os.path.join(d, f"bench_attention.t{m.group(1)}.load"))
        out.append(f"{m.group(1)} thread(s); load before / after: {' / '.join(load)}\n")
        out.append("| module | N | B | Dh | fwd ms | fwd+bwd ms | fwd peak MB | fwd+bwd peak MB | one BxHxNxN MB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for typ in types:
            for sh in shapes:
                r = rows.get((typ, sh))
                if not r:
                    continue
                out.append(f"| {typ} | {sh[0]} | {sh[1]} | {sh[2]} | {fmt(r.get('fwd_ms'), 2)} | "
                           f"{fmt(r.get('fwd_bwd_ms'), 2)} | {fmt(r.get('fwd_MB'), 2)} | "
                           f"{fmt(r.get('fwd_bwd_MB'), 2)} | {fmt(r.get('N2_MB'), 1)} |")
        out.append("")
    return "\n".join(out)


def main():
    d = sys.argv[1]
    at = attention_tables(d)
    if at:
        print("#### attention modules\n")
        print(at)
    mm = collect(d, "bench_matmul")
    for t in sorted(mm):
        print(matmul_tables(mm[t][0], mm[t][1], mm[t][2], t))
    nm = collect(d, "bench_norm")
    if nm:
        print("#### softmax / layer_norm\n")
        print(norm_table(nm))
    if len(sys.argv) > 2:
        print("#### before / after\n")
        print(before_after(collect(sys.argv[2], "bench_matmul"), mm))


if __name__ == "__main__":
    main()
