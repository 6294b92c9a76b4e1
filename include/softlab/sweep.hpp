#pragma once
// Sweeps: one base config, a grid of --set overrides, optional named variants and a list of
// seeds; every cell × seed is an ordinary run directory under the sweep's folder. This file
// holds what does not need to start processes: reading and validating a sweep file (every
// run's config is resolved before anything runs), the cells and where they live, which runs
// are finished, and the results (results.csv, results.json, results.md with mean ± std over
// seeds per cell). `softlab sweep` runs the cells; `softlab report` adds plots.
//
// The sweep file (keys beyond base/grid/seeds/out are softlab's additions):
//   {"base": "configs/fmnist_vit.json",            config file (relative to the working
//                                                   directory, else to the sweep file)
//    "grid": {"model.attention.type": ["softmax", "sigmoid"], "train.epochs": [5]},
//    "variants": [{"name": "sigmoid b=0", "set": {"model.attention.type": "sigmoid",
//                                                  "model.attention.bias": 0}}, ...],
//    "set": {"train.threads": 1},                  overrides for every run
//    "seeds": [0, 1, 2],
//    "metrics": ["test_top5_accuracy"],            extra summary keys for the tables
//    "out": "runs/sweeps/attention"}
// Runs: variants × (product of the grid's lists) × seeds; grid and variants may each be
// empty, not both.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "softlab/schema.hpp"

namespace softlab {

struct SweepRun {
  std::string cell;       // directory name of the cell: "variant_key=value_..." made file-safe
  std::string variant;    // the variant's name, or empty
  std::vector<std::pair<std::string, json>> values;  // grid key -> value of this cell
  std::vector<std::string> overrides;  // every --set of this run, seed included, in order
  uint64_t seed = 0;
  std::string dir;        // <out>/<cell>/seed<seed>
};

struct Sweep {
  std::string file, base, out;
  json spec;                        // the sweep file as read
  std::vector<std::string> keys;    // grid keys, in file order
  bool has_variants = false;
  std::vector<std::string> metrics; // summary keys reported per cell (defaults + the file's)
  std::vector<SweepRun> runs;       // cell-major, seeds innermost
};

// Reads and validates a sweep file; `out` (when not empty) replaces its "out". Every run's
// config is resolved here, so an unknown key, a bad value or an invalid base fails before
// anything runs, naming the sweep file and the key.
Sweep load_sweep(const std::string& path, const std::string& out = "");

// A finished run has a summary.json whose status is "finished"; its summary, or nothing.
std::optional<json> finished_summary(const SweepRun& run);
inline bool run_finished(const SweepRun& run) { return finished_summary(run).has_value(); }

// One row per run: the variant, every grid key, seed, status and the run's summary metrics
// (absent for runs that have not finished), plus per-length results as "<metric>@<length>",
// and for a run last started by a sweep under mpirun the "rank" and "host" that ran it.
json collect_results(const Sweep& sweep);
// results.json (the rows), results.csv (same rows, one column per key seen), results.md
// (mean ± std over seeds per cell, finished runs only), all written atomically into sweep.out.
void write_results(const Sweep& sweep, const json& rows);
// The Markdown table of write_results, alone.
std::string results_markdown(const Sweep& sweep, const json& rows);
// results.md whole: a title, the sweep's description, the base config and the table.
std::string results_document(const Sweep& sweep, const json& rows, const std::string& title);
// The sweep's title: its "name", else the file's stem.
std::string sweep_title(const Sweep& sweep);

// What the tables and plots print for a grid value: strings bare, the rest as JSON.
std::string value_text(const json& v);
// Mean and sample standard deviation (0 for fewer than two values), as every table and plot
// of a sweep reports them.
struct MeanStd {
  double mean = 0.0, sd = 0.0;
};
MeanStd mean_std(std::span<const double> xs);

}  // namespace softlab
