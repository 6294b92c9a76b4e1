// The run config's schema, written as one table (the keys of DESIGN.md's "The config" are a
// contract: add keys here, never rename them). Defaults here are the defaults everywhere:
// the typed Config in config.hpp mirrors them, and a test checks that the two agree.
#include "config/config_schema.hpp"

#include "config/registries.hpp"
#include "softlab/config.hpp"

namespace softlab::config_detail {

namespace {
using T = ParamType;

// Upper bounds of the size keys. They are far above anything a CPU trains in a day, and
// they keep every size within the C++ type that reads it (the memory estimate of
// memory_estimate.cpp then refuses what this machine cannot hold).
constexpr double kMaxTokens = 65536.0;       // tokens per sequence
constexpr double kMaxExamples = 1e8;         // examples of a data set or subset
constexpr double kMaxClasses = 1e6;          // classes and vocabularies
constexpr double kMaxBatch = 65536.0;        // examples per batch

Node leaf(ParamSpec p) {
  Node n;
  n.kind = Node::Kind::Param;
  n.name = p.name;
  n.help = p.help;
  n.param = std::move(p);
  return n;
}

Node object(std::string name, std::string help, std::vector<Node> children) {
  Node n;
  n.kind = Node::Kind::Object;
  n.name = std::move(name);
  n.help = std::move(help);
  n.children = std::move(children);
  return n;
}

// A list of objects with the keys `element`; `example` is one element, for messages and help.
Node list(std::string name, std::string help, std::string example, std::vector<Node> element) {
  Node n = object(std::move(name), std::move(help), std::move(element));
  n.kind = Node::Kind::List;
  n.example = std::move(example);
  return n;
}

// `name` is also the registry it reads: "attention" or "head".
Node registry(std::string name, std::string help, std::string type_help) {
  Node n;
  n.kind = Node::Kind::Registry;
  n.name = name;
  n.registry = std::move(name);
  n.help = std::move(help);
  n.children.push_back(leaf({.name = "type", .type = T::String, .default_value = "softmax", .help = std::move(type_help)}));
  return n;
}

Node build() {
  return object("", "a softlab run", {
    leaf({.name = "name", .type = T::String, .default_value = "run",
          .help = "run name; default: the config file's name without extension"}),
    leaf({.name = "seed", .type = T::Int, .default_value = 0, .min = 0.0, .max = 18446744073709551615.0,
          .help = "seeds every random stream (init, data order, augmentation, dropout)"}),
    object("data", "the data set", {
      leaf({.name = "dataset", .type = T::String,
            .choices = {"mnist", "fashion-mnist", "cifar10", "cifar100", "synthetic:recall", "synthetic:bins",
                        "synthetic:modadd"},
            .help = "which data set; synthetic:<task> generates token sequences from the seed (docs/synthetic.md)",
            .required = true}),
      leaf({.name = "path", .type = T::String, .default_value = nullptr,
            .help = "directory holding the files; null: $SOFTLAB_DATA_DIR/<dataset>, then datasets/<dataset>",
            .nullable = true}),
      // Synthetic tasks only (docs/synthetic.md); 0 means the task's default.
      leaf({.name = "train_length", .type = T::Int, .default_value = 0, .min = 0.0, .max = kMaxTokens,
            .help = "synthetic: tokens per training sequence; 0: the task's default (recall 64, bins 16, modadd 3)"}),
      leaf({.name = "eval_lengths", .type = T::IntList, .default_value = json::array(), .min = 1.0, .max = kMaxTokens,
            .help = "synthetic: also evaluate on test sequences of these lengths (metrics per length)"}),
      leaf({.name = "min_length", .type = T::Int, .default_value = nullptr, .min = 4.0, .max = kMaxTokens,
            .help = "synthetic:recall: variable lengths: each training and test sequence at the training length is "
                    "min_length..train_length tokens long, right-padded with a padding token; null: all full length",
            .nullable = true}),
      leaf({.name = "train_size", .type = T::Int, .default_value = 0, .min = 0.0, .max = kMaxExamples,
            .help = "synthetic: training sequences; 0: the task's default (recall 20000, bins 4000)"}),
      leaf({.name = "test_size", .type = T::Int, .default_value = 0, .min = 0.0, .max = kMaxExamples,
            .help = "synthetic: test sequences per evaluation length; 0: the task's default (1000)"}),
      leaf({.name = "keys", .type = T::Int, .default_value = 128, .min = 2.0, .max = kMaxClasses,
            .help = "synthetic:recall: distinct key tokens (a sequence of length n holds n/4 distinct keys)"}),
      leaf({.name = "values", .type = T::Int, .default_value = 16, .min = 2.0, .max = kMaxClasses,
            .help = "synthetic:recall: distinct value tokens (the classes)"}),
      leaf({.name = "bins", .type = T::Int, .default_value = 50, .min = 2.0, .max = kMaxClasses,
            .help = "synthetic:bins: ordered bins over [-1, 1] (the classes)"}),
      leaf({.name = "permute_labels", .type = T::Bool, .default_value = false,
            .help = "synthetic:bins: relabel the bins by a fixed random permutation (removes their order)"}),
      leaf({.name = "modulus", .type = T::Int, .default_value = 97, .min = 2.0, .max = 4096.0,
            .help = "synthetic:modadd: p in (a + b) mod p"}),
      leaf({.name = "train_fraction", .type = T::Float, .default_value = 0.4, .min = 0.0, .max = 1.0,
            .min_exclusive = true, .max_exclusive = true,
            .help = "synthetic:modadd: fraction of the p*p pairs used for training (the rest is the test set)"}),
      leaf({.name = "subset", .type = T::Int, .default_value = 0, .min = 0.0, .max = kMaxExamples,
            .help = "train on a class-balanced subset of this many training images, the same in every epoch "
                    "(drawn from seed); 0: the whole training set"}),
      // The recipe keys (docs/training.md, "Augmentation and mixing"); all default to off.
      // Per image: random_resized_crop, shift, trivial_augment, hflip, normalise, random_erasing;
      // then mixup or cutmix over the batch.
      object("augment", "training-time augmentation and mixing (image data sets only)", {
        leaf({.name = "random_crop", .type = T::Int, .default_value = 0, .min = 0.0, .max = 64.0,
              .help = "pad by this many pixels, then crop back at a random offset; 0: off"}),
        leaf({.name = "hflip", .type = T::Bool, .default_value = false,
              .help = "flip horizontally with probability 1/2"}),
        leaf({.name = "translate", .type = T::Int, .default_value = 0, .min = 0.0, .max = 31.0,
              .help = "shift by up to this many pixels each way, zeros filling in (random_crop's shifts; set "
                      "one of the two); 0: off"}),
        leaf({.name = "random_resized_crop", .type = T::Bool, .default_value = false,
              .help = "crop a box of area rrc_scale and width/height rrc_ratio, resize it back bilinearly "
                      "(torchvision RandomResizedCrop)"}),
        leaf({.name = "rrc_scale", .type = T::FloatList, .default_value = json::array({0.35, 1.0}), .min = 0.0,
              .max = 1.0, .min_exclusive = true,
              .help = "random_resized_crop: [min, max] fraction of the image's area"}),
        leaf({.name = "rrc_ratio", .type = T::FloatList, .default_value = json::array({0.75, 4.0 / 3.0}),
              .min = 0.0, .max = 10.0, .min_exclusive = true,
              .help = "random_resized_crop: [min, max] width/height of the box, drawn log-uniformly"}),
        leaf({.name = "trivial_augment", .type = T::Bool, .default_value = false,
              .help = "TrivialAugment: one op per image (TrivialAugmentWide's list; geometric ranges narrowed "
                      "for 28-32 px images), magnitude uniform over 31 bins"}),
        leaf({.name = "random_erasing", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
              .help = "probability of replacing one rectangle (2-33% of the image, aspect 0.3-3.3) with "
                      "normal noise after normalisation (timm); 0: off"}),
        leaf({.name = "mixup", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 100.0,
              .help = "mixup: Beta(alpha, alpha) of the share each image keeps when blended with the "
                      "reversed batch (timm; DeiT's recipe: 0.8); 0: off"}),
        leaf({.name = "cutmix", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 100.0,
              .help = "CutMix: Beta(alpha, alpha) of the area each image keeps when a box of the reversed "
                      "batch is pasted in (timm; DeiT's recipe: 1.0); 0: off"}),
        leaf({.name = "mix_prob", .type = T::Float, .default_value = 1.0, .min = 0.0, .max = 1.0,
              .help = "mixup/cutmix: probability that a batch is mixed (unmixed ones get one-hot targets)"}),
        leaf({.name = "switch_prob", .type = T::Float, .default_value = 0.5, .min = 0.0, .max = 1.0,
              .help = "with both mixup and cutmix: probability that a mixed batch uses CutMix"}),
      }),
    }),
    object("model", "the network", {
      leaf({.name = "type", .type = T::String, .default_value = "vit", .choices = {"vit", "seq"},
            .help = "vit: images; seq: token sequences (synthetic tasks)"}),
      leaf({.name = "image_size", .type = T::Int, .default_value = 28, .min = 1.0, .max = 4096.0,
            .help = "input height and width in pixels; must match the data set"}),
      leaf({.name = "channels", .type = T::Int, .default_value = 1, .choices = {"1", "3"},
            .help = "input channels; must match the data set"}),
      leaf({.name = "patch_size", .type = T::Int, .default_value = 7, .min = 1.0, .max = 4096.0,
            .help = "side of a square patch; must divide image_size"}),
      leaf({.name = "stem", .type = T::String, .default_value = "patch", .choices = {"patch", "conv"},
            .help = "vit: how pixels become tokens: patch (one linear map per patch) or conv (3x3 stride-2 "
                    "convolutions with LayerNorm and GELU down to the patch grid, then a 1x1 convolution; Xiao "
                    "et al. 2021)"}),
      leaf({.name = "stem_width", .type = T::Int, .default_value = 16, .min = 1.0, .max = 4096.0,
            .help = "stem conv: channels of the first convolution, doubled by each next one"}),
      leaf({.name = "dim", .type = T::Int, .default_value = 64, .min = 1.0, .max = 8192.0,
            .help = "token width; must be divisible by heads"}),
      leaf({.name = "depth", .type = T::Int, .default_value = 4, .min = 1.0, .max = 256.0,
            .help = "transformer blocks"}),
      leaf({.name = "heads", .type = T::Int, .default_value = 4, .min = 1.0, .max = 256.0,
            .help = "attention heads per block"}),
      leaf({.name = "mlp_ratio", .type = T::Float, .default_value = 2.0, .min = 0.0, .max = 64.0, .min_exclusive = true,
            .help = "MLP hidden width = mlp_ratio * dim"}),
      leaf({.name = "dropout", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
            .max_exclusive = true, .help = "dropout probability in the blocks (training only)"}),
      leaf({.name = "pool", .type = T::String, .default_value = "cls", .choices = {"cls", "mean"},
            .help = "what the head sees: the class token or the mean of the patch tokens"}),
      leaf({.name = "positions", .type = T::String, .default_value = "rope", .choices = {"rope", "learned", "none"},
            .help = "seq: rotary embedding of q and k, a learned table (as long as the longest evaluation), or none"}),
      leaf({.name = "rope_theta", .type = T::Float, .default_value = 10000.0, .min = 1.0,
            .help = "seq: RoPE base; pair i of a head turns by position * theta^(-2i/head_dim)"}),
      leaf({.name = "causal", .type = T::Bool, .default_value = nullptr,
            .help = "query i sees keys 0..i only; the one causality key (the attention module follows it; its "
                    "registry entry says whether it has a causal form); null: true for seq, false for vit",
            .nullable = true}),
      leaf({.name = "target", .type = T::String, .default_value = "all", .choices = {"all", "last"},
            .help = "seq: the head sees every position that has a target, or the last position only"}),
      leaf({.name = "qk_norm", .type = T::Bool, .default_value = false,
            .help = "LayerNorm (eps 1e-6) over each head's q and k before the attention module"}),
      leaf({.name = "layer_scale", .type = T::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
            .help = "LayerScale: initial value of a learnable per-channel scale on each residual branch; "
                    "null: off", .nullable = true}),
      leaf({.name = "drop_path", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
            .max_exclusive = true,
            .help = "stochastic depth: the last block drops each residual branch per example with this "
                    "probability, block i of d with i/(d-1) of it (training only); 0: off"}),
      leaf({.name = "attn_gate", .type = T::Bool, .default_value = false,
            .help = "MALA's output gate: the attention output (plus the value conv) times a linear map of the "
                    "block input, before the output projection"}),
      leaf({.name = "value_conv", .type = T::Int, .default_value = nullptr, .min = 1.0, .max = 31.0,
            .help = "vit: a depthwise k x k conv (k odd) of V over the patch grid, added to the attention output "
                    "(MALA's LePE: 5, per channel; SOFT: 3-9, per head); null: off", .nullable = true}),
      leaf({.name = "value_conv_groups", .type = T::String, .default_value = "channel", .choices = {"channel", "head"},
            .help = "value_conv: one kernel per channel with a bias (LePE) or one per head shared by its "
                    "channels, no bias (SOFT)"}),
      leaf({.name = "attn_out_norm", .type = T::Bool, .default_value = false,
            .help = "hybrid norm (sigmoid attention): LayerNorm (eps 1e-6) on the attention branch's output "
                    "before the residual add"}),
      leaf({.name = "num_classes", .type = T::Int, .default_value = 0, .min = 0.0, .max = kMaxClasses,
            .help = "classes; 0: from the data set"}),
      registry("attention", "the attention module: {\"type\": name, ...its parameters}",
               "a registered attention module (softlab info lists them)"),
      registry("head", "the classifier head: {\"type\": name, ...its parameters}",
               "a registered head (softlab info lists them)"),
    }),
    object("train", "training", {
      leaf({.name = "epochs", .type = T::Int, .default_value = 5, .min = 1.0, .max = 1e6,
            .help = "passes over the training set"}),
      leaf({.name = "batch_size", .type = T::Int, .default_value = 128, .min = 1.0, .max = kMaxBatch,
            .help = "training batch size"}),
      leaf({.name = "eval_batch_size", .type = T::Int, .default_value = 256, .min = 1.0, .max = kMaxBatch,
            .help = "evaluation batch size (memory only; results do not depend on it)"}),
      object("optimizer", "the optimiser", {
        leaf({.name = "type", .type = T::String, .default_value = "adamw", .choices = {"adamw", "sgd"},
              .help = "adamw (decoupled weight decay) or sgd (momentum)"}),
        leaf({.name = "lr", .type = T::Float, .default_value = 1e-3, .min = 0.0, .min_exclusive = true,
              .help = "peak learning rate"}),
        leaf({.name = "weight_decay", .type = T::Float, .default_value = 0.05, .min = 0.0,
              .help = "weight decay (decoupled for adamw)"}),
        leaf({.name = "beta1", .type = T::Float, .default_value = 0.9, .min = 0.0, .max = 1.0, .max_exclusive = true,
              .help = "adamw: first-moment decay"}),
        leaf({.name = "beta2", .type = T::Float, .default_value = 0.999, .min = 0.0, .max = 1.0,
              .max_exclusive = true, .help = "adamw: second-moment decay"}),
        leaf({.name = "eps", .type = T::Float, .default_value = 1e-8, .min = 0.0, .min_exclusive = true,
              .help = "adamw: added to the root of the second moment"}),
        leaf({.name = "momentum", .type = T::Float, .default_value = 0.9, .min = 0.0, .max = 1.0,
              .max_exclusive = true, .help = "sgd: momentum"}),
        leaf({.name = "nesterov", .type = T::Bool, .default_value = false, .help = "sgd: Nesterov momentum"}),
        // Per-parameter settings (docs/training.md, "Parameter groups"); the patterns are
        // checked against the model's parameter names when it is built.
        list("groups", "parameter groups: the first group whose match selects a parameter sets its lr or lr_scale "
             "and weight_decay; the rest keep lr and weight_decay above",
             R"({"match": "*.attn.attn.*", "lr": 0.01})", {
          leaf({.name = "match", .type = T::String,
                .help = "dotted parameter names: a glob (* any characters, dots included; ? one character) that "
                        "matches a whole name or a module holding it (blocks.0 takes blocks.0.*)",
                .required = true}),
          leaf({.name = "lr", .type = T::Float, .default_value = nullptr, .min = 0.0,
                .help = "the group's peak learning rate, on the schedule of train.optimizer.lr (lr_scale = lr / "
                        "train.optimizer.lr); null: not set", .nullable = true}),
          leaf({.name = "lr_scale", .type = T::Float, .default_value = nullptr, .min = 0.0,
                .help = "multiplies the scheduled learning rate (0 freezes the group); null: not set (1, or from lr)",
                .nullable = true}),
          leaf({.name = "weight_decay", .type = T::Float, .default_value = nullptr, .min = 0.0,
                .help = "weight decay of the group's parameters that decay (biases, norm gains, embeddings and "
                        "temperatures never do); null: train.optimizer.weight_decay", .nullable = true}),
        }),
      }),
      object("schedule", "the learning-rate schedule", {
        leaf({.name = "type", .type = T::String, .default_value = "cosine", .choices = {"constant", "cosine", "step"},
              .help = "shape of the learning rate after warm-up"}),
        leaf({.name = "warmup_epochs", .type = T::Float, .default_value = 0.0, .min = 0.0,
              .help = "linear warm-up from 0, for every type; fractions of an epoch allowed"}),
        leaf({.name = "min_lr", .type = T::Float, .default_value = 0.0, .min = 0.0, .help = "cosine: final learning rate"}),
        leaf({.name = "step_epochs", .type = T::Float, .default_value = 30.0, .min = 0.0, .min_exclusive = true,
              .help = "step: multiply by gamma every step_epochs"}),
        leaf({.name = "gamma", .type = T::Float, .default_value = 0.1, .min = 0.0, .max = 1.0, .min_exclusive = true,
              .help = "step: factor"}),
      }),
      leaf({.name = "grad_clip", .type = T::Float, .default_value = 1.0, .min = 0.0,
            .help = "clip the global gradient norm to this; 0: off"}),
      leaf({.name = "accumulate", .type = T::Int, .default_value = 1, .min = 1.0, .max = 4096.0,
            .help = "batches per optimiser step (gradient accumulation): the step sees batch_size x "
                    "accumulate examples"}),
      leaf({.name = "ema", .type = T::Float, .default_value = 0.0, .min = 0.0, .max = 1.0, .max_exclusive = true,
            .help = "decay of an exponential moving average of the weights, evaluated beside them and saved "
                    "in checkpoints (warm-up: min(ema, (1+t)/(10+t)) at step t); 0: off"}),
      leaf({.name = "threads", .type = T::Int, .default_value = 0, .min = 0.0, .max = 4096.0,
            .help = "OpenMP threads; 0: the default (OMP_NUM_THREADS, else physical cores in the affinity mask, capped by a cgroup CPU quota)"}),
      leaf({.name = "precision", .type = T::String, .default_value = "fp32", .choices = {"fp32", "bf16"},
            .help = "matrix products: fp32, or bf16 inputs with f32 accumulation (needs AVX512-BF16 or AMX)"}),
      leaf({.name = "eval_every", .type = T::Int, .default_value = 1, .min = 1.0, .max = 1e6,
            .help = "evaluate every this many epochs"}),
      leaf({.name = "max_steps", .type = T::Int, .default_value = 0, .min = 0.0,
            .help = "stop after this many optimiser steps; 0: no cap (smoke runs)"}),
      leaf({.name = "max_batches_per_epoch", .type = T::Int, .default_value = 0, .min = 0.0,
            .help = "cap on batches per epoch; 0: no cap (debugging)"}),
      leaf({.name = "max_eval_batches", .type = T::Int, .default_value = 0, .min = 0.0,
            .help = "evaluate on the first this many test batches only; 0: the whole test set (cost sweeps)"}),
      object("checkpoint_every", "mid-epoch saves of last.ckpt (every epoch end saves too), whichever comes first", {
        leaf({.name = "minutes", .type = T::Float, .default_value = 10.0, .min = 0.0,
              .help = "save after this many minutes of training since the last save; 0: off"}),
        leaf({.name = "steps", .type = T::Int, .default_value = 0, .min = 0.0,
              .help = "save after this many optimiser steps since the last save; 0: off"}),
      }),
      leaf({.name = "on_nonfinite", .type = T::String, .default_value = "stop", .choices = {"stop", "skip_step"},
            .help = "a non-finite loss or gradient norm: stop the run (exit 3), or skip that step's update "
                    "(counted in metrics.jsonl); a non-finite evaluation always stops"}),
    }),
    object("output", "where the run is written", {
      // null means "derived": resolve_config fills runs/<name>, for a null in a file and for
      // --set output.dir=null alike.
      leaf({.name = "dir", .type = T::String, .default_value = nullptr, .help = "run directory; null: runs/<name>",
            .nullable = true}),
    }),
  });
}

json node_json(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Param: return param_spec_json(n.param);
    case Node::Kind::Object: {
      json keys = json::object();
      for (const auto& c : n.children) keys[c.name] = node_json(c);
      return json{{"type", "object"}, {"help", n.help}, {"keys", keys}};
    }
    case Node::Kind::List: {
      json keys = json::object();
      for (const auto& c : n.children) keys[c.name] = node_json(c);
      return json{{"type", "list"}, {"help", n.help}, {"default", json::array()},
                  {"example", json::array({json::parse(n.example)})},
                  {"element", {{"type", "object"}, {"keys", keys}}}};
    }
    case Node::Kind::Registry: {
      ParamSpec type = n.type_spec();
      type.choices = registry_types(n);
      json variants = json::object();
      for (const auto& t : type.choices) variants[t] = schema_json(registry_schema(n, t, n.name + ".type"));
      return json{{"type", "registry"}, {"registry", n.registry}, {"help", n.help},
                  {"keys", {{"type", param_spec_json(type)}}}, {"variants", variants}};
    }
  }
  return nullptr;
}
}  // namespace

