#pragma once
#include <string>

namespace softlab {
// softlab's version, and the versions and flags it was built with (for `softlab info`
// and run directories).
std::string version();
std::string build_info();
}  // namespace softlab
