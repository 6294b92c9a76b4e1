// Parameter groups (train.optimizer.groups): which group each parameter falls in, what that
// means for its learning rate and weight decay, and the listing `softlab validate` prints.
#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>

#include "softlab/error.hpp"
#include "softlab/optim.hpp"

namespace softlab {

namespace {

// `pattern` against the whole of `text`: `*` any run of characters, `?` one. On a mismatch
// after a `*`, the star takes one more character and the walk resumes there, so the cost
// stays at most length x length however many stars the pattern holds (no backtracking tree).
bool glob(std::string_view pattern, std::string_view text) {
  size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string group_path(size_t g) { return detail::cat("train.optimizer.groups[", g, "]"); }

double group_lr_scale(const OptimizerConfig& cfg, const ParamGroup& g) {
  if (g.lr_scale) return *g.lr_scale;
  if (g.lr) return *g.lr / cfg.lr;
  return 1.0;
}

// Up to `n` names of the model's parameters most like `pattern`, for the message of a pattern
// that selects nothing: those sharing the longest start with its text before the first
// wildcard (all of them when none shares anything), in the model's order.
std::string names_like(const std::string& pattern, const std::vector<nn::Parameter>& params, size_t n) {
  const std::string_view literal = std::string_view(pattern).substr(0, pattern.find_first_of("*?"));
  auto shared = [&](const std::string& name) {
    size_t k = 0;
    while (k < literal.size() && k < name.size() && literal[k] == name[k]) ++k;
    return k;
  };
  size_t best = 0;
  for (const auto& p : params) best = std::max(best, shared(p.name));
  std::string out;
  size_t shown = 0, like = 0;
  for (const auto& p : params) {
    if (shared(p.name) < best) continue;
    ++like;
    if (shown < n) out += (shown++ ? ", " : "") + p.name;
  }
  if (like > shown) out += detail::cat(", ... (", like - shown, " more)");
  return out;
}

// The parameters' names, compacted when there are many: names that differ only in numeric
// components (block indices) are shown once with '*' there and their count,
// "blocks.*.norm1.weight (x4)", in the order of their first name.
std::string name_listing(const std::vector<std::string>& names) {
  std::vector<std::string> items;
  if (names.size() <= 8) {
    items = names;
  } else {
    std::vector<std::string> shapes;
    std::map<std::string, std::vector<std::string>> named;  // shape -> its names
    for (const auto& name : names) {
      std::string shape;
      size_t start = 0;
      while (start <= name.size()) {
        const size_t dot = std::min(name.find('.', start), name.size());
        const std::string part = name.substr(start, dot - start);
        const bool number = !part.empty() && std::all_of(part.begin(), part.end(), [](unsigned char c) {
          return std::isdigit(c) != 0;
        });
        shape += (start ? "." : "") + (number ? std::string("*") : part);
        start = dot + 1;
      }
      auto& same = named[shape];
      if (same.empty()) shapes.push_back(shape);
      same.push_back(name);
    }
    for (const auto& s : shapes) {
      const auto& same = named[s];
      items.push_back(same.size() > 1 ? detail::cat(s, " (x", same.size(), ")") : same.front());
    }
  }
  // Lines of about 100 characters under a 6-space indent.
  std::string out, line;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string item = items[i] + (i + 1 < items.size() ? "," : "");
    if (!line.empty() && line.size() + 1 + item.size() > 100) {
      out += "      " + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + item;
  }
  if (!line.empty()) out += "      " + line + "\n";
  return out;
}

}  // namespace

bool group_pattern_matches(const std::string& pattern, const std::string& name) {
  if (glob(pattern, name)) return true;
  // A module holding the parameter: the name up to one of its dots.
  for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
    if (glob(pattern, std::string_view(name).substr(0, dot))) return true;
  return false;
}

std::vector<ParamSettings> param_settings(const OptimizerConfig& cfg, const std::vector<nn::Parameter>& params) {
  const size_t groups = cfg.groups.size();
  std::vector<ParamSettings> out(params.size());
  // Per group: the parameters its pattern selects and those it gets (the first match wins).
  std::vector<size_t> selects(groups, 0), gets(groups, 0);
  for (size_t i = 0; i < params.size(); ++i) {
    ParamSettings& s = out[i];
    for (size_t g = 0; g < groups; ++g) {
      if (!group_pattern_matches(cfg.groups[g].match, params[i].name)) continue;
      ++selects[g];
      if (s.group < 0) {
        s.group = static_cast<int>(g);
        ++gets[g];
      }
    }
    std::optional<double> weight_decay;
    if (s.group >= 0) {
      const ParamGroup& g = cfg.groups[static_cast<size_t>(s.group)];
      s.lr_scale = group_lr_scale(cfg, g);
      weight_decay = g.weight_decay;
    }
    // Biases, norm gains, embeddings and temperatures stay undecayed in every group: which
    // parameters may decay is the model's decision (Parameter::decay), the group sets how much.
    s.weight_decay = params[i].decay ? weight_decay.value_or(cfg.weight_decay) : 0.0;
  }
  for (size_t g = 0; g < groups; ++g) {
    const std::string& pattern = cfg.groups[g].match;
    SOFTLAB_CHECK(selects[g] > 0, group_path(g), ".match: '", pattern, "' selects no parameter of this model; its ",
                  params.size(), " parameters are named like ", names_like(pattern, params, 6),
                  " (softlab validate and softlab info --params CONFIG list them)");
    if (gets[g] > 0) continue;
    std::vector<bool> took(groups, false);  // the groups that took this one's parameters
    for (size_t i = 0; i < params.size(); ++i)
      if (group_pattern_matches(pattern, params[i].name)) took[static_cast<size_t>(out[i].group)] = true;
    std::string earlier;
    for (size_t e = 0; e < g; ++e)
      if (took[e]) earlier += (earlier.empty() ? "" : ", ") + group_path(e);
    const bool one = selects[g] == 1;
    throw Error(detail::cat(group_path(g), ".match: '", pattern, "' selects ", selects[g],
                            one ? " parameter" : " parameters", ", but ", earlier, " took ", one ? "it" : "them all",
                            " first (a parameter takes the first group that matches it); put the narrower group ",
                            "first"));
  }
  return out;
}

std::string param_groups_summary(const OptimizerConfig& cfg, const std::vector<nn::Parameter>& params) {
  if (cfg.groups.empty()) return "parameter groups: none (train.optimizer.groups is empty)\n";
  const std::vector<ParamSettings> settings = param_settings(cfg, params);
  std::ostringstream o;
  o << "parameter groups (train.optimizer.groups; a parameter takes the first group that matches it):\n";
  // One block per group, then one for the parameters left to the defaults (group -1).
  for (size_t g = 0; g <= cfg.groups.size(); ++g) {
    const bool is_default = g == cfg.groups.size();
    const int group = is_default ? -1 : static_cast<int>(g);
    std::vector<std::string> names;
    size_t decaying = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      if (settings[i].group != group) continue;
      names.push_back(params[i].name);
      decaying += params[i].decay ? 1 : 0;
    }
    o << (is_default ? std::string("  default") : detail::cat("  [", g, "] \"", cfg.groups[g].match, "\""))
      << ": " << names.size() << (names.size() == 1 ? " parameter" : " parameters") << "; lr ";
    double weight_decay = cfg.weight_decay;
    if (is_default) {
      o << cfg.lr;
    } else {
      const ParamGroup& pg = cfg.groups[g];
      const double scale = group_lr_scale(cfg, pg);
      o << cfg.lr * scale;
      o << (pg.lr || pg.lr_scale ? detail::cat(" (lr_scale ", scale, ")") : std::string(" (the default)"));
      weight_decay = pg.weight_decay.value_or(cfg.weight_decay);
    }
    o << ", weight_decay " << weight_decay;
    if (decaying == 0 && !names.empty())
      o << " (none of them decays)";
    else if (decaying < names.size())
      o << " on " << decaying << " of them (the others never decay)";
    o << (names.empty() ? "\n" : ":\n");
    o << name_listing(names);
  }
  return o.str();
}

}  // namespace softlab
