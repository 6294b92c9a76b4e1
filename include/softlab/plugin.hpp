#pragma once
// Plugins: shared libraries that add attention modules and heads to softlab at run time
// (`softlab train --plugin libmine.so`, or load_plugin() from an embedding program).
//
// A plugin defines its registration function with SOFTLAB_PLUGIN:
//
//   #include "softlab/plugin.hpp"
//   SOFTLAB_PLUGIN() {
//     softlab::register_attention(my_attention_entry());
//   }
//
// and is linked against the target softlab::plugin (headers only): the softlab symbols it
// calls come from the process that loads it, the softlab command or a program linked with
// softlab, so there is one registry. docs/extending.md walks through a whole plugin.
#include <string>
#include <vector>

namespace softlab {

// The plugin interface's version. A plugin records the value it was compiled with, and
// load_plugin refuses one compiled against a different interface (the layouts of the
// public types it shares with the host may differ). Raised whenever a public header
// changes a type's layout or a function's signature.
inline constexpr int kPluginInterface = 1;

// Loads the shared library at `path` and runs its registration function. Throws an Error
// (exit 2 from the command line) naming the file when it cannot be opened, is not a
// softlab plugin, was built for another plugin interface, or registers a name that exists.
// Loading the same file twice is a no-op.
void load_plugin(const std::string& path);

// The plugins loaded so far, as absolute paths in load order (for child processes and logs).
const std::vector<std::string>& loaded_plugins();

}  // namespace softlab

#define SOFTLAB_PLUGIN()                                                                                    \
  extern "C" __attribute__((visibility("default"))) int softlab_plugin_interface() {                       \
    return ::softlab::kPluginInterface;                                                                     \
  }                                                                                                         \
  extern "C" __attribute__((visibility("default"))) void softlab_plugin_register()
