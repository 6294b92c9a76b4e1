#pragma once
// The run configuration: JSON files layered as defaults < file < --set overrides, validated
// strictly (unknown keys, wrong types, out-of-range values, cross-field rules) before any
// work starts. Errors name the JSON path, what was expected and what was found.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "softlab/data.hpp"
#include "softlab/precision.hpp"
#include "softlab/schema.hpp"

namespace softlab {

// One element of train.optimizer.groups: the parameters whose dotted names `match` selects
// (first matching group wins; softlab/optim.hpp, param_settings) get these settings instead of
// the optimizer's. Unset fields keep the optimizer's value; lr and lr_scale exclude each other.
struct ParamGroup {
  std::string match;
  std::optional<double> lr;            // peak learning rate, on the run's schedule
  std::optional<double> lr_scale;      // multiplies the scheduled learning rate
  std::optional<double> weight_decay;  // for the group's parameters that decay
};

struct OptimizerConfig {
  std::string type = "adamw";  // adamw | sgd
  double lr = 1e-3;
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  double momentum = 0.9;                           // sgd
  bool nesterov = false;                           // sgd
  std::vector<ParamGroup> groups;                  // per-parameter settings; empty: none
};

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | step
  double warmup_epochs = 0;     // linear warm-up from 0, for every type
  double min_lr = 0.0;          // cosine floor
  double step_epochs = 30;      // step: multiply by gamma every step_epochs
  double gamma = 0.1;
};

struct Config {
  std::string name;
  uint64_t seed = 0;
  struct Data {
    std::string dataset;
    std::optional<std::string> path;
    Augment augment;
    int64_t subset = 0;  // class-balanced training subset of this size; 0: the whole set
    // The synthetic:<task> keys of this section (task empty for image data sets).
    SyntheticOptions synthetic;
  } data;
  struct Model {
    std::string type = "vit";
    int64_t image_size = 28, channels = 1, patch_size = 7;
    std::string stem = "patch";  // vit: patch | conv (softlab/nn/layers.hpp, ConvStem)
    int64_t stem_width = 16;     // conv stem: channels of the first convolution
    int64_t dim = 64, depth = 4, heads = 4;
    double mlp_ratio = 2.0;
    double dropout = 0.0;
    std::string pool = "cls";  // cls | mean
    std::string positions = "rope";  // seq: rope | learned | none
    double rope_theta = 10000.0;     // seq
    bool causal = false;             // query i sees keys 0..i (default: true for seq, false for vit)
    std::string target = "all";      // seq: all | last
    bool qk_norm = false;      // LayerNorm over Dh on q and k before the attention module
    double layer_scale = 0.0;  // initial per-channel residual scale; 0: off
    double drop_path = 0.0;    // stochastic depth rate of the last block (linear in depth); 0: off
    // The attention branch's extras (softlab/nn/block.hpp); all off by default.
    bool attn_gate = false;
    int64_t value_conv = 0;                      // kernel size; 0: off
    std::string value_conv_groups = "channel";  // channel | head
    bool attn_out_norm = false;
    int64_t num_classes = 0;   // 0: from the data set
    json attention;            // {"type": ..., params...} validated against the registry
    json head;
  } model;
  struct Train {
    int64_t epochs = 5, batch_size = 128;
    OptimizerConfig optimizer;
    ScheduleConfig schedule;
    double grad_clip = 1.0;  // 0: off
    int64_t accumulate = 1;  // loader batches per optimiser step
    double ema = 0.0;        // weight EMA decay; 0: off
    int threads = 0;         // 0: physical cores
    Precision precision = Precision::fp32;  // of matrix products (softlab/precision.hpp)
    int64_t eval_every = 1;  // epochs
    int64_t max_steps = 0;   // 0: no cap (smoke runs)
    int64_t max_batches_per_epoch = 0;  // 0: no cap
    int64_t max_eval_batches = 0;       // 0: the whole test set
    int64_t eval_batch_size = 256;
    // Mid-epoch saves of last.ckpt (epoch ends always save): after this many minutes or
    // optimiser steps since the last save; 0 turns either off.
    double checkpoint_minutes = 10.0;
    int64_t checkpoint_steps = 0;
    bool skip_nonfinite_steps = false;  // train.on_nonfinite = "skip_step" (else "stop")
  } train;
  struct Output {
    std::string dir;
  } output;
  json resolved;  // the complete, validated config (what config.json in the run directory holds)
};

