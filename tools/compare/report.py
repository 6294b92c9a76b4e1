#!/usr/bin/python3
"""Turns the raw results of tools/compare/compare.sh into its Markdown report.

    report.py RAW_DIR [--out FILE.md]

RAW_DIR holds, per measurement, r<round>__<config>__<impl>-<precision>__<mode>.{json,err,rc}
(the stdout, stderr and exit status of `vit.py bench` or `softlab bench`), plus run.json
(the options compare.sh ran with), probe.json (`vit.py probe`), load_start / load_end and,
with --check, check__<config>.{json,err,rc}. Only the standard library is used.
"""
import argparse
import glob
import json
import os
import re
import sys

VARIANTS = [("pytorch", "fp32"), ("pytorch", "bf16"), ("softlab", "fp32"), ("softlab", "bf16")]
LABEL = {("pytorch", "fp32"): "PyTorch fp32", ("pytorch", "bf16"): "PyTorch bf16 autocast",
         ("softlab", "fp32"): "softlab fp32", ("softlab", "bf16"): "softlab bf16"}


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def cpu_info():
    model, flags = "unknown", set()
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return model, {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}


def reason(err, rc):
    """A one-line reason for a failed measurement: the last non-empty stderr line."""
    lines = [l.strip() for l in err.splitlines() if l.strip()]
    text = lines[-1] if lines else "exit %s, no message" % rc
    text = re.sub(r"^(softlab|error|softlab bench)\s*:\s*", "", text)
    if len(text) > 140:
        text = text[:137] + "..."
    return "exit %s: %s" % (rc, text)


class Result:
    def __init__(self, raw, tag):
        base = os.path.join(raw, tag)
        self.rc = read(base + ".rc", "?").strip() or "?"
        self.err = read(base + ".err")
        self.data = None
        if self.rc == "0":
            for line in read(base + ".json").splitlines():
                line = line.strip()
                if line.startswith("{"):
                    try:
                        self.data = json.loads(line)
                    except ValueError:
                        pass
        self.missing = not os.path.exists(base + ".rc")

    @property
    def ok(self):
        return self.data is not None

    def why(self):
        if self.missing:
            return "not run"
        if self.rc == "0":
            return "no JSON in the output"
        return reason(self.err, self.rc)

    def get(self, key):
        return self.data.get(key) if self.data else None

    def load(self):
        """'before→after' 1-minute load averages."""
        if not self.data:
            return None
        b = (self.data.get("loadavg_before") or "?").split()
        a = (self.data.get("loadavg_after") or "?").split()
        return "%s→%s" % (b[0] if b else "?", a[0] if a else "?")


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "ms":
        return "%.2f" % v if v >= 1 else "%.3f" % v
    if kind == "ratio":
        return "%.2f" % v
    return "%.0f" % v if v >= 100 else "%.1f" % v


def esc(text):
    return text.replace("|", "\\|").replace("\n", " ")


def cell(results, key, kind, notes):
    """'r1 / r2 / ...'; a failure is 'n/a' with its reason as a note (one note per reason)."""
    vals = []
    for r in results:
        if r.ok:
            vals.append(fmt(r.get(key), kind))
        else:
            why = r.why()
            if why not in notes:
                notes.append(why)
            vals.append("n/a[^%d]" % (notes.index(why) + 1))
    return " / ".join(vals) if vals else "n/a"


def load_cell(results):
    return " / ".join(r.load() or "–" for r in results) if any(r.ok for r in results) else "–"


def ratio_cell(sl, pt, key, invert, notes):
    vals = []
    for a, b in zip(sl, pt):
        x, y = a.get(key) if a.ok else None, b.get(key) if b.ok else None
        if x is None or y is None or x == 0 or y == 0:
            vals.append("n/a")
        else:
            vals.append(fmt(y / x if invert else x / y, "ratio"))
    return " / ".join(vals) if vals else "n/a"


