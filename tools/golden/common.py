"""Shared plumbing of the golden-value generators (tools/golden/attention.py, heads.py, block.py).

Not a script: the generators import it (from their own directory) and keep only their maths
and cases. What is here is the same for all of them:

- per-case seeding: a torch generator seeded with the CRC-32 of the case name, so adding or
  removing a case leaves the others' draws unchanged;
- float32 rounding of every drawn value (`to_f32_values`), so the C++ test, which reads the
  values into float32 tensors, evaluates at exactly the same point;
- the reference self-test helpers: `gradcheck` (finite differences at fixed settings) and
  `tolerance_ratio` (the float32 self-check's measure);
- output: compact JSON, numbers with 10 significant digits (`fmt_number`, `fmt_list`,
  `fmt_ints`, `fmt_tensor`, `fmt_object`);
- `main`, the command line (`--check`, `--selftest`, `--out`) and the idempotent writing:
  a file is rewritten only when its text changes, and files no case produces are deleted.

Run the generators with Debian's python (`/usr/bin/python3`), which has torch.
"""
import argparse
import json
import math
import os
import zlib

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def golden_dir(name):
    """tests/golden/<name>, the default output directory of a generator."""
    return os.path.join(ROOT, "tests", "golden", name)


# ------------------------------------------------------------------------------------------
# Draws

def case_generator(name):
    """The case's own torch generator, seeded with the CRC-32 of its name."""
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def to_f32_values(t):
    """float64 tensor holding exactly float32-representable values."""
    return t.float().double()


# ------------------------------------------------------------------------------------------
# Checks of the reference

def gradcheck(f, inputs):
    """torch gradcheck of f at copies of `inputs` (float64 tensors), all differentiated."""
    args = [t.clone().requires_grad_(True) for t in inputs]
    return torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


def tolerance_ratio(a, b, tol):
    """max over elements of |a - b| / (atol + rtol |b|)."""
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).abs() / (tol["atol"] + tol["rtol"] * b.abs())).max().item() if a.numel() else 0.0


def f32_warning(ratio):
    """The --check warning appended to a case's line when float32 uses more than half the tolerance."""
    return "  WARNING: float32 needs more than half the tolerance" if ratio > 0.5 else ""


# ------------------------------------------------------------------------------------------
# Output: compact JSON, numbers with 10 significant digits.

def fmt_number(x):
    x = float(x)
    if not math.isfinite(x):
        raise ValueError("non-finite value in golden data")
    return "%.10g" % x


def fmt_list(t):
    return "[" + ", ".join(fmt_number(x) for x in t.detach().flatten().tolist()) + "]"


def fmt_ints(t):
    return "[" + ", ".join(str(int(x)) for x in t.flatten().tolist()) + "]"


def fmt_tensor(name, value, grad=None):
    """One entry of a "params" or "buffers" object: shape, value and (for parameters) grad."""
    text = '    %s: {"shape": %s, "value": %s' % (json.dumps(name), json.dumps(list(value.shape)), fmt_list(value))
    if grad is not None:
        text += ', "grad": %s' % fmt_list(grad)
    return text + "}"


def fmt_object(key, entries, last):
    """A top-level key holding one `fmt_tensor` entry per line ({} when there are none)."""
    comma = "" if last else ","
    if not entries:
        return '  %s: {}%s' % (json.dumps(key), comma)
    return '  %s: {\n' % json.dumps(key) + ",\n".join(entries) + "\n  }" + comma


def header_lines(c, tol):
    """The opening lines every golden file shares: case, config, context, shape, tolerance."""
    lines = ["{"]
    lines.append('  "case": %s,' % json.dumps(c["name"]))
    lines.append('  "config": %s,' % json.dumps(c["config"]))
    lines.append('  "context": %s,' % json.dumps(c["context"]))
    lines.append('  "shape": %s,' % json.dumps(c["shape"]))
    if tol is not None:
        lines.append('  "tolerance": %s,' % json.dumps(tol))
    return lines



def render_tensors(c, inputs, params, res, tol, input_keys, output_keys):
    """A whole golden file of the attention and block kind: the header, the inputs, the
    outputs and gradients, and the parameters with their gradients."""
    lines = header_lines(c, tol)
    for key in input_keys:
        lines.append('  "%s": %s,' % (key, fmt_list(inputs[key])))
    for key in output_keys:
        lines.append('  "%s": %s,' % (key, fmt_list(res[key])))
    lines.append(fmt_object("params", [fmt_tensor(n, v, res["params"][n]) for n, v in params.items()], last=True))
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate_case(c, make_inputs, evaluate, render, tolerances):
    """Inputs, the float64 evaluation and the file text of case c, plus what --check needs."""
    inputs, params = make_inputs(c)
    res = evaluate(c, inputs, params, torch.float64)
    tol = tolerances.get(c["name"])
    return render(c, inputs, params, res, tol), (inputs, params, res, tol)

def write_if_changed(path, text):
    """Writes `text` to `path` (atomically) unless it already holds it; returns the status
    "unchanged", "updated" or "written"."""
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if old == text:
        return "unchanged"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return "updated" if old is not None else "written"


# ------------------------------------------------------------------------------------------
# The command line

def main(doc, out_dir, cases, generate, check, selftest, check_help, selftest_help, name_width, status_width=0):
    """Parses --check, --selftest and --out, then either runs `selftest()` (it prints its
    results and returns whether all passed; this prints the verdict and writes nothing) or
    writes one file per case, with one line per case, and deletes the stale ones.

    generate(c) -> (text, state): the file's text, and what `check` needs;
    check(c, state) -> (ratio, suffix): the case's float32 ratio to its tolerance and what
    --check appends to its line. Returns the exit status."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--check", action="store_true", help=check_help)
    ap.add_argument("--selftest", action="store_true", help=selftest_help)
    ap.add_argument("--out", default=out_dir, help="output directory (default %s)" % os.path.relpath(out_dir, ROOT))
    args = ap.parse_args()

    torch.set_num_threads(1)  # deterministic reductions
    if args.selftest:
        ok = selftest()
        print("selftest", "passed" if ok else "FAILED")
        return 0 if ok else 1
    os.makedirs(args.out, exist_ok=True)
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    worst_f32 = 0.0
    for c in cases:
        text, state = generate(c)
        status = write_if_changed(os.path.join(args.out, c["name"] + ".json"), text)
        line = "%-*s %6d bytes  %-*s" % (name_width, c["name"] + ".json", len(text), status_width, status)
        if args.check:
            ratio, suffix = check(c, state)
            worst_f32 = max(worst_f32, ratio)
            line += suffix
        print(line)
    for f in sorted(os.listdir(args.out)):
        if f.endswith(".json") and f[:-5] not in names:
            os.remove(os.path.join(args.out, f))
            print("removed stale", f)
    if args.check:
        print("worst float32/float64 ratio to tolerance: %.3f" % worst_f32)
    return 0
