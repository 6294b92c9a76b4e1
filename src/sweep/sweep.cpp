// Sweep files, their runs and their results tables (include/softlab/sweep.hpp).
#include "softlab/sweep.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace fs = std::filesystem;

std::string value_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

MeanStd mean_std(std::span<const double> xs) {
  MeanStd r;
  if (xs.empty()) return r;
  for (double x : xs) r.mean += x;
  r.mean /= static_cast<double>(xs.size());
  double var = 0.0;
  for (double x : xs) var += (x - r.mean) * (x - r.mean);
  r.sd = xs.size() > 1 ? std::sqrt(var / static_cast<double>(xs.size() - 1)) : 0.0;
  return r;
}

namespace {

constexpr size_t kMaxCellName = 200;  // bytes of a cell's directory name ("seed<n>" goes below it)

// A file-safe piece of a directory name: keeps [A-Za-z0-9._=+-], maps the rest to '_'.
std::string file_safe(const std::string& s) {
  std::string r;
  for (char c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '=' || c == '+' ||
                    c == '-';
    r += ok ? c : '_';
  }
  return r;
}

// "model.attention.type" -> "attention.type": the section prefix says little in a name.
std::string short_key(const std::string& key) {
  for (const char* p : {"model.", "train.", "data."})
    if (key.rfind(p, 0) == 0 && key.size() > std::string(p).size()) return key.substr(std::string(p).size());
  return key;
}

// The error_code forms of exists(): a name too long for the file system is "not there", not
// an exception.
bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

std::string resolve_base(const std::string& base, const std::string& sweep_file) {
  if (path_exists(base) || fs::path(base).is_absolute()) return base;
  const fs::path beside = fs::path(sweep_file).parent_path() / base;
  return path_exists(beside) ? beside.string() : base;
}

void check_keys(const json& spec, const std::string& file) {
  static const std::set<std::string> known = {"base", "grid", "variants", "set", "seeds", "metrics", "out", "name",
                                              "description"};
  for (const auto& [k, v] : spec.items())
    SOFTLAB_CHECK(known.count(k), file, ": unknown key '", text_excerpt(k),
                  "' (a sweep file has base, grid, variants, set, seeds, metrics, out, name, description)");
}

std::vector<std::string> set_overrides(const json& obj, const std::string& where) {
  SOFTLAB_CHECK(obj.is_object(), where, ": expected an object of KEY: VALUE overrides, found ", describe_value(obj));
  std::vector<std::string> r;
  for (const auto& [k, v] : obj.items()) r.push_back(k + "=" + value_text(v));
  return r;
}

// One Markdown table cell, " text |", appended in place.
void add_cell(std::string& md, const std::string& text) { md.append(" ").append(text).append(" |"); }

double number_or_nan(const json& j) { return j.is_number() ? j.get<double>() : NAN; }

}  // namespace

