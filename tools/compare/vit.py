#!/usr/bin/python3
"""A PyTorch ViT with softlab's maths and initialisation, for speed comparisons (compare.sh)
and a cross-check of softlab's forward pass.

Not part of softlab and never part of CI. Run it with Debian's python (/usr/bin/python3),
which has torch (`apt-get install python3-torch libopenblas0-openmp`).

    vit.py bench CONFIG --mode train|infer [--precision fp32|bf16] [--threads T]
                 [--steps N] [--warmup W] [--set KEY=VALUE]... [--omp-wait auto|default] [--json]
    vit.py check (CONFIG.json | CHECKPOINT) --softlab PATH [--threads T] [--images N] [--keep]
    vit.py probe                    # torch version, BLAS, and which kernels bf16 autocast runs

The model is built from a softlab JSON config. Keys the file leaves out get softlab's
defaults (src/config/config_schema.cpp); only model.type "vit", attention "softmax" and
head "softmax" are supported, anything else is refused with exit status 2.

What "the same maths" means here (read from src/nn/*.cpp, src/heads/softmax.cpp,
src/attention/softmax.cpp, src/optim/optim.cpp):
  - patch embedding: non-overlapping p x p patches flattened (c, dy, dx), one linear map
    (written here as a Conv2d with kernel = stride = p, the same maths; its weight is the
    softlab weight [D, C p p] reshaped to [D, C, p, p]);
  - stem "conv": Conv2d(3x3, stride 2, padding 1) - LayerNorm over channels - GELU (tanh),
    halving the image until it is the patch grid, with stem_width, 2 stem_width, ...
    channels, then Linear(last width, D) per grid cell; softlab's conv weight is
    [out, (row, column, channel)], torch's [out, channel, row, column];
  - pool "cls": a learned class token in front, the head sees its final state; "mean":
    no class token, the mean over all tokens;
  - learned positions (trunc normal, std 0.02) added to all tokens, dropout after them;
  - pre-norm blocks: x + drop(ls1 * attn(LN1(x))), h + drop(ls2 * mlp(LN2(h)));
    LayerNorm eps 1e-6 everywhere (blocks, final norm, qk_norm);
  - attention: qkv = one Linear(D, 3D), split [B, N, 3, H, Dh]; optional LayerNorm over Dh
    on q and k; softmax(s q k^T) v with s = Dh^-1/2 unless model.attention.scale is set;
    proj = Linear(D, D);
  - MLP: Linear(D, round(mlp_ratio D)) - GELU (tanh approximation) - Linear;
  - final LayerNorm, pool, head: Linear(D, C), scores / temperature, cross-entropy with
    label smoothing in training (plain cross-entropy in eval);
  - init: trunc normal (std 0.02, cut at +-2) for every Linear weight, the class token and
    the positions; zero biases; LayerNorm gain 1, bias 0; LayerScale = its value; the head
    as nn.Linear's default, U(-1/sqrt(D), 1/sqrt(D)) for weight and bias. The distributions
    are softlab's; the random streams are not (softlab uses its own xoshiro256** generator),
    so the initial weights are not bit-identical: `check` loads weights from a checkpoint
    instead.
  - AdamW (decoupled decay as torch.optim.AdamW, betas/eps from the config); weight decay
    on Linear weights (patch embedding, blocks, head) only, not on biases, norms, the class
    token, the positions or LayerScale; gradient clipping of the global norm (grad_clip,
    0 = off) as torch.nn.utils.clip_grad_norm_.
"""
import argparse
import copy
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib


def _proc_stat(path):
    """(utime + stime, start time) in clock ticks, from /proc/PID/stat."""
    with open(path) as f:
        line = f.read()
    rest = line[line.rindex(")") + 2:].split()  # fields from 3 on; the name may hold spaces
    return int(rest[11]) + int(rest[12]), int(rest[19])


def _young_processes(since):
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cpu, start = _proc_stat("/proc/%s/stat" % name)
            except (OSError, ValueError, IndexError):
                continue
            if start >= since:
                out[name] = cpu
    return out


