// load_plugin: dlopen, check the interface version, run the registration function.
#include "softlab/plugin.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>

#include "softlab/error.hpp"

namespace softlab {

namespace {
std::vector<std::string>& loaded() {
  static std::vector<std::string> paths;
  return paths;
}
}  // namespace

const std::vector<std::string>& loaded_plugins() { return loaded(); }

void load_plugin(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  SOFTLAB_CHECK(fs::is_regular_file(path, ec), "--plugin ", path, ": no such file");
  const std::string abs = fs::canonical(path, ec).string();
  if (std::find(loaded().begin(), loaded().end(), abs) != loaded().end()) return;
  // RTLD_NOW: an undefined symbol (a plugin built against another softlab) fails here, with
  // the loader's message, instead of at the first call. RTLD_LOCAL: two plugins' own
  // helper symbols cannot collide.
  void* handle = dlopen(abs.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    throw Error(detail::cat("--plugin ", path, ": cannot load: ", why ? why : "unknown dlopen error"));
  }
  using InterfaceFn = int (*)();
  using RegisterFn = void (*)();
  auto interface = reinterpret_cast<InterfaceFn>(dlsym(handle, "softlab_plugin_interface"));
  auto reg = reinterpret_cast<RegisterFn>(dlsym(handle, "softlab_plugin_register"));
  if (!interface || !reg) {
    dlclose(handle);
    throw Error(detail::cat("--plugin ", path,
                            ": not a softlab plugin (it defines no SOFTLAB_PLUGIN() registration function)"));
  }
  if (interface() != kPluginInterface) {
    const int got = interface();
    dlclose(handle);
    throw Error(detail::cat("--plugin ", path, ": built for plugin interface ", got, ", this softlab has ",
                            kPluginInterface, "; rebuild the plugin against this softlab"));
  }
  // The library stays loaded for the life of the process: the registry now holds
  // factories whose code lives in it. A registration that throws (a taken name) leaves the
  // entries it added before the failure; the command exits on the error anyway.
  try {
    reg();
  } catch (const Error& e) {
    throw Error(detail::cat("--plugin ", path, ": ", e.what()));
  }
  loaded().push_back(abs);
}

}  // namespace softlab