Sweep load_sweep(const std::string& path, const std::string& out) {
  Sweep s;
  s.file = path;
  s.spec = read_json_file(path);
  const json& j = s.spec;
  check_keys(j, path);
  SOFTLAB_CHECK(j.contains("base") && j["base"].is_string(), path, ": 'base' must name a config file");
  s.base = resolve_base(j["base"].get<std::string>(), path);
  SOFTLAB_CHECK(path_exists(s.base), path, ": base config ", text_excerpt(j["base"].get<std::string>(), 1000),
                " not found (looked in the working directory and beside the sweep file)");
  SOFTLAB_CHECK(!j.contains("out") || j["out"].is_string(), path, ": 'out' must be a directory name, found ",
                describe_value(j["out"]));
  s.out = !out.empty() ? out : j.value("out", std::string());
  SOFTLAB_CHECK(!s.out.empty(), path, ": 'out' is missing: say where the sweep's run directories go (or pass --out)");
  // Run directories are recorded in results.json, which holds UTF-8 only.
  SOFTLAB_CHECK(is_valid_utf8(s.out), path, ": the output directory '", text_excerpt(s.out),
                "' (--out or 'out') is not UTF-8; results.json could not name the runs in it");
  for (const char* k : {"name", "description"})
    SOFTLAB_CHECK(!j.contains(k) || j[k].is_string(), path, ": '", k, "' must be a string, found ",
                  describe_value(j[k]));

  // Seeds.
  SOFTLAB_CHECK(j.contains("seeds") && j["seeds"].is_array() && !j["seeds"].empty(), path,
                ": 'seeds' must be a non-empty list of integers, e.g. [0, 1, 2]");
  std::vector<uint64_t> seeds;
  for (const auto& x : j["seeds"]) {
    SOFTLAB_CHECK(x.is_number_unsigned(), path, ": seeds: expected non-negative integers, found ", describe_value(x));
    seeds.push_back(x.get<uint64_t>());
  }
  SOFTLAB_CHECK(std::set<uint64_t>(seeds.begin(), seeds.end()).size() == seeds.size(), path,
                ": seeds: a seed is listed twice");

  // Grid: an object of non-empty lists; the cells are their product.
  const json grid = j.value("grid", json::object());
  SOFTLAB_CHECK(grid.is_object(), path, ": 'grid' must be an object of KEY: [values...]");
  std::vector<std::vector<json>> lists;
  for (const auto& [k, v] : grid.items()) {
    SOFTLAB_CHECK(v.is_array() && !v.empty(), path, ": grid.", text_excerpt(k),
                  ": expected a non-empty list of values, found ", describe_value(v));
    SOFTLAB_CHECK(k != "seed", path, ": grid.seed: list the seeds under 'seeds'");
    s.keys.push_back(k);
    lists.emplace_back(v.begin(), v.end());
  }
  // Variants: named sets of overrides.
  struct Variant {
    std::string name;
    std::vector<std::string> sets;
  };
  std::vector<Variant> variants;
  if (j.contains("variants")) {
    SOFTLAB_CHECK(j["variants"].is_array() && !j["variants"].empty(), path,
                  ": 'variants' must be a non-empty list of {\"name\": ..., \"set\": {...}}");
    std::set<std::string> names;
    for (size_t i = 0; i < j["variants"].size(); ++i) {
      const json& v = j["variants"][i];
      const std::string where = path + ": variants[" + std::to_string(i) + "]";
      SOFTLAB_CHECK(v.is_object() && v.contains("name") && v["name"].is_string() && !v["name"].get<std::string>().empty(),
                    where, ": expected {\"name\": \"...\", \"set\": {KEY: VALUE, ...}}");
      for (const auto& [k, x] : v.items())
        SOFTLAB_CHECK(k == "name" || k == "set", where, ": unknown key '", text_excerpt(k),
                      "' (a variant has name and set)");
      Variant var{v["name"].get<std::string>(), set_overrides(v.value("set", json::object()), where + ".set")};
      SOFTLAB_CHECK(names.insert(var.name).second, where, ": the name '", text_excerpt(var.name), "' is used twice");
      variants.push_back(var);
    }
    s.has_variants = true;
  }
  const std::vector<std::string> common = set_overrides(j.value("set", json::object()), path + ": set");
  SOFTLAB_CHECK(!lists.empty() || !variants.empty(), path,
                ": the grid is empty: give 'grid' at least one key with values (or 'variants')");
  if (variants.empty()) variants.push_back({});

  s.metrics = {"test_accuracy", "best_test_accuracy", "test_loss", "train_seconds"};
  if (j.contains("metrics")) {
    SOFTLAB_CHECK(j["metrics"].is_array(), path, ": 'metrics' must be a list of summary keys");
    for (const auto& m : j["metrics"]) {
      SOFTLAB_CHECK(m.is_string(), path, ": metrics: expected strings, found ", describe_value(m));
      if (std::find(s.metrics.begin(), s.metrics.end(), m.get<std::string>()) == s.metrics.end())
        s.metrics.push_back(m.get<std::string>());
    }
  }

  // Enumerate: variants, then the grid's product (last key fastest), then seeds.
  size_t cells = 1;
  for (const auto& l : lists) cells *= l.size();
  std::set<std::string> cell_names;
  for (const Variant& var : variants) {
    for (size_t c = 0; c < cells; ++c) {
      SweepRun proto;
      proto.variant = var.name;
      std::vector<std::string> name_parts;
      if (!var.name.empty()) name_parts.push_back(var.name);
      std::vector<std::string> ovs = common;
      ovs.insert(ovs.end(), var.sets.begin(), var.sets.end());
      size_t rest = c;
      std::vector<size_t> idx(lists.size());
      for (size_t k = lists.size(); k-- > 0;) {
        idx[k] = rest % lists[k].size();
        rest /= lists[k].size();
      }
      for (size_t k = 0; k < lists.size(); ++k) {
        const json& v = lists[k][idx[k]];
        proto.values.emplace_back(s.keys[k], v);
        ovs.push_back(s.keys[k] + "=" + value_text(v));
        name_parts.push_back(short_key(s.keys[k]) + "=" + value_text(v));
      }
      std::string name;
      for (const auto& p : name_parts) name += (name.empty() ? "" : "_") + p;
      proto.cell = file_safe(name);
      // A file system takes names of up to 255 bytes; a longer one would fail at mkdir.
      SOFTLAB_CHECK(proto.cell.size() <= kMaxCellName, path, ": the cell directory name '", text_excerpt(proto.cell),
                    "' is ", proto.cell.size(), " bytes, more than ", kMaxCellName,
                    " (made of the variant name and the grid values): shorten them");
      SOFTLAB_CHECK(cell_names.insert(proto.cell).second, path, ": two cells share the directory name '",
                    text_excerpt(proto.cell), "' (repeated grid values or variant names?)");
      for (uint64_t seed : seeds) {
        SweepRun r = proto;
        r.seed = seed;
        r.overrides = ovs;
        r.overrides.push_back("seed=" + std::to_string(seed));
        r.dir = (fs::path(s.out) / r.cell / ("seed" + std::to_string(seed))).string();
        s.runs.push_back(r);
      }
    }
  }
  // Every run's config must resolve before anything runs.
  for (const SweepRun& r : s.runs) {
    try {
      (void)load_config(s.base, r.overrides);
    } catch (const Error& e) {
      throw Error(detail::cat(path, ": cell '", text_excerpt(r.cell), "' (base ", s.base, "): ", e.what()), e.kind());
    }
  }
  return s;
}