def configure_openmp_env():
    """softlab's rule for how OpenMP threads wait (src/cli/openmp_env.cpp and
    src/core/load_probe.cpp), applied to this process before torch (and with it libgomp,
    which OpenBLAS's OpenMP build shares) is loaded: sample /proc/stat for 100 ms, leave out
    the CPU time of processes that started less than a second before this one; other load
    under half a core: short spinning (GOMP_SPINCOUNT=10000), else passive waiting
    (OMP_WAIT_POLICY=PASSIVE). A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. Returns what
    was chosen, as softlab reports it."""
    if os.environ.get("OMP_WAIT_POLICY"):
        return "OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"]
    if os.environ.get("GOMP_SPINCOUNT"):
        return "GOMP_SPINCOUNT=" + os.environ["GOMP_SPINCOUNT"]

    def times():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)

    try:
        hz = os.sysconf("SC_CLK_TCK")
        since = max(0, _proc_stat("/proc/self/stat")[1] - hz)
        y0 = _young_processes(since)
        b0, t0 = times()
        time.sleep(0.1)
        b1, t1 = times()
        y1 = _young_processes(since)
    except (OSError, ValueError, IndexError):
        return "libgomp default"
    if t1 <= t0:
        return "libgomp default"
    young = sum(max(0, c - y0.get(pid, 0)) for pid, c in y1.items())
    busy = max(0.0, (b1 - b0 - young) / (t1 - t0) * (os.cpu_count() or 1))
    quiet = busy < 0.5
    if quiet:
        os.environ["GOMP_SPINCOUNT"] = "10000"
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "%s (load from processes older than this one: %.2f cores)" % (
        "spin" if quiet else "passive", int(busy * 100 + 0.5) / 100.0)


# `vit.py bench` waits as softlab does unless told --omp-wait default; decided here, before
# torch loads libgomp, which reads the variables once.
OPENMP_WAIT = "libgomp default"
if len(sys.argv) > 1 and sys.argv[1] == "bench" and not any(
        a == "--omp-wait=default" or (a == "default" and sys.argv[i] == "--omp-wait")
        for i, a in enumerate(sys.argv[1:])):
    OPENMP_WAIT = configure_openmp_env()
elif os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"):
    OPENMP_WAIT = configure_openmp_env()

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # compare.sh checks this first; a direct call gets the same advice
    sys.stderr.write("vit.py: torch is not importable by %s; on Debian: "
                     "apt-get install python3-torch libopenblas0-openmp\n" % sys.executable)
    sys.exit(2)


class ConfigError(Exception):
    """A config this model cannot represent (exit status 2)."""


# ------------------------------------------------------------------------------------------
# Config: softlab's defaults for the keys this model reads (src/config/config_schema.cpp)

DEFAULTS = {
    "seed": 0,
    "data": {"dataset": "fashion-mnist"},
    "model": {"type": "vit", "image_size": 28, "channels": 1, "patch_size": 7, "stem": "patch",
              "stem_width": 16, "dim": 64, "depth": 4,
              "heads": 4, "mlp_ratio": 2.0, "dropout": 0.0, "pool": "cls", "qk_norm": False,
              "layer_scale": None, "num_classes": 0,
              "attention": {"type": "softmax"}, "head": {"type": "softmax"}},
    "train": {"batch_size": 128, "grad_clip": 1.0,
              "optimizer": {"type": "adamw", "lr": 1e-3, "weight_decay": 0.05, "beta1": 0.9,
                            "beta2": 0.999, "eps": 1e-8, "momentum": 0.9, "nesterov": False}},
}
ATTENTION_DEFAULTS = {"softmax": {"scale": None, "causal": False}}
HEAD_DEFAULTS = {"softmax": {"label_smoothing": 0.0, "temperature": 1.0}}


def _fill(dst, defaults):
    for k, v in defaults.items():
        if isinstance(v, dict) and k not in ("attention", "head"):
            dst.setdefault(k, {})
            if not isinstance(dst[k], dict):
                raise ConfigError("%s: expected an object" % k)
            _fill(dst[k], v)
        elif k not in dst:
            dst[k] = copy.deepcopy(v)


def _parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare string, as softlab's --set takes it


def apply_set(cfg, assignment):
    """softlab's --set KEY=VALUE, for plain keys (the value typed as a JSON literal)."""
    if "=" not in assignment:
        raise ConfigError("--set %s: expected KEY=VALUE" % assignment)
    key, text = assignment.split("=", 1)
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = _parse_value(text)