// Parses a JSON file whose top level is an object; a syntax error names the file, line and
// column, and a repeated key (which JSON would silently collapse) is an error naming its path.
json read_json_file(const std::string& path);
// Applies "a.b.c=value"; the value is typed by the schema of that key (numbers, true/false,
// null, strings without quotes, or any JSON literal such as [1,2]). A list of objects
// (train.optimizer.groups) takes a JSON list, or an index: "groups[1]={...}" replaces element
// 1, "groups[1].lr=0.01" sets a key of it, and the index one past the end appends an element.
// Keys inside model.attention / model.head are typed by the schema of the type in effect.
// Setting model.attention.type (or model.head.type) to a different type drops the keys that
// belong to the old type's schema and not to the new one (they came from the base file and
// would otherwise make the switch impossible); keys that neither type knows stay, so
// validation still reports them.
void apply_override(json& cfg, const std::string& assignment);
// Applies several overrides: first those that set model.attention.type / model.head.type (or
// replace those objects), then the rest in the given order, so that a parameter override is
// checked against the final type whatever the order on the command line. Later wins.
void apply_overrides(json& cfg, const std::vector<std::string>& assignments);
// Overrides for running a trained model: "model.attention.KEY=VALUE" or "model.head.KEY=VALUE"
// where KEY is inference_safe in that module's schema (the weights stay valid). Any other
// key is an Error naming it and listing the keys that may change. Returns `resolved` with
// them applied, resolved again.
json apply_inference_overrides(const json& resolved, const std::vector<std::string>& assignments);
// The part of that check that needs no config: KEY is under model.attention or model.head
// (an Error naming it otherwise), so a command can refuse it before reading a checkpoint.
void check_inference_override_path(const std::string& key);
// Fills defaults and validates everything; returns the resolved config: the user's keys in
// the user's order, then the missing ones with their defaults, output.dir filled with
// runs/<name> when absent. Idempotent: resolve_config(resolve_config(c)) == resolve_config(c).
json resolve_config(const json& cfg);
// resolve_config for a config saved in a run directory or checkpoint, which may come from
// an earlier softlab: keys whose meaning moved are translated to what that run did.
json resolve_saved_config(const json& saved);
// Builds the typed Config from a resolved config (it resolves again, which is cheap and
// idempotent, so an unresolved config is validated rather than misread).
Config parse_config(const json& resolved);
// read_json_file + apply_overrides + resolve_config + parse_config. A config without "name"
// gets the file's stem (before the overrides, so --set name=... still wins).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// A JSON pointer, as json::diff reports paths ("/model/dim"), as the dotted key path that
// messages and --set use ("model.dim"); array indices print as "[i]"
// ("/data/eval_lengths/0" -> "data.eval_lengths[0]"); "" (the whole config) stays "".
std::string dotted_key_path(const std::string& json_pointer);

// The synthetic task a config's data section describes ("synthetic:<task>" and its keys).
SyntheticOptions synthetic_options(const Config& cfg);

// The whole config schema as JSON, with types, defaults, ranges and help lines, for
// `softlab info` and the docs: objects are {"type": "object", "help", "keys": {...}}, leaves
// are param_spec_json(), model.attention / model.head are {"type": "registry", "keys",
// "variants": {name: schema_json(...)}}, train.optimizer.groups is {"type": "list", "help",
// "default": [], "example": [...], "element": {"type": "object", "keys": {...}}}.
json config_schema_json();

// The training recipe as resolved (augmentation, mixing, subset, dropout, drop path, label
// smoothing, accumulation, EMA), several lines of text; `softlab validate` prints it.
std::string recipe_summary(const Config& cfg);

}  // namespace softlab