std::optional<json> finished_summary(const SweepRun& run) {
  const fs::path p = fs::path(run.dir) / "summary.json";
  if (!path_exists(p)) return std::nullopt;
  try {
    json s = read_json_file(p.string());
    if (s.value("status", "") == "finished") return s;
  } catch (const Error&) {
  }
  return std::nullopt;
}

namespace {
// Under mpirun each run records the rank (and machine) that ran it last
// (<run dir>/sweep_rank.json); rows of runs that never ran under mpirun have no such keys.
void add_rank(json& row, const SweepRun& r) {
  const fs::path p = fs::path(r.dir) / "sweep_rank.json";
  if (!path_exists(p)) return;
  try {
    const json j = read_json_file(p.string());
    for (const char* k : {"rank", "host"})
      if (j.contains(k)) row[k] = j[k];
  } catch (const Error&) {  // a torn or foreign file says nothing about the results
  }
}
}  // namespace

json collect_results(const Sweep& sweep) {
  json rows = json::array();
  for (const SweepRun& r : sweep.runs) {
    json row = json::object();
    if (sweep.has_variants) row["variant"] = r.variant;
    for (const auto& [k, v] : r.values) row[k] = v;
    row["seed"] = r.seed;
    row["dir"] = r.dir;
    const std::optional<json> summary = finished_summary(r);
    if (!summary) {
      row["status"] = path_exists(fs::path(r.dir) / "last.ckpt") ? "partial" : "missing";
      add_rank(row, r);
      rows.push_back(row);
      continue;
    }
    const json& sum = *summary;
    row["status"] = "finished";
    for (const char* k : {"test_accuracy", "best_test_accuracy", "test_loss", "test_top3_accuracy",
                          "test_top5_accuracy", "epochs", "steps", "train_seconds", "train_images_per_sec", "params",
                          "tokens", "seconds_per_step", "peak_rss_mb"})
      if (sum.contains(k)) row[k] = sum[k];
    for (const auto& m : sweep.metrics)
      if (sum.contains(m) && !row.contains(m)) row[m] = sum[m];
    if (sum.contains("test_by_length"))
      for (const auto& [len, ms] : sum["test_by_length"].items())
        for (const auto& [m, v] : ms.items()) row[m + "@" + len] = v;
    add_rank(row, r);
    rows.push_back(row);
  }
  return rows;
}

