// softlab report SWEEP_DIR: report.md and SVG plots from a sweep's run directories.
//
// Reads <dir>/sweep.json (written by softlab sweep), re-collects every run (so a sweep that is
// still running, or was interrupted, can be reported), rewrites results.{csv,json,md} and adds:
//   accuracy_per_epoch.svg   test accuracy after each evaluation, mean over seeds, per cell
//   accuracy_per_minute.svg  the same against minutes of training (time to accuracy)
//   train_loss_per_epoch.svg the training loss of those epochs (log scale)
//   test_loss_per_epoch.svg  the test loss after each evaluation
//   accuracy_vs_length.svg   accuracy at each evaluation length (sequence tasks), ± std
//   loss_vs_length.svg       the same for the test loss
//   time_vs_tokens.svg       seconds per training step against tokens per example, and
//   memory_vs_tokens.svg     peak resident memory, when the sweep varies the sequence length
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "report/svg_plot.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/sweep.hpp"

namespace softlab::cli {

namespace fs = std::filesystem;

namespace {

// Mean and sample std of the values gathered for each x.
struct Stat {
  std::map<double, std::vector<double>> at;
  void add(double x, double y) {
    if (std::isfinite(x) && std::isfinite(y)) at[x].push_back(y);
  }
  report::Series series(const std::string& label, double scale) const {
    report::Series s;
    s.label = label;
    for (const auto& [x, ys] : at) {
      const MeanStd ms = mean_std(ys);
      s.x.push_back(x);
      s.y.push_back(ms.mean * scale);
      s.err.push_back(ms.sd * scale);
    }
    return s;
  }
};

// A grid key that changes the number of tokens (x axis of the cost plots, not a series).
bool length_like(const std::string& key) {
  return key.find("length") != std::string::npos || key.find("patch_size") != std::string::npos ||
         key.find("image_size") != std::string::npos;
}

// A legend entry: the variant and the grid values (named by their last key part when more
// than one thing varies), without the length keys when those are the x axis.
std::string label_of(const Sweep& s, const SweepRun& r, bool drop_length_keys) {
  auto kept = [&](const std::string& k) { return !(drop_length_keys && length_like(k)); };
  size_t varying = s.has_variants ? 1 : 0;
  for (const auto& k : s.keys) varying += kept(k);
  std::string l = r.variant;
  for (const auto& [k, v] : r.values) {
    if (!kept(k)) continue;
    l += (l.empty() ? "" : ", ") + (varying > 1 ? k.substr(k.rfind('.') + 1) + "=" : "") + value_text(v);
  }
  return l.empty() ? "all" : l;
}

void write_plot(const fs::path& dir, const std::string& file, const report::PlotSpec& spec,
                const std::vector<report::Series>& series, std::vector<std::string>& written) {
  write_file_atomic((dir / file).string(), report::svg_line_plot(spec, series));
  written.push_back(file);
}

}  // namespace

int cmd_report(int argc, char** argv) {
  cxxopts::Options opts("softlab report", "Tables and SVG plots of a sweep's results");
  opts.positional_help("SWEEP_DIR");
  opts.add_options()("dir", "the sweep's folder (holds sweep.json)", cxxopts::value<std::string>())(
      "title", "title of report.md and the plots", cxxopts::value<std::string>())("h,help", "show this help");
  opts.parse_positional({"dir"});
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  SOFTLAB_CHECK(r.count("dir"), "report: no sweep folder given (softlab report SWEEP_DIR)");
  const fs::path dir = r["dir"].as<std::string>();
  const fs::path spec_file = dir / "sweep.json";
  SOFTLAB_CHECK(fs::exists(spec_file), "report: ", spec_file.string(),
                " not found: SWEEP_DIR is the folder softlab sweep wrote (its \"out\")");
  const Sweep s = load_sweep(spec_file.string(), dir.string());
  const json rows = collect_results(s);
  write_results(s, rows);
  // Without a "name", the folder names the report (the copied file is always sweep.json).
  const std::string title =
      r.count("title") ? r["title"].as<std::string>() : s.spec.value("name", dir.filename().string());

  std::vector<std::string> plots;
  // Accuracy and training loss per epoch, from each finished or partial run's metrics.jsonl.
  {
    std::vector<std::string> order;
    std::map<std::string, Stat> by_cell, loss_by_cell, test_loss_by_cell;
    // Per cell and epoch: minutes of training so far and the accuracy, one entry per seed.
    std::map<std::string, std::map<double, std::pair<std::vector<double>, std::vector<double>>>> minutes;
    for (const SweepRun& run : s.runs) {
      const fs::path m = fs::path(run.dir) / "metrics.jsonl";
      if (!fs::exists(m)) continue;
      const std::string label = label_of(s, run, false);
      if (!by_cell.count(label)) order.push_back(label);
      std::ifstream in(m);
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        const json j = json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("epoch")) continue;
        if (j.contains("test_accuracy")) by_cell[label].add(j["epoch"].get<double>(), j["test_accuracy"].get<double>());
        if (j.contains("test_accuracy") && j.contains("seconds")) {
          auto& [mins, accs] = minutes[label][j["epoch"].get<double>()];
          mins.push_back(j["seconds"].get<double>() / 60.0);
          accs.push_back(j["test_accuracy"].get<double>());
        }
        if (j.contains("train_loss")) loss_by_cell[label].add(j["epoch"].get<double>(), j["train_loss"].get<double>());
        if (j.contains("test_loss"))
          test_loss_by_cell[label].add(j["epoch"].get<double>(), j["test_loss"].get<double>());
      }
    }
    std::vector<report::Series> series, losses, test_losses;
    for (const auto& l : order) {
      series.push_back(by_cell[l].series(l, 100.0));
      losses.push_back(loss_by_cell[l].series(l, 1.0));
      test_losses.push_back(test_loss_by_cell[l].series(l, 1.0));
    }
    if (!series.empty()) {
      write_plot(dir, "accuracy_per_epoch.svg", {title + ": test accuracy per epoch", "epoch", "test accuracy (%)"},
                 series, plots);
      // Time to accuracy: each epoch's point sits at the mean over seeds of the training
      // minutes so far (metrics "seconds": training without evaluation, all sessions).
      std::vector<report::Series> per_minute;
      for (const auto& l : order) {
        report::Series ps;
        ps.label = l;
        for (const auto& [epoch, v] : minutes[l]) {
          const MeanStd t = mean_std(v.first), a = mean_std(v.second);
          ps.x.push_back(t.mean);
          ps.y.push_back(100.0 * a.mean);
          ps.err.push_back(100.0 * a.sd);
        }
        per_minute.push_back(ps);
      }
      write_plot(dir, "accuracy_per_minute.svg",
                 {title + ": test accuracy against training time", "minutes of training", "test accuracy (%)"},
                 per_minute, plots);
      // Log scale: a loss falling towards float32's floor (softmax collapse) stays visible.
      report::PlotSpec pl{title + ": training loss per epoch", "epoch", "training loss (mean over the epoch)"};
      pl.log_y = true;
      write_plot(dir, "train_loss_per_epoch.svg", pl, losses, plots);
      // The test loss shows overfitting (a rising NLL) that accuracy hides.
      write_plot(dir, "test_loss_per_epoch.svg", {title + ": test loss per epoch", "epoch", "test loss"},
                 test_losses, plots);
    }
  }
  // Accuracy and loss against evaluation length (rows with "accuracy@<length>").
  {
    std::vector<std::string> order;
    std::map<std::string, Stat> acc, loss;
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string label = label_of(s, s.runs[i], false);
      for (const auto& [k, v] : rows[i].items()) {
        const size_t at = k.find('@');
        if (at == std::string::npos || !v.is_number()) continue;
        if (!acc.count(label) && !loss.count(label)) order.push_back(label);
        const double len = std::stod(k.substr(at + 1));
        if (k.substr(0, at) == "accuracy") acc[label].add(len, v.get<double>());
        if (k.substr(0, at) == "loss") loss[label].add(len, v.get<double>());
      }
    }
    if (!order.empty()) {
      std::vector<report::Series> sa, sl;
      for (const auto& l : order) {
        sa.push_back(acc[l].series(l, 100.0));
        sl.push_back(loss[l].series(l, 1.0));
      }
      report::PlotSpec pa{title + ": accuracy against evaluation length", "evaluation length (tokens)", "test accuracy (%)"};
      pa.log_x = true;
      write_plot(dir, "accuracy_vs_length.svg", pa, sa, plots);
      report::PlotSpec pl{title + ": loss against evaluation length", "evaluation length (tokens)", "test loss"};
      pl.log_x = true;
      write_plot(dir, "loss_vs_length.svg", pl, sl, plots);
    }
  }
  // Cost against tokens per example, when the sweep varies them.
  {
    std::set<double> tokens;
    for (const auto& row : rows)
      if (row.contains("tokens")) tokens.insert(row["tokens"].get<double>());
    if (tokens.size() > 1) {
      std::vector<std::string> order;
      std::map<std::string, Stat> time, mem;
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i]["status"] != "finished") continue;
        const std::string label = label_of(s, s.runs[i], true);
        if (!time.count(label)) order.push_back(label);
        const double t = rows[i]["tokens"].get<double>();
        time[label].add(t, rows[i].value("seconds_per_step", NAN));
        mem[label].add(t, rows[i].value("peak_rss_mb", NAN));
      }
      std::vector<report::Series> st, sm;
      for (const auto& l : order) {
        st.push_back(time[l].series(l, 1000.0));
        sm.push_back(mem[l].series(l, 1.0));
      }
      report::PlotSpec pt{title + ": time per training step", "tokens per example", "ms per step (training only)"};
      pt.log_x = pt.log_y = true;
      write_plot(dir, "time_vs_tokens.svg", pt, st, plots);
      report::PlotSpec pm{title + ": peak memory", "tokens per example", "peak resident memory (MiB)"};
      pm.log_x = true;
      write_plot(dir, "memory_vs_tokens.svg", pm, sm, plots);
    }
  }

  std::string md = results_document(s, rows, title) + "\n";
  for (const auto& p : plots) md += "![" + p + "](" + p + ")\n\n";
  write_file_atomic((dir / "report.md").string(), md);
  std::cout << md;
  std::cout << "report: " << (dir / "report.md").string() << " and " << plots.size() << " plot"
            << (plots.size() == 1 ? "" : "s") << "\n";
  return 0;
}

}  // namespace softlab::cli