def shown(path, run):
    """A path relative to the checkout when it is inside it."""
    root = run.get("root")
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1:]
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--out")
    args = p.parse_args()
    raw = args.raw
    run = json.loads(read(os.path.join(raw, "run.json"), "{}") or "{}")
    probe = json.loads(read(os.path.join(raw, "probe.json"), "{}") or "{}")
    rounds = int(run.get("rounds", 1))
    configs = run.get("configs", [])
    model, flags = cpu_info()
    notes = []
    out = []
    w = out.append
    w("# softlab vs PyTorch on the CPU")
    w("")
    w("Written by `tools/compare/compare.sh` on %s. Indicative only: one machine, and the load "
      "average beside each figure says how busy it was." % run.get("date", "?"))
    w("")
    w("- CPU: %s, %s logical CPUs; ISA flags: %s" % (
        model, run.get("nproc", "?"), ", ".join("%s %s" % (k, "yes" if v else "no") for k, v in flags.items())))
    w("- Threads: %s for each side (PyTorch `torch.set_num_threads`, softlab `--threads`); "
      "%d round(s), interleaved; %s timed steps after %s warm-up steps (inference: batch 1 "
      "timed max(steps, 50) times, batch 256 timed `steps` times); medians." % (
          run.get("threads", "?"), rounds, run.get("steps", "?"), run.get("warmup", "?")))
    w("- Load average (1, 5, 15 min) at the start: %s; at the end: %s" % (
        " ".join(read(os.path.join(raw, "load_start")).split()[:3]) or "?",
        " ".join(read(os.path.join(raw, "load_end")).split()[:3]) or "?"))
    libs = [os.path.basename(l) for l in probe.get("loaded_libs", [])]
    w("- PyTorch %s (%s); BLAS: BLAS_INFO=%s, loaded: %s; %s; ATen CPU capability: %s" % (
        probe.get("torch", "?"), probe.get("python", "?"), probe.get("blas_info", "?"),
        ", ".join(libs) or "?", probe.get("onednn", "oneDNN ?"), probe.get("cpu_capability", "?")))
    w("- PyTorch bf16 on bf16 hardware? %s (oneDNN ISA: %s; autocast output dtypes fp32-Linear / "
      "bf16-Linear / bf16-matmul: %s; fp32 Linear oneDNN kernels: %s, i.e. fp32 GEMMs go to the BLAS)" % (
          probe.get("bf16_on_hardware", "?"), probe.get("onednn_isa", "?"),
          probe.get("autocast_output_dtypes", "?"),
          ", ".join(probe.get("fp32_linear_onednn_kernels") or []) or "none"))
    # softlab facts, from any successful softlab result
    sl_any = None
    for f in sorted(glob.glob(os.path.join(raw, "r*__softlab-*.rc"))):
        r = Result(raw, os.path.basename(f)[:-3])
        if r.ok:
            sl_any = r
            break
    if sl_any:
        w("- softlab: `%s`; build: %s" % (shown(run.get("softlab", "?"), run), json.dumps(sl_any.get("build"))))
    else:
        w("- softlab: `%s` (no successful measurement)" % run.get("softlab", "?"))
    waits = {}
    for f in sorted(glob.glob(os.path.join(raw, "r*__*.rc"))):
        r = Result(raw, os.path.basename(f)[:-3])
        if r.ok:
            impl = "softlab" if "__softlab-" in f else "PyTorch"
            kind = (r.get("openmp_wait") or "?").split(" (")[0]
            waits.setdefault(impl, {}).setdefault(kind, 0)
            waits[impl][kind] += 1
    w("- OpenMP waiting (measurements per policy): %s (how PyTorch's was chosen: %s)" % (
        "; ".join("%s: %s" % (k, ", ".join("%s x%d" % kv for kv in sorted(v.items())))
                  for k, v in sorted(waits.items(), reverse=True)) or "?",
        "softlab's rule (src/cli/openmp_env.cpp) applied by vit.py before torch loads libgomp"
        if run.get("pytorch_omp", "auto") == "auto" else "libgomp's default (--pytorch-omp default)"))
    w("")
    if run.get("quick"):
        w("**--quick: a smoke check of the script with very few steps, not a measurement.**")
        w("")
    w("Cells are `round 1 / round 2 / ...`; load columns are the 1-minute load average "
      "before→after that measurement (one inference process measures batch 1 and batch 256). "
      "bf16: PyTorch wraps forward + loss in `torch.autocast(\"cpu\", dtype=torch.bfloat16)`; "
      "softlab runs with `--set train.precision=bf16`.")
    w("")

    ratios = []
    for cfg in configs:
        name = cfg["name"]
        res = {}
        for impl, prec in VARIANTS:
            for mode in ("train", "infer"):
                res[(impl, prec, mode)] = [Result(raw, "r%d__%s__%s-%s__%s" % (i, name, impl, prec, mode))
                                           for i in range(1, rounds + 1)]
        anyr = next((r for v in res.values() for r in v if r.ok), None)
        w("## %s (`%s`)" % (name, shown(cfg["path"], run)))
        w("")
        if anyr:
            counts = {}
            for (impl, _, _), v in res.items():
                for r in v:
                    if r.ok and r.get("params") is not None:
                        counts.setdefault(impl, set()).add(r.get("params"))
            same = len({p for v in counts.values() for p in v}) == 1
            w("Parameters: %s%s; training batch: %s." % (
                ", ".join("%s %s" % (k, "/".join(str(p) for p in sorted(v))) for k, v in sorted(counts.items())),
                " (the same model)" if same else " (**the two models differ**)",
                next((r.get("batch_size") for v in res.values() for r in v if r.ok and r.get("batch_size")), "?")))
            w("")
        warnings = []
        w("| implementation | train images/s | load (train) | batch-1 latency ms | batch-256 images/s | load (infer) |")
        w("|---|---|---|---|---|---|")
        for impl, prec in VARIANTS:
            tr, inf = res[(impl, prec, "train")], res[(impl, prec, "infer")]
            w("| %s | %s | %s | %s | %s | %s |" % (
                LABEL[(impl, prec)], cell(tr, "images_per_sec", "ips", notes), load_cell(tr),
                cell(inf, "batch1_ms", "ms", notes), cell(inf, "batch256_images_per_sec", "ips", notes),
                load_cell(inf)))
            # softlab says which precision it ran; flag a bf16 request it did not honour.
            for r in tr + inf:
                got = r.get("precision") if r.ok else None
                if got is not None and got != prec:
                    warnings.append("**Warning:** %s was requested but the %s result reports precision '%s'." % (
                        LABEL[(impl, prec)], r.get("mode"), got))
                    break
        w("")
        for x in warnings:
            w(x)
            w("")
        for metric, key, mode, invert in (("training images/s", "images_per_sec", "train", False),
                                          ("batch-1 latency (PyTorch ms / softlab ms)", "batch1_ms", "infer", True),
                                          ("batch-256 images/s", "batch256_images_per_sec", "infer", False)):
            ratios.append("| %s | %s | %s | %s |" % (
                name, metric,
                ratio_cell(res[("softlab", "fp32", mode)], res[("pytorch", "fp32", mode)], key, invert, notes),
                ratio_cell(res[("softlab", "bf16", mode)], res[("pytorch", "bf16", mode)], key, invert, notes)))
    w("## Ratios softlab / PyTorch")
    w("")
    w("Speed ratios, > 1 means softlab is faster (for latency: PyTorch's ms over softlab's ms); "
      "each round's pair was measured back to back.")
    w("")
    w("| config | metric | fp32 | bf16 |")
    w("|---|---|---|---|")
    out.extend(ratios)
    w("")
    checks = sorted(glob.glob(os.path.join(raw, "check__*.rc")))
    if checks:
        w("## Cross-check of the forward pass (`vit.py check`)")
        w("")
        w("| source | result |")
        w("|---|---|")
        for f in checks:
            base = f[:-3]
            rc = read(f).strip()
            body = read(base + ".json")
            try:
                j = json.loads(body)
                text = "%s: argmax %s, max |Δ logit| %.2e (rel %.1e), max |Δ p| %.1e" % (
                    "ok" if j.get("ok") else "MISMATCH", j["argmax_agree"],
                    j["max_abs_diff_logit_of_predicted_class"], j["relative_to_max_abs_logit"],
                    j["max_abs_diff_probability"])
                src = shown(j.get("source", os.path.basename(base)), run)
            except (ValueError, KeyError):
                src = os.path.basename(base)[len("check__"):].replace("__", ", ")
                if rc == "skip":
                    text = "skipped: softlab train could not make a checkpoint (%s)" % read(base + ".err").strip()
                else:
                    text = "failed (%s)" % reason(read(base + ".err"), rc)
            w("| %s | %s |" % (esc(src), esc(text)))
        w("")
    if notes:
        for i, n in enumerate(notes, 1):
            w("[^%d]: %s" % (i, esc(n)))
        w("")
    text = "\n".join(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
