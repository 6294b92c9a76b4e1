#pragma once
// The registry entries of this project's two attention modules.
#include <softlab/attention.hpp>

softlab::AttentionEntry taylor_attention_entry();       // a row map in softlab's fused kernel
softlab::AttentionEntry relu_linear_attention_entry();  // composed from autograd ops
