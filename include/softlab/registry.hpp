#pragma once
// A registry of named, schema-carrying entries (attention modules, heads). The built-in
// entries are one explicit table per kind (src/attention/registry.cpp,
// src/heads/registry.cpp), so nothing depends on static-initialisation order or on the
// linker keeping an object file. User code and plugins add entries with
// register_attention() / register_head() before a config is read; an entry is never
// removed or replaced, so a pointer returned by find() stays valid.
//
// Entry is a struct with at least `name`, `help`, `schema`, `factory` and `builtin`
// (attention.hpp's AttentionEntry, head.hpp's HeadEntry).
#include <cctype>
#include <deque>
#include <string>

#include "softlab/error.hpp"
#include "softlab/schema.hpp"

namespace softlab {

template <class Entry>
class Registry {
 public:
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

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
                            "; valid: ", list, " (a module from a plugin needs --plugin LIB)"));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& e : entries_) n.push_back(e.name);
    return n;
  }
  const std::deque<Entry>& entries() const { return entries_; }
  const std::string& kind() const { return kind_; }

  // Adds an entry (`builtin` marks softlab's own table). A name is lower-case letters, digits and '_' (it is a config value and a
  // file-name part), must be new, and the entry needs a factory; the schema must not use
  // "type" (it names the module). The kind's own checks (check_entry) run before this.
  const Entry& add(Entry e, bool builtin = false) {
    e.builtin = builtin;
    const std::string& n = e.name;
    bool ok = !n.empty() && std::islower(static_cast<unsigned char>(n[0]));
    for (char c : n) ok = ok && (std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_');
    if (!ok)
      throw Error(detail::cat("registering ", kind_, " '", n,
                              "': a name is lower-case letters, digits and '_', starting with a letter"));
    if (find(n))
      throw Error(detail::cat("registering ", kind_, " '", n, "': the name is taken (",
                              find(n)->builtin ? "a built-in " : "registered earlier as a ", kind_,
                              "); pick another name"));
    if (!e.factory) throw Error(detail::cat("registering ", kind_, " '", n, "': the entry has no factory"));
    for (const auto& p : e.schema)
      if (p.name == "type")
        throw Error(detail::cat("registering ", kind_, " '", n, "': parameter 'type' is reserved (it names the module)"));
    entries_.push_back(std::move(e));
    return entries_.back();
  }

 private:
  std::string kind_;
  std::deque<Entry> entries_;  // a deque: add() never moves the entries find() handed out
};

}  // namespace softlab
