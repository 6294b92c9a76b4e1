#pragma once
// A registry of named, schema-carrying factories (attention modules, heads). The list of
// entries is one explicit table per kind (src/attention/registry.cpp, src/heads/registry.cpp),
// so nothing depends on static-initialisation order or on the linker keeping an object file.
#include <functional>
#include <string>
#include <vector>

#include "softlab/error.hpp"
#include "softlab/schema.hpp"

namespace softlab {

template <class Factory>
struct RegistryEntry {
  std::string name;
  std::string help;  // one line: what it is and where it comes from
  Schema schema;
  Factory factory;
  // Capabilities the rest of softlab asks about by name, e.g. "soft_targets" (a head that
  // trains on class distributions: mixup, CutMix). Absent means unsupported.
  std::vector<std::string> traits = {};
  bool has(const std::string& trait) const {
    for (const auto& t : traits)
      if (t == trait) return true;
    return false;
  }
};

template <class Factory>
class Registry {
 public:
  using Entry = RegistryEntry<Factory>;
  explicit Registry(std::string kind, std::vector<Entry> entries) : kind_(std::move(kind)), entries_(std::move(entries)) {}

  const Entry* find(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }
  // Throws naming `path`, the valid names and the closest one.
  const Entry& get(const std::string& name, const std::string& path) const {
    if (const Entry* e = find(name)) return *e;
    std::string list;
    for (const auto& e : entries_) list += (list.empty() ? "" : ", ") + e.name;
    const std::string near = closest_key(name, names());
    throw Error(detail::cat(path, ": unknown ", kind_, " '", name, "'",
                            near.empty() ? std::string() : detail::cat(" (did you mean '", near, "'?)"),
                            "; valid: ", list));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& e : entries_) n.push_back(e.name);
    return n;
  }
  const std::vector<Entry>& entries() const { return entries_; }
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::vector<Entry> entries_;
};

}  // namespace softlab