namespace {

std::string csv_field(const json& v) {
  std::string s = v.is_null() ? "" : v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Accuracies print as percentages, seconds and rates as plain numbers, losses with 4 digits.
bool is_accuracy(const std::string& m) { return m.find("accuracy") != std::string::npos; }
std::string format_stat(const std::string& m, const std::vector<double>& xs) {
  if (xs.empty()) return "–";
  const auto [mean, sd] = mean_std(xs);
  const double scale = is_accuracy(m) ? 100.0 : 1.0;
  const bool whole = m == "params" || m == "tokens" || m == "epochs" || m == "steps" || m == "train_seconds" ||
                     m.find("per_sec") != std::string::npos || m.find("rss") != std::string::npos;
  const char* f = is_accuracy(m) ? "%.2f" : whole ? "%.0f" : "%.4f";
  std::string s = fmt(f, mean * scale);
  if (xs.size() > 1) s += " ± " + fmt(f, sd * scale);
  return s;
}

// "best_test_accuracy" -> "best accuracy (%)": every column is a test metric unless it says
// otherwise, so "test_" is dropped, and underscores read as spaces.
std::string column_title(const std::string& m) {
  std::string t = m;
  for (size_t p; (p = t.find("test_")) != std::string::npos;) t.erase(p, 5);
  std::replace(t.begin(), t.end(), '_', ' ');
  if (is_accuracy(m)) t += " (%)";
  return t;
}

}  // namespace

std::string results_markdown(const Sweep& sweep, const json& rows) {
  // Metric columns: the sweep's metrics, then the per-length ones ("accuracy@64", ...) in the
  // order they first appear.
  std::vector<std::string> metrics = sweep.metrics;
  for (const auto& row : rows)
    for (const auto& [k, v] : row.items())
      if (k.find('@') != std::string::npos && std::find(metrics.begin(), metrics.end(), k) == metrics.end())
        metrics.push_back(k);
  // Cells in run order.
  std::vector<std::string> cells;
  std::map<std::string, std::vector<const json*>> by_cell;
  std::map<std::string, const SweepRun*> first;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string c = sweep.runs[i].cell;
    if (!by_cell.count(c)) {
      cells.push_back(c);
      first[c] = &sweep.runs[i];
    }
    by_cell[c].push_back(&rows[i]);
  }
  std::string md = "|";
  if (sweep.has_variants) md += " variant |";
  for (const auto& k : sweep.keys) add_cell(md, k);
  md += " seeds |";
  for (const auto& m : metrics) add_cell(md, column_title(m));
  md += "\n|";
  const size_t ncols = (sweep.has_variants ? 1 : 0) + sweep.keys.size() + 1 + metrics.size();
  for (size_t i = 0; i < ncols; ++i) md += i < ncols - metrics.size() ? " --- |" : " ---: |";
  md += "\n";
  for (const auto& c : cells) {
    const SweepRun& r = *first[c];
    md += "|";
    if (sweep.has_variants) add_cell(md, r.variant);
    for (const auto& [k, v] : r.values) add_cell(md, value_text(v));
    int done = 0;
    for (const json* row : by_cell[c]) done += (*row)["status"] == "finished";
    add_cell(md, std::to_string(done) +
                     (done == static_cast<int>(by_cell[c].size()) ? "" : "/" + std::to_string(by_cell[c].size())));
    for (const auto& m : metrics) {
      std::vector<double> xs;
      for (const json* row : by_cell[c])
        if ((*row)["status"] == "finished" && row->contains(m) && std::isfinite(number_or_nan((*row)[m])))
          xs.push_back((*row)[m].get<double>());
      add_cell(md, format_stat(m, xs));
    }
    md += "\n";
  }
  return md;
}

void write_results(const Sweep& sweep, const json& rows) {
  fs::create_directories(sweep.out);
  write_file_atomic((fs::path(sweep.out) / "results.json").string(), rows.dump(2) + "\n");
  std::vector<std::string> cols;
  for (const auto& row : rows)
    for (const auto& [k, v] : row.items())
      if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  std::string csv;
  for (size_t i = 0; i < cols.size(); ++i) csv.append(i ? "," : "").append(csv_field(cols[i]));
  csv += "\n";
  for (const auto& row : rows) {
    for (size_t i = 0; i < cols.size(); ++i)
      csv.append(i ? "," : "").append(row.contains(cols[i]) ? csv_field(row[cols[i]]) : "");
    csv += "\n";
  }
  write_file_atomic((fs::path(sweep.out) / "results.csv").string(), csv);
  write_file_atomic((fs::path(sweep.out) / "results.md").string(), results_document(sweep, rows, sweep_title(sweep)));
}

std::string sweep_title(const Sweep& sweep) {
  return sweep.spec.value("name", fs::path(sweep.file).stem().string());
}

std::string results_document(const Sweep& sweep, const json& rows, const std::string& title) {
  std::string md = "# " + title + "\n\n";
  if (sweep.spec.contains("description")) md += sweep.spec["description"].get<std::string>() + "\n\n";
  md += "Base config `" + sweep.base + "`; mean ± std over seeds (sample std); accuracies in %.\n\n";
  return md + results_markdown(sweep, rows);
}

}  // namespace softlab