def resolve(cfg):
    """Fills softlab's defaults and refuses what this model does not implement."""
    cfg = copy.deepcopy(cfg)
    _fill(cfg, DEFAULTS)
    m = cfg["model"]
    if m["type"] != "vit":
        raise ConfigError("model.type: '%s' is not supported here (only 'vit')" % m["type"])
    for what, table in (("attention", ATTENTION_DEFAULTS), ("head", HEAD_DEFAULTS)):
        obj = m.get(what)
        if not isinstance(obj, dict) or "type" not in obj:
            raise ConfigError("model.%s: expected an object with a 'type'" % what)
        if obj["type"] not in table:
            raise ConfigError("model.%s.type: '%s' is not supported by tools/compare/vit.py (only %s)"
                              % (what, obj["type"], ", ".join(sorted(table))))
        unknown = set(obj) - set(table[obj["type"]]) - {"type"}
        if unknown:
            raise ConfigError("model.%s: keys %s are not supported for type '%s'"
                              % (what, ", ".join(sorted(unknown)), obj["type"]))
        for k, v in table[obj["type"]].items():
            obj.setdefault(k, v)
    if m["pool"] not in ("cls", "mean"):
        raise ConfigError("model.pool: expected cls or mean, got '%s'" % m["pool"])
    if m["dim"] % m["heads"] != 0:
        raise ConfigError("model.dim (%d) must be divisible by model.heads (%d)" % (m["dim"], m["heads"]))
    if m["image_size"] % m["patch_size"] != 0:
        raise ConfigError("model.image_size (%d) must be divisible by model.patch_size (%d)"
                          % (m["image_size"], m["patch_size"]))
    if m["stem"] not in ("patch", "conv"):
        raise ConfigError("model.stem: expected patch or conv, got '%s'" % m["stem"])
    if m["stem"] == "conv" and not stem_stages(m["image_size"], m["image_size"] // m["patch_size"]):
        raise ConfigError("model.stem 'conv': halving %d pixels never gives the patch grid %d"
                          % (m["image_size"], m["image_size"] // m["patch_size"]))
    opt = cfg["train"]["optimizer"]["type"]
    if opt not in ("adamw", "sgd"):
        raise ConfigError("train.optimizer.type: '%s' is not supported (adamw, sgd)" % opt)
    return cfg


def load_config(path, overrides=()):
    with open(path) as f:
        cfg = json.load(f)
    for a in overrides:
        apply_set(cfg, a)
    return resolve(cfg)


def num_classes(cfg):
    """As softlab bench: model.num_classes, else 100 for cifar100, else 10."""
    n = cfg["model"]["num_classes"]
    if n > 0:
        return n
    return 100 if cfg["data"].get("dataset") == "cifar100" else 10


# ------------------------------------------------------------------------------------------
# The model

LN_EPS = 1e-6


def trunc_normal_(t, std=0.02):
    # softlab: redraw N(0, std) until inside [-2, 2] (absolute bounds, as timm's a=-2, b=2).
    return nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2.0, b=2.0)


def make_linear(i, o):
    lin = nn.Linear(i, o)
    trunc_normal_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, qk_norm, scale, causal):
        super().__init__()
        self.dim, self.heads, self.causal = dim, heads, causal
        self.head_dim = dim // heads
        self.scale = scale if scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.qkv = make_linear(dim, 3 * dim)
        if qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS)
            self.k_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS)
        else:
            self.q_norm = self.k_norm = None
        self.proj = make_linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        t = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = t[0], t[1], t[2]  # [B, H, N, Dh]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        s = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        if self.causal:
            mask = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(mask, float("-inf"))
        o = torch.matmul(s.softmax(dim=-1), v)
        return self.proj(o.transpose(1, 2).reshape(B, N, self.dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = make_linear(dim, hidden)
        self.fc2 = make_linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, dropout, qk_norm, layer_scale, scale, causal):
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, heads, qk_norm, scale, causal)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden)
        if layer_scale:
            self.ls1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.ls2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.ls1 = self.ls2 = None

    def _branch(self, t, g):
        if g is not None:
            t = t * g
        return F.dropout(t, self.dropout, self.training) if self.dropout > 0 else t

    def forward(self, x):
        h = x + self._branch(self.attn(self.norm1(x)), self.ls1)
        return h + self._branch(self.mlp(self.norm2(h)), self.ls2)


