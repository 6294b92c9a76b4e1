#pragma once
// Umbrella header: everything an embedding program needs.
#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"
#include "softlab/random.hpp"
#include "softlab/tensor.hpp"
#include "softlab/version.hpp"
