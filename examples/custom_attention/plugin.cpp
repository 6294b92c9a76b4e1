// The plugin's registration function: softlab calls it once when it loads the library
// (softlab train CONFIG --plugin libcustom_attention.so).
#include <softlab/plugin.hpp>

#include "modules.hpp"

SOFTLAB_PLUGIN() {
  softlab::register_attention(taylor_attention_entry());
  softlab::register_attention(relu_linear_attention_entry());
}