class PatchEmbed(nn.Module):
    def __init__(self, channels, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        trunc_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images):  # [B, C, H, W] -> [B, (H/p)(W/p), D], patches row-major
        return self.proj(images).flatten(2).transpose(1, 2)


def softlab_name(name):
    """softlab's name of a parameter: the stem's norms hold their LayerNorm directly."""
    return name.replace(".ln.", ".") if name.startswith("stem.norm.") else name


def stem_stages(size, grid):
    """Halvings (rounding up) from size to grid; 0 when none lands on it (softlab's ConvStem::stages)."""
    n = 0
    while size > grid:
        size, n = (size + 1) // 2, n + 1
    return n if size == grid else 0


class ChannelNorm(nn.Module):  # LayerNorm over the channels of [B, C, H, W]
    def __init__(self, channels):
        super().__init__()
        self.ln = nn.LayerNorm(channels, eps=LN_EPS)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    def __init__(self, channels, image_size, grid, width, dim):
        super().__init__()
        n = stem_stages(image_size, grid)
        widths = [channels] + [width * 2 ** s for s in range(n)]
        self.conv = nn.ModuleList(nn.Conv2d(widths[s], widths[s + 1], 3, stride=2, padding=1) for s in range(n))
        self.norm = nn.ModuleList(ChannelNorm(widths[s + 1]) for s in range(n))
        for c in self.conv:
            trunc_normal_(c.weight)
            nn.init.zeros_(c.bias)
        self.proj = make_linear(widths[-1], dim)

    def forward(self, images):  # [B, C, H, W] -> [B, grid^2, D]
        x = images
        for conv, norm in zip(self.conv, self.norm):
            x = F.gelu(norm(conv(x)), approximate="tanh")
        return self.proj(x.flatten(2).transpose(1, 2))


class ViT(nn.Module):
    def __init__(self, cfg, classes):
        super().__init__()
        m = cfg["model"]
        self.dim, self.dropout = m["dim"], float(m["dropout"])
        grid = m["image_size"] // m["patch_size"]
        if m["stem"] == "conv":
            self.stem = ConvStem(m["channels"], m["image_size"], grid, m["stem_width"], m["dim"])
        else:
            self.patch_embed = PatchEmbed(m["channels"], m["patch_size"], m["dim"])
        use_cls = m["pool"] == "cls"
        tokens = (m["image_size"] // m["patch_size"]) ** 2 + (1 if use_cls else 0)
        self.cls_token = nn.Parameter(trunc_normal_(torch.empty(1, 1, m["dim"]))) if use_cls else None
        self.pos_embed = nn.Parameter(trunc_normal_(torch.empty(1, tokens, m["dim"])))
        hidden = int(m["mlp_ratio"] * m["dim"] + 0.5)
        a = m["attention"]
        self.blocks = nn.ModuleList(
            Block(m["dim"], m["heads"], hidden, self.dropout, m["qk_norm"], m["layer_scale"], a["scale"], a["causal"])
            for _ in range(m["depth"]))
        self.norm = nn.LayerNorm(m["dim"], eps=LN_EPS)
        self.head = nn.Linear(m["dim"], classes)
        bound = 1.0 / math.sqrt(m["dim"])
        nn.init.uniform_(self.head.weight, -bound, bound)
        nn.init.uniform_(self.head.bias, -bound, bound)
        h = m["head"]
        self.inv_temperature = 1.0 / float(h["temperature"])
        self.label_smoothing = float(h["label_smoothing"])

    def features(self, images):
        x = self.stem(images) if hasattr(self, "stem") else self.patch_embed(images)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        if self.training and self.dropout > 0:
            x = F.dropout(x, self.dropout, True)
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        return x[:, 0] if self.cls_token is not None else x.mean(dim=1)

    def forward(self, images):  # the scores
        s = self.head(self.features(images))
        return s * self.inv_temperature if self.inv_temperature != 1.0 else s

    def loss(self, scores, labels):
        return F.cross_entropy(scores.float(), labels,
                               label_smoothing=self.label_smoothing if self.training else 0.0)

    # softlab's parameter names and shapes (Module::state order: registration order).
    def softlab_state(self):
        out = []
        for name, p in self.named_parameters():
            t = p.detach()
            if name == "patch_embed.proj.weight":
                t = t.reshape(t.shape[0], -1)
            elif name.startswith("stem.conv.") and t.dim() == 4:  # [out, c, i, j] -> [out, (i, j, c)]
                t = t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)
            out.append((softlab_name(name), t.contiguous()))
        return out

    def load_softlab_state(self, tensors):
        mine = {softlab_name(n): p for n, p in self.named_parameters()}
        missing = sorted(set(mine) - set(tensors))
        extra = sorted(set(tensors) - set(mine))
        if missing or extra:
            raise ConfigError("checkpoint and model disagree: missing %s, unexpected %s" % (missing, extra))
        with torch.no_grad():
            for name, p in mine.items():
                t = tensors[name]
                if name.startswith("stem.conv.") and p.dim() == 4:  # [out, (i, j, c)] -> [out, c, i, j]
                    t = t.reshape(p.shape[0], p.shape[2], p.shape[3], p.shape[1]).permute(0, 3, 1, 2)
                if t.numel() != p.numel():
                    raise ConfigError("tensor %s: %s in the checkpoint, %s here" % (name, list(t.shape), list(p.shape)))
                p.copy_(t.reshape(p.shape))


