#pragma once
// nn::Module is core machinery that attention modules, heads and models all build on; it
// lives in softlab/module.hpp. This header keeps the older include path working.
#include "softlab/module.hpp"
