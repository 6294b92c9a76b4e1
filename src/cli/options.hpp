#pragma once
// cxxopts for every verb. Its vector options split each value at commas by default, which
// would cut `--set data.eval_lengths=[64,128]` in two; a repeatable option is the only vector
// the CLI has, so values split at a control character nobody types (ASCII unit separator).
// Every file of the CLI includes this header instead of <cxxopts.hpp>, so all agree.
#define CXXOPTS_VECTOR_DELIMITER '\x1f'
#include <cxxopts.hpp>