def build(cfg, classes=None):
    torch.manual_seed(cfg["seed"])
    return ViT(cfg, classes if classes is not None else num_classes(cfg))


def make_optimizer(cfg, model, lr=None):
    o = cfg["train"]["optimizer"]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # softlab: decay for Linear weights (patch embedding, qkv, proj, fc1, fc2, head) only.
        (decay if name.endswith(".weight") and p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    lr = o["lr"] if lr is None else lr
    if o["type"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    return torch.optim.SGD(groups, lr=lr, momentum=o["momentum"], nesterov=o["nesterov"])


# ------------------------------------------------------------------------------------------
# bench: the figures of `softlab bench`, measured the same way

def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return ""


def cmd_bench(args):
    cfg = load_config(args.config, args.set)
    torch.set_num_threads(args.threads)
    classes = num_classes(cfg)
    model = build(cfg, classes)
    m = cfg["model"]
    shape = (m["channels"], m["image_size"], m["image_size"])
    bf16 = args.precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else None
    out = {"config": cfg.get("name", os.path.splitext(os.path.basename(args.config))[0]), "mode": args.mode,
           "implementation": "pytorch", "precision": args.precision, "threads": torch.get_num_threads(),
           "openmp_wait": OPENMP_WAIT, "torch": torch.__version__,
           "params": sum(p.numel() for p in model.parameters()),
           "loadavg_before": loadavg()}
    g = torch.Generator().manual_seed(1)
    if args.mode == "train":
        B = cfg["train"]["batch_size"]
        images = torch.randn((B,) + shape, generator=g)
        labels = torch.randint(0, classes, (B,), generator=g)
        opt = make_optimizer(cfg, model, lr=1e-4)  # softlab bench steps with lr 1e-4
        clip = float(cfg["train"]["grad_clip"])
        params = [p for p in model.parameters()]
        model.train()

        def step():
            if autocast:
                with autocast():
                    loss = model.loss(model(images), labels)
            else:
                loss = model.loss(model(images), labels)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(args.warmup):
            step()
        t = []
        for _ in range(args.steps):
            s = time.perf_counter()
            step()
            t.append((time.perf_counter() - s) * 1e3)
        step_ms = statistics.median_high(t)
        out.update({"batch_size": B, "step_ms": step_ms, "images_per_sec": 1000.0 * B / step_ms})
    else:
        model.eval()
        one = torch.randn((1,) + shape, generator=g)
        many = torch.randn((256,) + shape, generator=g)

        def fwd(x):
            if autocast:
                with autocast():
                    return model(x)
            return model(x)

        with torch.inference_mode():
            for _ in range(args.warmup):
                fwd(one), fwd(many)
            t1, t256 = [], []
            for _ in range(max(args.steps, 50)):
                s = time.perf_counter()
                fwd(one)
                t1.append((time.perf_counter() - s) * 1e3)
            for _ in range(args.steps):
                s = time.perf_counter()
                fwd(many)
                t256.append((time.perf_counter() - s) * 1e3)
        b256 = statistics.median_high(t256)
        out.update({"batch1_ms": statistics.median_high(t1), "batch256_ms": b256,
                    "batch256_images_per_sec": 256000.0 / b256})
    out["loadavg_after"] = loadavg()
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


# ------------------------------------------------------------------------------------------
# probe: what PyTorch's fp32 and bf16 paths run on (only what is observable)

def _cpu_flags():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return flags


def _probe_inner():
    """Runs a bf16-autocast Linear and matmul, and an fp32 Linear, with oneDNN verbose on;
    the parent reads the verbose lines from this process's stdout."""
    torch.set_num_threads(1)
    x = torch.randn(64, 64)
    lin = nn.Linear(64, 64)
    print("probe:fp32-linear-begin", flush=True)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        y32 = lin(x)
    print("probe:fp32-linear-end", flush=True)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = lin(x)
            z = torch.matmul(x.reshape(4, 16, 64), x.reshape(4, 64, 16))
    sys.stdout.flush()
    print("probe:dtypes %s %s %s" % (y32.dtype, y.dtype, z.dtype), flush=True)
    maps = ""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        pass
    libs = sorted({line.split()[-1] for line in maps.splitlines()
                   if any(k in line for k in ("blas", "mkl", "lapack", "gomp", "dnnl"))})
    print("probe:libs " + json.dumps(libs), flush=True)


def probe():
    info = {"torch": torch.__version__, "python": sys.executable, "mkldnn_available": torch.backends.mkldnn.is_available()}
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        line = line.strip()
        if line.startswith("- CPU capability usage:"):
            info["cpu_capability"] = line.split(":", 1)[1].strip()
        if "BLAS_INFO=" in line:
            info["blas_info"] = line.split("BLAS_INFO=", 1)[1].split(",", 1)[0]
        if line.startswith("- Intel(R) MKL-DNN") or line.startswith("- Intel(R) oneDNN") or line.startswith("- MKL-DNN"):
            info["onednn"] = line.lstrip("- ").strip()
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        info["ATEN_CPU_CAPABILITY"] = os.environ["ATEN_CPU_CAPABILITY"]
    try:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "_probe_inner"], capture_output=True,
                           text=True, timeout=120)
        lines = r.stdout.splitlines()
        isa = [l.split("isa:", 1)[1] for l in lines if l.startswith("onednn_verbose,info,cpu,isa:")]
        info["onednn_isa"] = isa[0] if isa else None
        in_fp32 = False
        fp32_impls, bf16_impls = [], []
        for l in lines:
            if l == "probe:fp32-linear-begin":
                in_fp32 = True
            elif l == "probe:fp32-linear-end":
                in_fp32 = False
            elif l.startswith("onednn_verbose,exec,cpu,"):
                f = l.split(",")
                (fp32_impls if in_fp32 else bf16_impls).append("%s:%s" % (f[3], f[4]))
            elif l.startswith("probe:dtypes"):
                info["autocast_output_dtypes"] = l.split(" ", 1)[1]
            elif l.startswith("probe:libs"):
                info["loaded_libs"] = json.loads(l.split(" ", 1)[1])
        info["fp32_linear_onednn_kernels"] = sorted(set(fp32_impls))
        info["bf16_autocast_onednn_kernels"] = sorted(set(bf16_impls))
        if r.returncode != 0:
            info["probe_error"] = r.stderr.strip().splitlines()[-1:] or ["exit %d" % r.returncode]
    except (OSError, subprocess.SubprocessError) as e:
        info["probe_error"] = str(e)
    flags = _cpu_flags()
    info["cpu_flags"] = {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}
    kernels = info.get("bf16_autocast_onednn_kernels") or []
    hw = [k for k in kernels if "bf16" in k.split(":", 1)[-1] or "amx" in k]
    if hw:
        verdict = "yes: oneDNN ran bf16 kernels %s" % ", ".join(sorted(set(hw)))
    elif kernels:
        verdict = "no: oneDNN ran %s (no bf16/AMX ISA in the kernel names)" % ", ".join(kernels)
    else:
        verdict = "unknown: no oneDNN kernel was reported under autocast (ATen's own bf16 kernels?)"
    info["bf16_on_hardware"] = verdict
    return info