const Node* Node::child(const std::string& key) const {
  for (const auto& c : children)
    if (c.name == key) return &c;
  return nullptr;
}

std::vector<std::string> Node::child_names() const {
  std::vector<std::string> names;
  for (const auto& c : children) names.push_back(c.name);
  return names;
}

const Node& config_schema() {
  static const Node root = build();
  return root;
}

Schema registry_schema(const Node& node, const std::string& type, const std::string& path) {
  return node.registry == "head" ? head_schema(type, path) : attention_schema(type, path);
}

std::vector<std::string> registry_types(const Node& node) {
  return node.registry == "head" ? head_types() : attention_types();
}

std::string unknown_module_key(const Node& node, const std::string& type, const Schema& schema,
                               const std::string& path, const std::string& key) {
  std::vector<std::string> valid{"type"};
  for (const auto& s : schema) valid.push_back(s.name);
  std::string msg = unknown_key_message(path, key, valid) + " (the parameters of " + node.registry + " '" + type + "')";
  if (node.registry != "head" && key == "causal")
    msg += "; causality is set by model.causal (the attention module follows it)";
  return msg;
}

}  // namespace softlab::config_detail

namespace softlab {
json config_schema_json() { return config_detail::node_json(config_detail::config_schema()); }
}  // namespace softlab