def cmd_probe(args):
    print(json.dumps(probe(), indent=None if args.json else 2))
    return 0


# ------------------------------------------------------------------------------------------
# check: softlab's forward pass against this one, on the same weights and images

def read_checkpoint(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode())
    meta = json.loads(header["__metadata__"]["softlab"])
    base = 8 + n
    tensors = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] != "F32":
            raise ConfigError("tensor %s is %s, expected F32" % (name, v["dtype"]))
        a, b = v["data_offsets"]
        t = torch.frombuffer(bytearray(blob[base + a:base + b]), dtype=torch.float32) if b > a else torch.empty(0)
        tensors[name] = t.reshape(v["shape"]).clone()
    return meta, tensors


def write_checkpoint(path, named, meta):
    """softlab's checkpoint layout (src/train/checkpoint.cpp): u64 header length, JSON header
    padded with spaces to 8 bytes, raw little-endian float32 data; metadata as one JSON string
    under __metadata__.softlab with format, version, CRC-32 and byte count of the data."""
    datas, header_t, off, crc = [], {}, 0, 0
    for name, t in named:
        b = t.detach().float().contiguous().numpy().tobytes() if hasattr(t, "numpy") else bytes(t)
        header_t[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        crc = zlib.crc32(b, crc)
        datas.append(b)
    meta = dict(meta)
    meta.update({"format": "softlab-checkpoint", "version": 1, "data_crc32": crc & 0xFFFFFFFF, "data_bytes": off})
    header = {"__metadata__": {"softlab": json.dumps(meta)}}
    header.update(header_t)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in datas:
            f.write(b)


def write_inputs(directory, images_u8, channels, size):
    """Images softlab predict reads: an IDX image file for one channel, CIFAR-10 binary
    records for 3 x 32 x 32."""
    n = images_u8.shape[0]
    raw = images_u8.contiguous().numpy().tobytes()
    if channels == 1:
        path = os.path.join(directory, "inputs.idx3")
        with open(path, "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", n, size, size) + raw)
        return path
    if channels == 3 and size == 32:
        path = os.path.join(directory, "inputs.bin")
        per = 3 * 32 * 32
        with open(path, "wb") as f:
            for i in range(n):
                f.write(bytes([0]) + raw[i * per:(i + 1) * per])
        return path
    raise ConfigError("check: no softlab predict input format for %d x %d x %d images (IDX: 1 channel; "
                      "CIFAR records: 3 x 32 x 32)" % (channels, size, size))


def cmd_check(args):
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="softlab-check-")
    try:
        return _check(args, work)
    finally:
        if args.keep:
            sys.stderr.write("check: files kept in %s\n" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _check(args, work):
    if args.source.endswith(".json"):
        # A config: this model's own initialisation, exported in softlab's layout. The
        # normalisation is arbitrary but not the identity, so it is exercised too.
        cfg = load_config(args.source, args.set)
        classes = num_classes(cfg)
        model = build(cfg, classes)
        # Perturb the zero-initialised biases and unit gains so that every tensor matters.
        with torch.no_grad():
            g = torch.Generator().manual_seed(7)
            for name, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn(p.shape, generator=g))
        C = cfg["model"]["channels"]
        raw_cfg = json.load(open(args.source))
        for a in args.set:
            apply_set(raw_cfg, a)
        meta = {"config": raw_cfg,
                "data": {"num_classes": classes, "mean": [0.3 + 0.1 * c for c in range(C)],
                         "std": [0.25 + 0.05 * c for c in range(C)], "train_size": 50000,
                         "class_names": [], "channels": C}}
        ckpt = os.path.join(work, "model.ckpt")
        write_checkpoint(ckpt, [("model." + n, t) for n, t in model.softlab_state()], meta)
        source = "%s (vit.py's init, exported)" % args.source
    else:
        ckpt = args.source
        meta, tensors = read_checkpoint(ckpt)
        cfg = resolve(meta["config"])
        classes = meta["data"]["num_classes"]
        model = build(cfg, classes)
        model.load_softlab_state({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        source = ckpt
    model.eval()
    m = cfg["model"]
    C, S = m["channels"], m["image_size"]
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (args.images, C, S, S), generator=g, dtype=torch.uint8)
    inputs = write_inputs(work, images, C, S)
    # softlab's loader: (v / 255 - mean) / std in float32, per channel.
    mean = torch.tensor(meta["data"].get("mean") or [0.0] * C, dtype=torch.float32).reshape(1, C, 1, 1)
    std = torch.tensor(meta["data"].get("std") or [1.0] * C, dtype=torch.float32).reshape(1, C, 1, 1)
    x = (images.float() / 255.0 - mean) / std
    with torch.no_grad():
        scores = model(x).double()
    cmd = [args.softlab, "predict", "--checkpoint", ckpt, "--json", "--threads", str(args.threads), inputs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("check: %s failed (exit %d): %s\n" % (" ".join(cmd), r.returncode, r.stderr.strip()))
        return r.returncode if r.returncode in (1, 2) else 1
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    if len(rows) != args.images:
        sys.stderr.write("check: softlab predict printed %d rows for %d images\n" % (len(rows), args.images))
        return 1
    sl_class = torch.tensor([row["class"] for row in rows])
    sl_score = torch.tensor([row["score"] for row in rows], dtype=torch.float64)
    sl_prob = torch.tensor([row["probabilities"] for row in rows], dtype=torch.float64)
    pt_prob = scores.softmax(dim=1)
    pt_class = scores.argmax(dim=1)
    pt_score = scores.gather(1, sl_class.reshape(-1, 1)).reshape(-1)
    # log-probabilities are the logits up to a per-row constant.
    dlogp = (sl_prob.clamp_min(1e-300).log() - scores.log_softmax(dim=1)).abs()
    dlogp = dlogp[sl_prob > 1e-6].max().item() if (sl_prob > 1e-6).any() else 0.0
    dscore = (sl_score - pt_score).abs().max().item()
    rel = dscore / max(scores.abs().max().item(), 1e-12)
    dprob = (sl_prob - pt_prob).abs().max().item()
    agree = int((sl_class == pt_class).sum().item())
    ok = rel < args.tol and dprob < args.tol and dlogp < 10 * args.tol
    result = {"source": source, "images": args.images, "classes": classes,
              "argmax_agree": "%d/%d" % (agree, args.images),
              "max_abs_diff_logit_of_predicted_class": dscore, "relative_to_max_abs_logit": rel,
              "max_abs_diff_probability": dprob, "max_abs_diff_log_probability": dlogp,
              "tolerance": args.tol, "ok": ok}
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="training images/s or inference latency/throughput, as softlab bench")
    b.add_argument("config")
    b.add_argument("--mode", choices=["train", "infer"], default="train")
    b.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: torch.autocast('cpu', dtype=torch.bfloat16) around forward + loss")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--steps", type=int, default=20, help="timed steps (train) or batches (infer)")
    b.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--json", action="store_true", help="one line of JSON")
    b.add_argument("--omp-wait", choices=["auto", "default"], default="auto",
                   help="auto: softlab's choice of OpenMP waiting from the machine's load; default: libgomp's")
    c = sub.add_parser("check", help="compare logits with softlab predict on the same weights")
    c.add_argument("source", help="a softlab checkpoint, or a config (.json) whose init is exported")
    c.add_argument("--softlab", required=True, help="the softlab binary")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--images", type=int, default=16)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tol", type=float, default=1e-4)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--keep", action="store_true", help="keep the checkpoint and image files written")
    q = sub.add_parser("probe", help="torch version, BLAS, and the kernels bf16 autocast runs")
    q.add_argument("--json", action="store_true")
    sub.add_parser("_probe_inner")
    args = p.parse_args(argv)
    try:
        if args.cmd == "bench":
            if args.steps <= 0 or args.warmup < 0:
                raise ConfigError("--steps must be > 0 and --warmup >= 0")
            return cmd_bench(args)
        if args.cmd == "check":
            return cmd_check(args)
        if args.cmd == "probe":
            return cmd_probe(args)
        _probe_inner()
        return 0
    except ConfigError as e:
        sys.stderr.write("vit.py: %s\n" % e)
        return 2
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write("vit.py: %s: %s\n" % (type(e).__name__, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
